"""COPY in the shell, with a fake client: dispatch, footer, errors, progress and Ctrl-C."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from raftkv import bulk
from shell.progress import ProgressLine, progress_text
from shell.runner import Outcome, Settings, Shell

from ..helpers import ctrl_c_when_main_waits_for_a_future
from .fakes import Factory, FakeClient

pytestmark = pytest.mark.timeout(60)


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


class WritingClient(FakeClient):
    """A FakeClient that also takes put_many. On batch ``interrupt_on`` (0-based) Ctrl-C reaches
    the main thread while this slow put_many runs: it finishes after a moment, or once
    ``release`` is set if given."""

    def __init__(self, interrupt_on: int | None = None, release: threading.Event | None = None) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.interrupt_on = interrupt_on
        self.release = release

    def put_many(self, pairs: Any) -> int:
        pairs = list(pairs)
        if len(self.batches) == self.interrupt_on:
            ctrl_c_when_main_waits_for_a_future()
            if self.release is not None:
                assert self.release.wait(50)
            else:
                time.sleep(0.3)  # slow: the shell takes the Ctrl-C meanwhile
        self.batches.append(len(pairs))
        self.rows.update(pairs)
        return len(pairs)


def make_shell(client: FakeClient, err: io.StringIO | None = None) -> Shell:
    return Shell("h:1", Settings(format="csv", timing=False), out=io.StringIO(), err=err or io.StringIO(),
                 client_factory=Factory(client))


def test_copy_runs_here_and_reports_its_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("1,a\n2,\\x00ff\n")
    client = WritingClient()
    shell = make_shell(client)
    target = tmp_path / "out.csv"
    script = f"-- load it\nCOPY kv FROM '{source}'; COPY (SELECT * FROM kv) TO '{target}' WITH (HEADER);"
    assert shell.run_text(script) is Outcome.OK
    assert shell.err.getvalue().splitlines() == ["COPY 2", "COPY 2"]
    assert client.rows == {1: b"a", 2: b"\x00\xff"}
    assert len(client.queries) == 1 and client.queries[0].startswith("Select(")  # only the export queried
    assert target.read_text() == "key,value\n1,a\n2,\\x00ff\n"


def test_a_bad_row_fails_the_statement_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("1,a\n2\n3,c\n")
    client = WritingClient()
    shell = make_shell(client)
    assert shell.run_text(f"COPY kv FROM '{tmp_path / 'in.csv'}'; GET 1;", source="s.sql") is Outcome.FAILED
    assert shell.err.getvalue() == (f"s.sql:1: ERROR: {tmp_path / 'in.csv'}: line 2: expected 2 fields, key and "
                                    "value, but found 1; a value holding a comma, a quote or a line break must be "
                                    "in double quotes; the 1 row before it was written, nothing after it\n")
    assert client.rows == {1: b"a"} and client.queries == []  # the script stopped there


def test_ctrl_c_waits_for_the_batch_on_its_way_and_says_how_many_rows_were_written(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("".join(f"{i},v\n" for i in range(12_000)))
    client = WritingClient(interrupt_on=1)
    err = TtyIO()
    shell = make_shell(client, err)
    assert shell.execute(f"COPY kv FROM '{tmp_path / 'big.csv'}'") is Outcome.CANCELLED
    assert err.getvalue().endswith("cancelled after 10,000 rows\n") and "partly" not in err.getvalue()
    assert len(client.rows) == 10_000 and client.batches == [5000, 5000]  # the second finished, no third


def test_ctrl_c_names_the_lines_that_may_have_been_partly_written(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "CANCEL_WAIT", 0.05)
    (tmp_path / "big.csv").write_text("".join(f"{i},v\n" for i in range(12_000)))
    release = threading.Event()
    client = WritingClient(interrupt_on=1, release=release)
    shell = make_shell(client)
    try:
        assert shell.execute(f"COPY kv FROM '{tmp_path / 'big.csv'}'") is Outcome.CANCELLED
    finally:
        release.set()
    assert shell.err.getvalue() == ("COPY: 5,000 rows written; lines 5,001-10,000 may have been partly written\n"
                                    "cancelled after 5,000 rows\n")


@pytest.mark.parametrize("statement", ["COPY kv FROM '-'", "COPY kv TO '-'", "COPY (SELECT * FROM kv) TO '-'"])
def test_a_dash_is_refused_and_standard_input_is_left_alone(statement: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"COPY used standard input or output ({name})")

    monkeypatch.setattr("sys.stdin", Untouchable())
    client = WritingClient()
    shell = make_shell(client)
    assert shell.run_text(f"{statement}; GET 1;", source="s.sql") is Outcome.FAILED
    assert "COPY reads and writes files, not standard input or output; use `raftkv import -`" in shell.err.getvalue()
    assert client.queries == [] and client.rows == {}  # and the script stopped there


def test_explain_copy_says_why_there_is_no_plan() -> None:
    shell = make_shell(WritingClient())
    assert shell.execute("EXPLAIN COPY kv FROM 'a.csv'") is Outcome.FAILED
    assert "EXPLAIN does not take COPY: a COPY runs in the client" in shell.err.getvalue()


def test_a_progress_line_appears_on_a_terminal_and_is_erased(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProgressLine, "__init__", _eager(ProgressLine.__init__))
    (tmp_path / "in.csv").write_text("".join(f"{i},v\n" for i in range(6000)))
    err = TtyIO()
    shell = make_shell(WritingClient(), err)
    assert shell.execute(f"COPY kv FROM '{tmp_path / 'in.csv'}'") is Outcome.OK
    text = err.getvalue()
    assert "\r\x1b[2KCOPY: 5,000 rows" in text and "83 %" in text  # after the first of two batches
    assert text.endswith("\r\x1b[2KCOPY 6000\n")  # erased before the report


def _eager(init: Any) -> Any:
    def patched(self: Any, stream: Any, label: str, **options: Any) -> None:
        init(self, stream, label, after=0.0, interval=0.0)

    return patched


def test_progress_text_and_a_line_only_on_a_terminal() -> None:
    assert progress_text("import", 120_000, 2.0, 0.345) == "import: 120,000 rows, 60,000 rows/s, 34 %"
    assert progress_text("COPY", 1, 0.0) == "COPY: 1 row"

    now = [0.0]
    tty = TtyIO()
    line = ProgressLine(tty, "import", after=0.3, interval=0.2, clock=lambda: now[0])
    line(10)
    assert tty.getvalue() == ""  # quick work shows nothing
    now[0] = 1.0
    line(100, 0.5)
    now[0] = 1.1
    line(150, 0.6)  # within the interval: not redrawn
    assert tty.getvalue() == "\r\x1b[2Kimport: 100 rows, 100 rows/s, 50 %"
    line.clear()
    assert tty.getvalue().endswith("\r\x1b[2K") and line.rows == 150
    pipe = io.StringIO()
    quiet = ProgressLine(pipe, "import", after=0, clock=lambda: now[0])
    now[0] = 5.0
    quiet(10)
    quiet.clear()
    assert pipe.getvalue() == "" and quiet.rows == 10
