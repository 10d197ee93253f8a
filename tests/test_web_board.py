"""The live web board in a real headless browser (Debian's chromium), against a real daemon."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.control import api

from .conftest import WriteTrack
from .process_harness import daemon, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium chromium-driver; .ci/run installs it)",
)


@contextlib.contextmanager
def browser_page() -> Iterator[Page]:
    """A page of a headless chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


@contextlib.contextmanager
def live_board(tracks_dir: Path, state: Path) -> Iterator[Page]:
    """A daemon serving the web board, and a page of it opened with the token (the page's
    script errors fail the test); the daemon stopped with SIGTERM afterwards."""
    proc = daemon(tracks_dir, state, "--http", "127.0.0.1:0")
    try:
        wait_for((state / api.INFO_NAME).exists)
        url = json.loads((state / api.INFO_NAME).read_text())["http"]
        token = (state / api.TOKEN_NAME).read_text().strip()
        with browser_page() as page:
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}#token={token}")
            yield page
            assert errors == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def cell(track: str, column: str, ref: str) -> str:
    return f'.cell[data-track="{track}"][data-column="{column}"] .card[data-ref="{ref}"]'


def test_cards_move_as_tasks_change_and_buttons_use_the_token(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
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
    with live_board(tracks_dir, state) as page:
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


def _paused_in_file(path: Path) -> bool:
    section = json.loads(path.read_text()).get("track")
    return isinstance(section, dict) and section.get("paused") is True


def test_a_reconnect_after_a_restart_brings_only_what_was_missed_with_its_own_time(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """The board's EventSource reconnects to the same address; the daemon replays after its
    ``Last-Event-ID``, not after the address's ``since``, and the feed stamps each event with
    when it happened, not with when the browser got it."""
    gate = tmp_path / "gate"
    write_track("t", [{"id": "A", "command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}])
    state = tmp_path / "state"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    proc = daemon(tracks_dir, state, "--http", address)
    try:
        wait_for((state / api.INFO_NAME).exists)
        token = (state / api.TOKEN_NAME).read_text().strip()
        with browser_page() as page:
            page.goto(f"http://{address}/#token={token}")
            page.wait_for_selector(cell("t", "in_progress", "t:A"), timeout=WAIT_MS)
            gate.touch()
            page.wait_for_selector("#feed div:has-text('track t is complete')", timeout=WAIT_MS)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            page.wait_for_selector("#link.down", timeout=WAIT_MS)
            proc = daemon(tracks_dir, state, "--http", address)
            started = "#feed div:has-text('orchestratord started')"
            page.wait_for_selector(started, timeout=WAIT_MS)
            page.wait_for_selector("#link:not(.down)", timeout=WAIT_MS)
            feed = page.inner_text("#feed")
            assert feed.count("track t is complete") == 1, feed
            logged = [
                json.loads(line) for line in (state / api.EVENTS_LOG_NAME).read_text().splitlines()
            ]
            at = [e["at"] for e in logged if e["type"] == "daemon_started"][-1]
            shown = page.get_attribute(f"{started} time", "datetime", timeout=2000)
            assert shown is not None
            gap = datetime.fromisoformat(shown) - datetime.fromisoformat(at)
            assert abs(gap) < timedelta(milliseconds=1), (shown, at)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_retried_task_s_card_shows_its_place_in_the_fresh_budget(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """After a retry order the card moved by the event stream reads "attempt 2, iteration
    1/1", as `status` says, not "attempt 2/1"."""
    armed, gate = tmp_path / "armed", tmp_path / "gate"
    loop = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    write_track("t", [{"id": "A", "command": f"test -e {armed} && {loop}", "max_iterations": 1}])
    state = tmp_path / "state"
    with live_board(tracks_dir, state) as page:
        failed = cell("t", "failed", "t:A")
        page.wait_for_selector(f"{failed} .meta:has-text('FAIL after 1/1')", timeout=WAIT_MS)
        armed.touch()
        page.click('.card[data-ref="t:A"]')
        page.click("aside button:has-text('Retry')")
        running = f"{cell('t', 'in_progress', 't:A')} .meta"
        page.wait_for_selector(running, timeout=WAIT_MS)
        assert page.inner_text(running) == "attempt 2, iteration 1/1"
        gate.touch()
        page.wait_for_selector(cell("t", "complete", "t:A"), timeout=WAIT_MS)


def test_a_lane_says_what_failed_work_holds_as_the_markdown_board_does(
    tmp_path: Path, tracks_dir: Path, write_track: WriteTrack
) -> None:
    """A task that fails while the page is open: its own lane's and a lane behind a trigger's
    pending tasks are held, and each lane says how many ("1 held by failed or blocked work"),
    as the Markdown board and `status` do; a retry that passes clears it."""
    armed, gate = tmp_path / "armed", tmp_path / "gate"
    first = f"while [ ! -e {gate} ]; do sleep 0.05; done; test -e {armed}"
    write_track(
        "a",
        [
            {"id": "A1", "command": first, "max_iterations": 1},
            {"id": "A2", "command": "true", "dependencies": ["A1"]},
        ],
    )
    write_track("b", [{"id": "B1", "command": "true"}], track={"start_after": ["a:A2"]})
    state = tmp_path / "state"
    with live_board(tracks_dir, state) as page:
        page.wait_for_selector(cell("a", "in_progress", "a:A1"), timeout=WAIT_MS)
        assert page.locator(".lane .note.held").count() == 0
        gate.touch()  # A1 fails: A2 and, behind the trigger, B1 wait on it
        for track in ("a", "b"):
            page.wait_for_selector(
                f'.lane[data-track="{track}"] .note.held:has-text('
                "'1 held by failed or blocked work')",
                timeout=WAIT_MS,
            )
        armed.touch()
        page.click('.card[data-ref="a:A1"]')
        page.click("aside button:has-text('Retry')")
        page.wait_for_selector(cell("b", "complete", "b:B1"), timeout=WAIT_MS)
        page.wait_for_selector(".lane .note.held", state="detached", timeout=WAIT_MS)
