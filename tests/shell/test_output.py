r"""Where results go, through the real Shell on a fake client: ``\o FILE`` and back, ``\pager``,
``\colwidth`` and its truncation note, and the JSON field names the shell remembers."""

from __future__ import annotations

import io
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shell import output
from shell.commands import run_command
from shell.runner import Outcome, Settings, Shell

from .fakes import Factory, FakeClient, FakeResult

pytestmark = pytest.mark.timeout(60)


def make_shell(client: FakeClient | None = None, fmt: str = "table", out: io.StringIO | None = None) -> Shell:
    return Shell("h:1", Settings(format=fmt, timing=False), out=out or io.StringIO(), err=io.StringIO(),
                 client_factory=Factory(client))


def streams(shell: Shell) -> tuple[str, str]:
    return shell.out.getvalue(), shell.err.getvalue()  # type: ignore[attr-defined]


def rows_client(rows: list[tuple[int, bytes]]) -> FakeClient:
    return FakeClient(lambda text, st: FakeResult(("key", "value"), "SELECT", [rows]))


def test_o_sends_rows_to_a_file_and_messages_to_the_terminal(tmp_path: Path) -> None:
    target = tmp_path / "rows.csv"
    shell = make_shell(rows_client([(1, b"a\x1b]0;t\x07"), (2, b"\xff\xfe"), (3, b"\\x41")]))
    assert shell.run_text(f"\\format csv\n\\o {target}\nSELECT * FROM kv;") is Outcome.OK
    out, err = streams(shell)
    # the file gets what a pipe gets: the exact text, binary in \x hex, text never reading as binary
    assert target.read_bytes() == b'key,value\n1,a\x1b]0;t\x07\n2,\\xfffe\n3,\\\\x41\n'
    assert "1,a" not in out and f"results go to {target}" in err
    assert err.rstrip().endswith("(3 rows)")  # the footer stays on the terminal

    # \o alone: back to the terminal (escaped there), and the file keeps what it had
    shell.out = io.StringIO()
    assert shell.run_text("\\o\nSELECT * FROM kv;") is Outcome.OK
    assert "1,a\\u001b]0;t\\u0007" not in target.read_text()
    assert "1,a\x1b]0;t\x07\n" in shell.out.getvalue()  # csv to a non-terminal stream stays raw
    assert "results go to the terminal" in shell.err.getvalue()
    assert shell.output_file is None


def test_o_in_table_format_writes_the_table_without_progress_or_pager(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shell.runner.PROGRESS_AFTER", 0.0)
    monkeypatch.setenv("PAGER", f"cat > {shlex.quote(str(tmp_path / 'paged'))}")
    target = tmp_path / "table.txt"
    pages = [[(i, b"v")] for i in range(3)]
    shell = make_shell(FakeClient(lambda t, s: FakeResult(("key", "value"), "SELECT", iter(pages))))
    run_command(shell, f"\\o {target}")
    assert shell.execute("SELECT * FROM kv") is Outcome.OK
    assert target.read_text() == " key | value\n-----+-------\n   0 | v\n   1 | v\n   2 | v\n"
    assert "\x1b" not in target.read_text()
    assert not (tmp_path / "paged").exists()
    assert streams(shell)[0].splitlines()[-1] == "(3 rows)"


def test_o_replaces_the_file_and_a_bad_path_keeps_the_current_one(tmp_path: Path) -> None:
    first, second = tmp_path / "1.txt", tmp_path / "2.txt"
    second.write_text("old contents\n")
    shell = make_shell(rows_client([(1, b"a")]), fmt="csv")
    run_command(shell, f"\\o {first}")
    assert run_command(shell, f"\\o {tmp_path / 'no' / 'such' / 'dir.txt'}") is Outcome.FAILED
    assert "cannot write" in streams(shell)[1]
    shell.execute("SELECT * FROM kv")
    assert first.read_text() == "key,value\n1,a\n"
    run_command(shell, f"\\o '{second}'")  # emptied, as psql does
    shell.execute("SELECT * FROM kv")
    assert second.read_text() == "key,value\n1,a\n"
    assert run_command(shell, "\\o |gzip") is Outcome.FAILED
    assert "not supported" in streams(shell)[1]


def test_a_failing_o_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    shell = make_shell(rows_client([(i, b"x" * 100) for i in range(1000)]), fmt="csv")
    run_command(shell, "\\o /dev/full")
    assert shell.execute("SELECT * FROM kv") is Outcome.FAILED
    assert "cannot write to /dev/full" in streams(shell)[1]
    assert run_command(shell, "\\o") is Outcome.OK and shell.output_file is None
    assert shell.execute("SELECT * FROM kv") is Outcome.OK  # the shell goes on


def test_pager_command_toggles_and_takes_on_off() -> None:
    shell = make_shell()
    assert shell.settings.pager
    assert run_command(shell, "\\pager off") is Outcome.OK and not shell.settings.pager
    assert run_command(shell, "\\pager") is Outcome.OK and shell.settings.pager
    assert run_command(shell, "\\pager maybe") is Outcome.FAILED
    assert "pager is on" in streams(shell)[0]


def test_colwidth_cuts_long_values_with_a_marker_and_says_so() -> None:
    shell = make_shell(rows_client([(1, b"abcdefghijklmnopqrstuvwxyz"), (2, b"short")]))
    assert run_command(shell, "\\colwidth 10") is Outcome.OK
    assert shell.settings.max_cell == 10
    assert shell.execute("SELECT * FROM kv") is Outcome.OK
    lines = streams(shell)[0].splitlines()
    assert "   1 | abcdefghi…" in lines and "   2 | short" in lines
    assert lines[-2:] == ["(2 rows)", "note: 1 value was cut to 10 columns (ending in …); "
                                      "\\colwidth N to change, or \\x for whole values"]
    run_command(shell, "\\colwidth 100")
    shell.out = io.StringIO()
    shell.execute("SELECT * FROM kv")
    assert "   1 | abcdefghijklmnopqrstuvwxyz" in shell.out.getvalue()
    assert "note:" not in shell.out.getvalue()


def test_colwidth_never_cuts_numbers() -> None:
    shell = make_shell(FakeClient(lambda t, s: FakeResult(("key", "n"), "SELECT", [[(12345678901234567890, 1.25e-300)]])))
    run_command(shell, "\\colwidth 4")
    shell.execute("SELECT * FROM kv")
    out = streams(shell)[0]
    assert "12345678901234567890 | 1.25e-300" in out and "note:" not in out


@pytest.mark.parametrize("arg", ["3", "-1", "wide", "10 20"])
def test_colwidth_refuses_bad_widths(arg: str) -> None:
    shell = make_shell()
    assert run_command(shell, f"\\colwidth {arg}") is Outcome.FAILED
    assert shell.settings.max_cell == 200 and "ERROR" in streams(shell)[1]


def test_vertical_and_csv_never_cut() -> None:
    long = b"x" * 300
    for fmt in ("vertical", "csv"):
        shell = make_shell(rows_client([(1, long)]), fmt=fmt)
        shell.execute("SELECT * FROM kv")
        assert "x" * 300 in streams(shell)[0] and "note:" not in "".join(streams(shell))


def test_the_shell_remembers_json_field_names_of_the_rows_it_shows() -> None:
    shell = make_shell(rows_client([(1, b'{"temp": 21, "sensor": "s1", "loc": {"lat": 1.5}}'), (2, b"plain")]))
    shell.execute("SELECT * FROM kv")
    assert shell.fields.names() == ["loc", "sensor", "temp"]
    assert shell.fields.names(("loc",)) == ["lat"]


class Terminal(io.StringIO):
    """A StringIO standing for a terminal of a given size (as far as shell.output asks)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd


@pytest.fixture
def fake_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[Terminal]:
    read, write = os.pipe()
    monkeypatch.setattr(output.os, "isatty", lambda fd: fd == write)
    monkeypatch.setattr(output.os, "get_terminal_size", lambda fd: os.terminal_size((80, 10)))
    yield Terminal(write)
    os.close(read), os.close(write)


def test_tall_results_on_a_terminal_go_through_the_pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fake_terminal: Terminal) -> None:
    record = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"cat > {shlex.quote(str(record))}")
    shell = make_shell(rows_client([(i, b"v") for i in range(30)]), out=fake_terminal)
    assert shell.execute("SELECT * FROM kv") is Outcome.OK
    paged = record.read_text().splitlines()
    assert len([line for line in paged if line.endswith("| v")]) == 30
    assert [i for i, line in enumerate(paged) if line == " key | value"] == [0, 9, 18, 27, 36]  # 9-line screens
    assert fake_terminal.getvalue() == "(30 rows)\n"  # the footer comes after the pager


def test_short_results_and_pager_off_stay_on_the_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          fake_terminal: Terminal) -> None:
    record = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"cat > {shlex.quote(str(record))}")
    shell = make_shell(rows_client([(i, b"v") for i in range(5)]), out=fake_terminal)
    shell.execute("SELECT * FROM kv")
    assert "   4 | v" in fake_terminal.getvalue() and not record.exists()
    shell.settings.pager = False
    shell._factory = Factory(rows_client([(i, b"v") for i in range(30)]))  # type: ignore[attr-defined]
    shell.close()
    shell.execute("SELECT * FROM kv")
    assert "  29 | v" in fake_terminal.getvalue() and not record.exists()
    # streamed past a screen, the table still repeats its header per screen: 7 rows under each
    assert fake_terminal.getvalue().count(" key | value") == 1 + 5


def test_quitting_the_pager_early_cancels_the_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        fake_terminal: Terminal) -> None:
    monkeypatch.setenv("PAGER", f"{shlex.quote(sys.executable)} -c 'import sys; sys.stdin.readline()'")
    produced: list[int] = []

    def endless() -> Iterator[list[tuple[int, bytes]]]:
        for n in range(10**6):
            produced.append(n)
            yield [(k, b"v" * 50) for k in range(n * 100, n * 100 + 100)]

    result = FakeResult(("key", "value"), "SELECT", endless())
    shell = make_shell(FakeClient(lambda t, s: result if "kv" in t else FakeResult(status="INSERT 1")),
                       out=fake_terminal)
    assert shell.execute("SELECT * FROM kv") is Outcome.CANCELLED
    assert result.closed and len(produced) < 10**6
    assert streams(shell)[1].startswith("cancelled after ")
    assert shell.execute("PUT 1 'a'") is Outcome.OK  # the shell goes on


def test_a_missing_pager_program_is_reported_once_and_results_still_print(monkeypatch: pytest.MonkeyPatch,
                                                                        fake_terminal: Terminal) -> None:
    monkeypatch.setenv("PAGER", "no-such-pager-program-xyz")
    shell = make_shell(rows_client([(i, b"v") for i in range(30)]), out=fake_terminal)
    shell.execute("SELECT * FROM kv")
    shell.execute("SELECT * FROM kv")
    assert streams(shell)[1].count("'no-such-pager-program-xyz'") == 1
    assert fake_terminal.getvalue().count("  29 | v") == 2
    # once per session: another shell in the same process is told too
    other = make_shell(rows_client([(i, b"v") for i in range(30)]), out=fake_terminal)
    other.execute("SELECT * FROM kv")
    assert streams(other)[1].count("'no-such-pager-program-xyz'") == 1


def test_a_pager_that_fails_is_reported_and_the_session_prints_directly(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       fake_terminal: Terminal) -> None:
    """$PAGER runs (sh finds it) but exits at once with status 3, as ``less`` with a bad option
    does: the statement is not 'cancelled'; the shell says why and prints the rows itself, for this
    statement and the next, without starting the pager again; ``\\pager on`` gives it another try."""
    runs = tmp_path / "runs"
    failing = f"echo run >> {shlex.quote(str(runs))}; exit 3"
    monkeypatch.setenv("PAGER", failing)
    shell = make_shell(rows_client([(i, b"v") for i in range(30)]), out=fake_terminal)
    assert shell.execute("SELECT * FROM kv") is Outcome.OK
    assert shell.execute("SELECT * FROM kv") is Outcome.OK
    err = streams(shell)[1]
    assert err.count(f"pager {failing!r} exited with status 3") == 1, err
    assert "cancelled" not in err
    assert fake_terminal.getvalue().count("  29 | v") == 2
    assert fake_terminal.getvalue().count("(30 rows)") == 2
    assert runs.read_text().splitlines() == ["run"]  # not started for the second statement
    run_command(shell, "\\pager on")
    assert shell.execute("SELECT * FROM kv") is Outcome.OK
    assert runs.read_text().splitlines() == ["run", "run"]
    assert fake_terminal.getvalue().count("  29 | v") == 3


def test_no_pager_option_turns_the_pager_off() -> None:
    from raftkv.cli import build_parser

    assert build_parser().parse_args(["shell", "--no-pager"]).no_pager
    assert not build_parser().parse_args(["up"]).no_pager
    assert Settings().pager  # on by default, as in psql


class FullDisk:
    """A file whose last flush, when it is closed, fails as on a full disk (it is closed all the same)."""

    def __init__(self, inner: io.TextIOBase) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def close(self) -> None:
        self.inner.close()
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("fails", [False, True], ids=["closed", "close-fails"])
def test_the_o_file_is_closed_when_the_session_ends_and_a_failed_close_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fails: bool) -> None:
    from raftkv.cli import build_parser
    from shell import cli, commands

    files: list[io.TextIOBase] = []

    class Recorded(output.OutputFile):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            files.append(self._file)  # type: ignore[arg-type]
            if fails:
                self._file = FullDisk(self._file)  # type: ignore[assignment,arg-type]

    monkeypatch.setattr(commands, "OutputFile", Recorded)
    monkeypatch.setattr(cli, "client_factory", lambda args: Factory(rows_client([(1, b"a"), (2, b"b")])))
    path = tmp_path / "rows.csv"
    args = build_parser().parse_args(["shell", "--connect", "h:1", "--format", "csv",
                                      "-e", f"\\o {path}", "-e", "SELECT * FROM kv"])
    status = cli.run_session(args, "h:1")
    err = capsys.readouterr().err
    [file] = files
    assert file.closed  # by the session's end, not left to the garbage collector
    assert path.read_text() == "key,value\n1,a\n2,b\n"
    if fails:
        assert f"ERROR: cannot write to {path}: No space left on device" in err
        assert status == 1
    else:
        assert "ERROR" not in err and status == 0
