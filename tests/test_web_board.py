"""The live web board in a real headless browser (Debian's chromium), against a real daemon."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from orchestrator.control import api

from .conftest import WriteTrack
from .process_harness import daemon, wait_for

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium chromium-driver; .ci/run installs it)",
)


def cell(track: str, column: str, ref: str) -> str:
    return f'.cell[data-track="{track}"][data-column="{column}"] .card[data-ref="{ref}"]'


def test_cards_move_as_tasks_change_and_buttons_use_the_token(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    from playwright.sync_api import sync_playwright

    gate = tmp_path / "gate"
    write_track(
        "t",
        [
            {
                "id": "A",
                "description": "waits for the gate",
                "command": f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done",
            },
            {"id": "B", "command": "true", "dependencies": ["A"]},
        ],
    )
    state = tmp_path / "state"
    proc = daemon(tracks_dir, state, "--http", "127.0.0.1:0")
    try:
        wait_for((state / api.INFO_NAME).exists)
        url = json.loads((state / api.INFO_NAME).read_text())["http"]
        token = (state / api.TOKEN_NAME).read_text().strip()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{url}#token={token}")
                page.wait_for_selector(cell("t", "in_progress", "t:A"), timeout=WAIT_MS)
                assert page.locator(cell("t", "pending", "t:B")).count() == 1
                # The token left the address bar for the tab's storage.
                assert "token" not in page.url

                gate.touch()  # the task completes: its card moves, pushed over SSE
                page.wait_for_selector(cell("t", "complete", "t:A"), timeout=WAIT_MS)
                page.wait_for_selector(cell("t", "complete", "t:B"), timeout=WAIT_MS)
                assert page.locator(cell("t", "in_progress", "t:A")).count() == 0
                # The feed says what happened in the daemon's own words (``text``).
                page.wait_for_selector("#feed div:has-text('track t is complete')", timeout=WAIT_MS)

                page.click('.card[data-ref="t:A"]')  # a card opens its attempts and log tail
                page.wait_for_selector("aside pre.log:has-text('--- PASS')", timeout=WAIT_MS)
                assert "started" in page.inner_text("aside pre.log")
                assert "finished" in page.inner_text("aside table")

                page.click('.lane[data-track="t"] button')  # pause the lane, with the token
                page.wait_for_selector('.lane[data-track="t"] .note.paused', timeout=WAIT_MS)
                wait_for(lambda: _paused_in_file(tracks_dir / "t.json"))
                assert errors == []
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def _paused_in_file(path: Path) -> bool:
    section = json.loads(path.read_text()).get("track")
    return isinstance(section, dict) and section.get("paused") is True
