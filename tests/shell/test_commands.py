"""Backslash commands: parsing and effects."""

from __future__ import annotations

import io

import pytest

from shell.commands import COMMANDS, Command, CommandError, help_text, lookup, parse_command, run_command
from shell.runner import Outcome, Settings, Shell

from .fakes import Factory

pytestmark = pytest.mark.timeout(120)


def make_shell(down: tuple[str, ...] = ()) -> tuple[Shell, Factory]:
    factory = Factory(down=down)
    shell = Shell("h:1", Settings(timing=False), out=io.StringIO(), err=io.StringIO(), client_factory=factory)
    return shell, factory


def run(shell: Shell, text: str) -> tuple[Outcome, str, str]:
    shell.out.seek(0), shell.out.truncate()
    shell.err.seek(0), shell.err.truncate()
    outcome = run_command(shell, text)
    return outcome, shell.out.getvalue(), shell.err.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "parsed"), [
    ("\\q", Command("q")),
    ("  \\format   csv  ", Command("format", ("csv",))),
    ("\\timing off;", Command("timing", ("off",))),
    ("\\i 'my file.sql'", Command("i", ("my file.sql",))),
    ("\\?", Command("?")),
    ("\\connect\th:1,h:2", Command("connect", ("h:1,h:2",))),
])
def test_parse(text: str, parsed: Command) -> None:
    assert parse_command(text) == parsed


@pytest.mark.parametrize("text", ["format csv", "\\", "\\;", "\\i 'open"])
def test_parse_errors(text: str) -> None:
    with pytest.raises(CommandError):
        parse_command(text)


def test_every_command_is_documented_and_found_by_each_name() -> None:
    text = help_text()
    for spec in COMMANDS:
        assert spec.usage in text
        for name in spec.names:
            assert lookup(name) is spec
    assert lookup("nosuch") is None


def test_unknown_command() -> None:
    shell, _ = make_shell()
    assert run(shell, "\\nosuch") == (Outcome.FAILED, "", "ERROR: unknown command \\nosuch; type \\? for the list\n")


def test_help_and_quit() -> None:
    shell, _ = make_shell()
    outcome, out, _ = run(shell, "\\?")
    assert outcome is Outcome.OK and "\\consistency" in out and "\\timing" in out
    assert "SPLIT SHARD s0003 [AT key]" in out and "SHOW SHARDS" in out
    assert run(shell, "\\help")[1] == out
    assert run(shell, "\\q")[0] is Outcome.QUIT


def test_format() -> None:
    shell, _ = make_shell()
    assert run(shell, "\\format vertical") == (Outcome.OK, "output format is vertical\n", "")
    assert shell.settings.format == "vertical"
    assert run(shell, "\\x")[1] == "output format is table\n"
    assert run(shell, "\\x")[1] == "output format is vertical\n"
    outcome, _, err = run(shell, "\\format xml")
    assert outcome is Outcome.FAILED and "unknown format 'xml'" in err
    assert run(shell, "\\format csv")[2] == "output format is csv\n"  # data formats: messages on stderr
    assert run(shell, "\\format a b")[0] is Outcome.FAILED


def test_timing() -> None:
    shell, _ = make_shell()
    assert run(shell, "\\timing off")[1] == "timing is off\n"
    assert shell.settings.timing is False
    assert run(shell, "\\timing")[1] == "timing is on\n"  # no argument toggles
    assert run(shell, "\\timing ON")[1] == "timing is on\n"
    outcome, _, err = run(shell, "\\timing maybe")
    assert outcome is Outcome.FAILED and "expected on or off" in err


def test_consistency_reconnects_when_connected() -> None:
    shell, factory = make_shell()
    assert run(shell, "\\consistency serializable")[1] == "reads are serializable\n"
    assert factory.calls == []  # not connected yet: only the setting changes
    shell.connect()
    run(shell, "\\consistency linearizable")
    assert factory.calls[-1] == ("h:1", "linearizable")
    run(shell, "\\consistency serializable")
    assert factory.calls[-1] == ("h:1", "serializable")
    assert run(shell, "\\consistency")[1] == "reads are serializable\n"
    assert run(shell, "\\consistency strong")[0] is Outcome.FAILED


def test_connect() -> None:
    shell, factory = make_shell(down=("bad:1",))
    assert run(shell, "\\connect h:2,h:3") == (Outcome.OK, "connected to h:2,h:3 (linearizable)\n", "")
    assert shell.seeds == "h:2,h:3" and shell.connected
    outcome, _, err = run(shell, "\\connect bad:1")
    assert outcome is Outcome.FAILED and "cannot reach bad:1" in err
    assert shell.seeds == "h:2,h:3" and shell.connected  # the old connection is kept
    assert run(shell, "\\c")[1] == "connected to h:2,h:3 (linearizable)\n"


def test_include_needs_a_file() -> None:
    shell, _ = make_shell()
    outcome, _, err = run(shell, "\\i")
    assert outcome is Outcome.FAILED and "usage: \\i FILE" in err
