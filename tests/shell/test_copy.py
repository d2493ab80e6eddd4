"""COPY in the shell, with a fake client: dispatch, footer, errors, progress and Ctrl-C."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from shell.runner import Outcome, Settings, Shell

from .fakes import Factory, FakeClient

pytestmark = pytest.mark.timeout(60)


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


class WritingClient(FakeClient):
    """A FakeClient that also takes put_many; ``interrupt_on`` raises Ctrl-C on that batch (0-based)."""

    def __init__(self, interrupt_on: int | None = None) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.interrupt_on = interrupt_on

    def put_many(self, pairs: Any) -> int:
        pairs = list(pairs)
        if len(self.batches) == self.interrupt_on:
            raise KeyboardInterrupt
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


def test_ctrl_c_says_how_many_rows_were_written_and_a_terminal_sees_progress(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("".join(f"{i},v\n" for i in range(12_000)))
    client = WritingClient(interrupt_on=2)
    err = TtyIO()
    shell = make_shell(client, err)
    assert shell.execute(f"COPY kv FROM '{tmp_path / 'big.csv'}'") is Outcome.CANCELLED
    assert err.getvalue().endswith("cancelled after 10,000 rows\n")
    assert len(client.rows) == 10_000 and client.batches == [5000, 5000]


def test_a_progress_line_appears_on_a_terminal_and_is_erased(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raftkv import bulk

    monkeypatch.setattr(bulk.ProgressLine, "__init__", _eager(bulk.ProgressLine.__init__))
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
