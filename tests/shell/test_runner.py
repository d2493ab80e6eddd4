"""The run loop: printing, footers, errors, stop-at-first-error, Ctrl-C during a query, files."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.errors import Unavailable
from shell import runner
from shell.runner import Outcome, Settings, Shell

from .fakes import Factory, FakeClient, FakeResult

pytestmark = pytest.mark.timeout(120)


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_shell(client: FakeClient | None = None, fmt: str = "table", timing: bool = False,
               out: io.StringIO | None = None) -> tuple[Shell, FakeClient]:
    factory = Factory(client)
    shell = Shell("h:1", Settings(format=fmt, timing=timing), out=out or io.StringIO(), err=io.StringIO(),
                  client_factory=factory)
    return shell, factory.client


def output(shell: Shell) -> tuple[str, str]:
    return shell.out.getvalue(), shell.err.getvalue()  # type: ignore[attr-defined]


def test_rows_then_footer() -> None:
    shell, db = make_shell()
    assert shell.run_text("INSERT INTO kv VALUES (1, 'a'), (2, 'b'); SELECT * FROM kv;") is Outcome.OK
    out, err = output(shell)
    assert out.splitlines() == ["INSERT 2", " key | value", "-----+-------", "   1 | a", "   2 | b", "(2 rows)"]
    assert err == ""
    assert all(r.closed for r in db.results)


def test_timing_in_footer() -> None:
    shell, _ = make_shell(timing=True)
    shell.execute("GET 1")
    assert output(shell)[0].splitlines()[-1].startswith("(0 rows, ")
    assert output(shell)[0].rstrip().endswith(" ms)")


def test_data_formats_keep_stdout_for_rows() -> None:
    shell, _ = make_shell(fmt="csv")
    shell.run_text("PUT 1 'a'; SELECT * FROM kv;")
    out, err = output(shell)
    assert out == "key,value\n1,a\n"
    assert err.splitlines() == ["INSERT 1", "(1 row)"]


def test_parse_error_shows_the_caret_and_stops_the_script() -> None:
    shell, db = make_shell()
    outcome = shell.run_text("PUT 1 'a';\nSELECT * FORM kv;\nPUT 2 'b';")
    assert outcome is Outcome.FAILED and outcome.exit_code == 1
    out, err = output(shell)
    assert err.splitlines() == ["ERROR: line 2, column 10: unexpected name 'FORM'; expected one of: ',', FROM",
                                "  SELECT * FORM kv", "           ^"]
    assert db.queries == ["PUT 1 'a'", "SELECT * FORM kv"]  # PUT 2 never ran
    assert out == "INSERT 1\n"


def test_errors_from_files_name_the_file_and_line(tmp_path: Path) -> None:
    script = tmp_path / "s.sql"
    script.write_text("PUT 1 'a';\n\n  GET 'x';\n")
    shell, _ = make_shell()
    assert shell.run_file(str(script)) is Outcome.FAILED
    err = output(shell)[1]
    assert err.startswith(f"{script}:3: ERROR: line 3, column 7: ")


def test_cluster_errors_mid_stream() -> None:
    def pages() -> Iterator[list[tuple[int, bytes]]]:
        yield [(1, b"a")]
        raise Unavailable("no quorum for s0001")

    result = FakeResult(("key", "value"), "SELECT", pages())
    shell, db = make_shell(FakeClient(lambda text, st: result))
    assert shell.execute("SELECT * FROM kv") is Outcome.FAILED
    out, err = output(shell)
    assert "   1 | a" in out  # what arrived was shown
    assert err == "ERROR: unavailable: no quorum for s0001\n"
    assert result.closed


def test_ctrl_c_during_a_long_query_cancels_it_and_the_shell_goes_on() -> None:
    produced = []

    def endless() -> Iterator[list[tuple[int, bytes]]]:
        for n in range(10**9):
            if n == 3:
                raise KeyboardInterrupt  # what SIGINT does to the thread waiting for a page
            produced.append(n)
            yield [(n, b"v")]

    long = FakeResult(("key", "value"), "SELECT", endless())

    def answer(text: str, st: object) -> FakeResult:
        return long if "kv" in text else FakeResult(status="INSERT 1")

    shell, db = make_shell(FakeClient(answer))
    assert shell.execute("SELECT * FROM kv") is Outcome.CANCELLED
    assert Outcome.CANCELLED.exit_code == 130
    out, err = output(shell)
    assert long.closed and produced == [0, 1, 2]
    assert err == "cancelled after 3 rows\n"
    assert out.splitlines()[-1] == "   2 | v" and "rows)" not in out
    assert shell.execute("PUT 5 'x'") is Outcome.OK  # the same client still works
    assert output(shell)[0].endswith("INSERT 1\n")


def test_ctrl_c_before_the_first_page_and_in_scripts() -> None:
    def answer(text: str, st: object) -> FakeResult:
        if "kv" in text:
            raise KeyboardInterrupt
        return FakeResult(status="INSERT 1")

    shell, db = make_shell(FakeClient(answer))
    assert shell.run_text("PUT 1 'a'; SELECT * FROM kv; PUT 2 'b';") is Outcome.CANCELLED
    assert output(shell)[1] == "cancelled\n"
    assert len(db.queries) == 2


def test_progress_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PROGRESS_AFTER", 0.0)
    pages = [[(1, b"a")], [(2, b"b")]]
    shell, _ = make_shell(FakeClient(lambda t, s: FakeResult(("key", "value"), "SELECT", iter(pages))),
                          out=TtyIO())
    shell.execute("SELECT * FROM kv")
    out = output(shell)[0]
    assert "\r\x1b[2K-- 1 row so far, " in out and "\r\x1b[2K-- 2 rows so far, " in out
    # every progress line is erased before anything else is printed
    for chunk in out.split("-- ")[1:]:
        assert chunk.split(" --", 1)[1].startswith("\r\x1b[2K")
    assert out.endswith("(2 rows)\n")


def test_no_progress_line_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PROGRESS_AFTER", 0.0)
    shell, _ = make_shell()
    shell.run_text("PUT 1 'a'; SELECT * FROM kv;")
    assert "\x1b" not in output(shell)[0]


def test_unexpected_exceptions_do_not_kill_the_shell() -> None:
    def answer(text: str, st: object) -> FakeResult:
        raise TypeError("bug")

    shell, _ = make_shell(FakeClient(answer))
    assert shell.execute("GET 1") is Outcome.FAILED
    assert output(shell)[1] == "ERROR: internal error: TypeError: bug\n"


def test_connection_is_lazy_and_retried() -> None:
    factory = Factory(down=["h:1"])
    shell = Shell("h:1", Settings(timing=False), out=io.StringIO(), err=io.StringIO(), client_factory=factory)
    assert shell.execute("GET 1") is Outcome.FAILED
    assert "cannot reach h:1" in shell.err.getvalue()
    factory.down.clear()  # the cluster came up
    assert shell.execute("GET 1") is Outcome.OK
    assert factory.calls == [("h:1", "linearizable"), ("h:1", "linearizable")]
    no_seeds = Shell(None, out=io.StringIO(), err=io.StringIO(), client_factory=factory)
    assert no_seeds.execute("GET 1") is Outcome.FAILED
    assert "not connected" in no_seeds.err.getvalue()


def test_quit_command_ends_a_script() -> None:
    shell, db = make_shell()
    assert shell.run_text("PUT 1 'a';\n\\q\nPUT 2 'b';") is Outcome.QUIT
    assert Outcome.QUIT.exit_code == 0
    assert db.queries == ["PUT 1 'a'"]


def test_run_lines_runs_each_statement_when_its_semicolon_arrives() -> None:
    shell, db = make_shell()
    seen: list[int] = []

    def lines() -> Iterator[str]:
        for line in ["PUT 1\n", " 'a';\n", "PUT 2 'b';\n"]:
            seen.append(len(db.queries))
            yield line

    assert shell.run_lines(lines(), "stdin") is Outcome.OK
    assert seen == [0, 0, 1]
    assert db.queries == ["PUT 1\n 'a'", "PUT 2 'b'"]


def test_include_files_and_their_limits(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(f"PUT 1 'a';\n\\i {tmp_path / 'b.sql'}\nPUT 3 'c';\n")
    (tmp_path / "b.sql").write_text("PUT 2 'b';\n")
    shell, db = make_shell()
    assert shell.run_text(f"\\i {tmp_path / 'a.sql'}") is Outcome.OK
    assert db.queries == ["PUT 1 'a'", "PUT 2 'b'", "PUT 3 'c'"]

    (tmp_path / "loop.sql").write_text(f"\\i {tmp_path / 'loop.sql'}\n")
    assert shell.run_file(str(tmp_path / "loop.sql")) is Outcome.FAILED
    assert "levels deep" in output(shell)[1]

    assert shell.run_file(str(tmp_path / "missing.sql")) is Outcome.FAILED
    assert "cannot read" in output(shell)[1]
    (tmp_path / "bin.sql").write_bytes(b"PUT 1 '\xff';")
    assert shell.run_file(str(tmp_path / "bin.sql")) is Outcome.FAILED
    assert "not UTF-8" in output(shell)[1]
