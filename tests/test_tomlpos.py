"""Line numbers of TOML keys, for messages that say FILE:LINE."""

from __future__ import annotations

import tomllib

from orchestrator.tomlpos import key_lines, line_of, split_key

TEXT = """\
# a comment with key = value in it
tracks = "../tracks"   # trailing comment
verify = [
  ["ruff", "check"],
  "pytest -q",
  "x = y",
]
banner = \"\"\"
[not.a.table]
inside = 1
\"\"\"

[defaults]
timeout = 60
"dotted.key" = 1
nested.deep = 2

[agents.claude]
argv = ["claude", "-p", "{prompt}"]
env = { A = "1" }

[agents."my agent"]
timeout = 5
"""


def test_every_key_and_table_has_its_line() -> None:
    tomllib.loads(TEXT)  # the fixture is valid TOML
    lines = key_lines(TEXT)
    assert lines[("tracks",)] == 2
    assert lines[("verify",)] == 3
    assert lines[("banner",)] == 8
    assert lines[("defaults",)] == 13
    assert lines[("defaults", "timeout")] == 14
    assert lines[("defaults", "dotted.key")] == 15
    assert lines[("defaults", "nested", "deep")] == 16
    assert lines[("agents", "claude")] == 18
    assert lines[("agents", "claude", "argv")] == 19
    assert lines[("agents", "claude", "env")] == 20
    assert lines[("agents", "my agent", "timeout")] == 23
    # Nothing inside arrays or multi-line strings is taken for a key or a table.
    assert ("not", "a", "table") not in lines
    assert ("inside",) not in lines
    assert not any(key[0].startswith(("ruff", "x")) for key in lines)


def test_nearest_enclosing_line_and_key_splitting() -> None:
    lines = key_lines(TEXT)
    assert line_of(lines, ("agents", "claude", "argv", "0")) == 19
    assert line_of(lines, ("agents", "claude", "missing")) == 18
    assert line_of(lines, ("nowhere",)) is None
    assert split_key('a."b.c".d') == ("a", "b.c", "d")
    assert split_key("a . 'lit\\eral'") == ("a", "lit\\eral")
    assert split_key('"\\u00e9t\\u00e9"') == ("été",)
