"""Agent profiles, roles, the prompt, and what agents' output says (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import agentoutput, agents, config
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.model import TaskDef, TaskKey, TrackSettings

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def settings(**raw: Any) -> Settings:
    return Settings.model_validate(raw)


def task(agent: str | None = None, **fields: Any) -> TaskDef:
    return TaskDef(TaskKey("t", "T1"), 0, 2, agent=agent, description="Do the thing", **fields)


def argv(name: str, **raw: Any) -> tuple[str, ...]:
    found = agents.profile(name, settings(**raw))
    assert found is not None
    return found.command("PROMPT")


def test_built_in_profiles_run_the_headless_clis() -> None:
    assert argv("claude") == (
        "claude", "-p", "PROMPT", "--output-format", "stream-json", "--verbose",
        "--permission-mode", "acceptEdits",
    )  # fmt: skip
    assert argv("codex") == ("codex", "exec", "--sandbox", "workspace-write", "PROMPT")
    assert argv("aider") == ("aider", "--message", "PROMPT", "--yes-always", "--no-auto-commits")
    assert argv("gemini") == ("gemini", "-p", "PROMPT", "--approval-mode", "auto_edit")
    claude = agents.profile("claude", settings())
    assert claude is not None
    assert claude.output == "claude-json"
    codex = agents.profile("codex", settings())
    assert codex is not None
    assert codex.output == "text"


def test_settings_change_a_built_in_profile_and_skipping_permissions_is_explicit() -> None:
    assert argv("claude", agents={"claude": {"model": "opus", "permission_mode": "plan"}}) == (
        "claude", "-p", "PROMPT", "--output-format", "stream-json", "--verbose",
        "--model", "opus", "--permission-mode", "plan",
    )  # fmt: skip
    skipping = argv("claude", agents={"claude": {"skip_permissions": True, "args": ["--x"]}})
    assert "--dangerously-skip-permissions" in skipping
    assert "--permission-mode" not in skipping
    assert skipping[-1] == "--x"
    assert argv("codex", agents={"codex": {"skip_permissions": True, "model": "o3"}}) == (
        "codex", "exec", "--model", "o3", "--dangerously-bypass-approvals-and-sandbox", "PROMPT",
    )  # fmt: skip
    assert argv("gemini", agents={"gemini": {"skip_permissions": True}})[-2:] == (
        "--approval-mode",
        "yolo",
    )
    # A new profile of a built-in kind, a binary elsewhere, the prompt on stdin.
    piped = agents.profile(
        "night",
        settings(
            agents={"night": {"kind": "claude", "binary": "/opt/claude", "prompt_via": "stdin"}}
        ),
    )
    assert piped is not None
    assert piped.command("PROMPT") == (
        "/opt/claude", "-p", "--output-format", "stream-json", "--verbose",
        "--permission-mode", "acceptEdits",
    )  # fmt: skip
    # A full argv replaces the built-in command but keeps reading Claude's output.
    custom = agents.profile(
        "claude", settings(agents={"claude": {"argv": ["claude", "-p", "{prompt}"]}})
    )
    assert custom is not None
    assert (custom.command("P"), custom.output) == (("claude", "-p", "P"), "claude-json")
    generic = agents.profile("mine", settings(agents={"mine": {"argv": ["my-agent", "{prompt}"]}}))
    assert generic is not None
    assert (generic.kind, generic.output) == ("generic", "text")


def test_profile_mistakes_are_config_errors(tmp_path: Path) -> None:
    def load(text: str) -> str:
        path = tmp_path / "o.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            config.load(config_file=str(path), env={}, cwd=tmp_path)
        return str(caught.value)

    assert "agents.mine: no command: give argv" in load('[agents.mine]\nmodel = "x"\n')
    assert "set skip_permissions = true to mean it" in load(
        '[agents.claude]\npermission_mode = "bypassPermissions"\n'
    )
    assert "guardrails.patterns[0]: not a regular expression" in load(
        '[guardrails]\npatterns = ["(oops"]\n'
    )
    assert "roles.fix.agent: unknown agent profile 'nobody'" in load(
        '[roles.fix]\nagent = "nobody"\n'
    )
    assert "did you mean 'prompt'?" in load('[roles.fix]\npromt = "x"\n')


def test_roles_of_old_queue_files_map_to_the_default_profile() -> None:
    chosen = agents.choose(
        task("FeatureBuilder"), TrackSettings(), settings(defaults={"agent": "claude"})
    )
    assert chosen.profile is not None
    assert (chosen.profile.name, chosen.role) == ("claude", "featurebuilder")
    assert "feature builder" in chosen.role_text
    assert chosen.describe() == (
        "agent profile 'claude' (claude) for role 'FeatureBuilder' (from the task)"
    )
    for name in ("bugfix", "BugFix", "TestWriter", "testwriter", "codequality", "code_quality"):
        found = agents.choose(task(name), TrackSettings(), settings(defaults={"agent": "aider"}))
        assert found.profile is not None
        assert found.profile.name == "aider", name
        assert found.role_text, name
    manual = agents.choose(task("manual"), TrackSettings(), settings())
    assert manual.manual
    # The mapping is configurable: a role's own profile and paragraph, and new roles.
    custom = settings(
        defaults={"agent": "claude"},
        roles={"BugFix": {"agent": "codex", "prompt": "Fix it."}, "designer": {"prompt": "Draw."}},
        agents={"codex": {"model": "o3"}},
    )
    bug = agents.choose(task("bugfix"), TrackSettings(), custom)
    assert bug.profile is not None
    assert (bug.profile.name, bug.role_text) == ("codex", "Fix it.")
    designer = agents.choose(task("Designer"), TrackSettings(), custom)
    assert designer.profile is not None
    assert (designer.profile.name, designer.role_text) == ("claude", "Draw.")
    # A profile's own name wins over a role; the track's agent comes before the default.
    track = agents.choose(
        task(), TrackSettings(agent="gemini"), settings(defaults={"agent": "claude"})
    )
    assert track.profile is not None
    assert (track.profile.name, track.source) == ("gemini", "track")


def test_the_prompt_has_the_role_and_the_working_tree() -> None:
    chosen = agents.choose(task("bugfix"), TrackSettings(), settings(defaults={"agent": "claude"}))
    text = agents.prompt_for(
        task("bugfix", completion_promise="FIXED"),
        chosen,
        settings(),
        attempt=2,
        max_iterations=3,
        failure="verify 1/1 `pytest` exited with status 1\nAssertionError\n",
        workspace=agents.workspace_note("orchestratord/t", True),
    )
    assert text.startswith("You are working on task T1 of track t.\n\nYour role: bug fixer.")
    assert "\n\nDo the thing\n" in text
    assert "<promise>FIXED</promise>" in text
    assert "on branch orchestratord/t. Do not commit" in text
    assert "This is attempt 2 of 3." in text
    assert "AssertionError" in text
    plain = agents.prompt_for(task(), agents.choose(task("claude"), TrackSettings(), settings()),
                              settings(), attempt=1, max_iterations=3)  # fmt: skip
    assert "role" not in plain
    assert "git" not in plain


def test_the_prompt_says_how_the_previous_attempt_failed_not_always_verification() -> None:
    """A run that timed out, or printed no promise, was never verified: the prompt gives the
    reason the failure output begins with, and does not say verification failed."""
    chosen = agents.choose(task("claude"), TrackSettings(), settings())
    text = agents.prompt_for(
        task(),
        chosen,
        settings(),
        attempt=2,
        max_iterations=3,
        failure="the agent timed out after 600 s\nthinking...\n",
    )
    assert "The previous attempt failed:\n----- previous failure -----\n" in text
    assert "the agent timed out after 600 s" in text
    assert "verification" not in text


# ------------------------------------------------------------------ structured output


def stream(*messages: dict[str, Any]) -> bytes:
    import json

    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def test_claude_stream_json_gives_the_final_text_tokens_and_cost() -> None:
    output = stream(
        {"type": "system", "subtype": "init"},
        {"type": "user", "message": {"content": [{"type": "tool_result",
         "content": "<promise>FROM_A_FILE</promise>"}]}},
        {"type": "result", "subtype": "success", "is_error": False,
         "result": "All done.\n<promise>DONE</promise>", "total_cost_usd": 0.1234,
         "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
                   "cache_read_input_tokens": 100, "output_tokens": 42}},
    )  # fmt: skip
    report = agentoutput.read("claude-json", b"stderr line\n" + output)
    assert report.text == b"All done.\n<promise>DONE</promise>"
    assert report.usage == agentoutput.Usage(tokens_in=115, tokens_out=42, cost_usd=0.1234)
    assert report.usage.tokens == 157
    assert report.usage.describe() == "157 tokens (115 in, 42 out), $0.1234"
    assert report.other == b"stderr line"
    assert not report.is_error
    # --output-format json: one object.
    single = agentoutput.read(
        "claude-json", b'{"type":"result","result":"ok","total_cost_usd":1,"usage":{}}'
    )
    assert (single.text, single.usage) == (b"ok", agentoutput.Usage(0, 0, 1.0))
    # Cut short before its result: the assistant messages are added up, once per message.
    cut = agentoutput.read(
        "claude-json",
        stream(
            {"type": "assistant", "message": {"id": "a",
             "content": [{"type": "text", "text": "hm"}],
             "usage": {"input_tokens": 3, "output_tokens": 4}}},
            {"type": "assistant", "message": {"id": "a", "content": [],
             "usage": {"input_tokens": 3, "output_tokens": 4}}},
            {"type": "assistant", "message": {"id": "b", "content": [],
             "usage": {"input_tokens": 1, "output_tokens": 1}}},
        ),
    )  # fmt: skip
    assert (cut.text, cut.usage, cut.is_error) == (b"hm", agentoutput.Usage(4, 5, None), True)
    # Not JSON at all (an old CLI): taken as text.
    assert agentoutput.read("claude-json", b"plain <promise>X</promise>").text.endswith(
        b"</promise>"
    )


def test_usage_limit_reports_are_found_only_where_the_agent_speaks() -> None:
    patterns = agentoutput.compiled(agentoutput.LIMIT_PATTERNS)
    limited = agentoutput.read(
        "claude-json",
        stream(
            {
                "type": "result",
                "is_error": True,
                "result": "Claude AI usage limit reached|1762952400",
            }
        ),
    )
    assert agentoutput.limit_message(limited, b"", patterns) == (
        "Claude AI usage limit reached|1762952400"
    )
    quoted = agentoutput.read(
        "claude-json",
        stream(
            {"type": "user", "message": {"content": "usage limit reached in the code under test"}},
            {"type": "result", "is_error": True, "result": "tests failed"},
        ),
    )
    assert agentoutput.limit_message(quoted, b"", patterns) is None
    text = (
        b"working...\n\xe2\x96\xa0 You've hit your usage limit. Upgrade to Pro or try again"
        b" in 2 hours 5 minutes.\n"
    )
    found = agentoutput.limit_message(agentoutput.read("text", text), text, patterns)
    assert found is not None
    assert found.startswith("■ You've hit your usage limit.")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Claude AI usage limit reached|1773151200", datetime(2026, 3, 10, 14, 0, tzinfo=UTC)),
        (
            "Your limit will reset at 9am (America/Chicago).",
            datetime(2026, 3, 10, 14, 0, tzinfo=UTC),
        ),
        (
            "You've hit your limit · resets 4:50am (Europe/Rome)",
            datetime(2026, 3, 11, 3, 50, tzinfo=UTC),
        ),
        ("5-hour limit reached ∙ resets 3pm", datetime(2026, 3, 10, 15, 0, tzinfo=UTC)),
        ("Limits will reset at 11:30 AM.", datetime(2026, 3, 11, 11, 30, tzinfo=UTC)),
        ("try again in 2 days 3 hours 5\nminutes.", NOW + timedelta(days=2, hours=3, minutes=5)),
        ("Quota exceeded. Please retry in 23.5s", NOW + timedelta(seconds=23.5)),
        ("or try again at Jul 5th, 2026 8:19 PM.", datetime(2026, 7, 5, 20, 19, tzinfo=UTC)),
        ('{"type":"usage_limit_reached","resets_in_seconds":600}', NOW + timedelta(minutes=10)),
        ("usage limit reached", None),
        ("usage limit reached, resets 5", None),
    ],
)
def test_reset_times_in_the_shapes_agents_write_them(
    message: str, expected: datetime | None
) -> None:
    assert agentoutput.reset_time(message, NOW, UTC) == expected


def test_patterns_compile_once() -> None:
    first = agentoutput.compiled(("a+",))
    assert first is agentoutput.compiled(("a+",))
    assert isinstance(first[0], re.Pattern)
