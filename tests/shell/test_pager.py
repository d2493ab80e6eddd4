"""The pager without a cluster: choosing the program, measuring the screen, and a real pager
process (a small shell command that records what it got) fed by :class:`PagedTerminal`."""

from __future__ import annotations

import io
import shlex
import sys
from pathlib import Path

import pytest

from shell.formats import render_all, renderer
from shell.pager import OutputClosed, PagedTerminal, ScreenFill, pager_command

pytestmark = pytest.mark.timeout(60)


def which_of(*installed: str):
    return lambda name: f"/usr/bin/{name}" if name in installed else None


@pytest.mark.parametrize(("env", "installed", "expected"), [
    ({}, ("less", "more"), ("less -S", None)),
    ({}, ("more",), ("more", None)),
    ({}, (), (None, None)),  # no pager on the machine: results go to the terminal
    ({"PAGER": "most -s"}, ("most", "less"), ("most -s", None)),
    ({"PAGER": ""}, ("less",), (None, None)),  # empty $PAGER: no pager, as in psql
    ({"PAGER": "   "}, ("less",), (None, None)),
    ({"PAGER": "LESS=-R less"}, ("less",), ("LESS=-R less", None)),  # left to sh to judge
    ({"PAGER": "cat > out.txt"}, ("cat",), ("cat > out.txt", None)),
])
def test_pager_command(env: dict[str, str], installed: tuple[str, ...], expected: tuple) -> None:
    assert pager_command(env, which_of(*installed)) == expected


def test_a_pager_that_is_not_installed_is_reported_not_run() -> None:
    command, problem = pager_command({"PAGER": "nosuchpager -x"}, which_of("less"))
    assert command is None
    assert problem is not None and "'nosuchpager'" in problem and "$PAGER" in problem


def test_screen_fill_counts_lines_and_wrapped_rows() -> None:
    fill = ScreenFill(room=5, columns=10)
    assert not fill.add("a\nb\n")
    assert fill.used == 2
    assert not fill.add("x" * 25 + "\n")  # 25 columns on a 10-column screen: 3 rows
    assert fill.used == 5
    assert fill.add("c\n")  # the sixth row no longer fits
    assert fill.full


def test_screen_fill_joins_a_line_split_across_writes_and_counts_wide_characters() -> None:
    fill = ScreenFill(room=10, columns=4)
    fill.add("ab")
    fill.add("cd\n")  # one 4-column line, not two
    assert fill.used == 1
    fill.add("日本語\n")  # 6 columns wide: 2 rows
    assert fill.used == 3
    fill.add("\n")  # an empty line still takes a row
    assert fill.used == 4


def test_screen_fill_stops_measuring_once_full() -> None:
    fill = ScreenFill(room=2, columns=80)
    assert fill.add("1\n2\n3\n" + "4\n" * 100_000)
    assert fill.used == 3  # what follows goes to the pager unmeasured


def recording_pager(path: Path) -> str:
    return f"cat > {shlex.quote(str(path))}"


def test_output_that_fits_goes_to_the_terminal_and_starts_no_pager(tmp_path: Path) -> None:
    record = tmp_path / "paged.txt"
    out = io.StringIO()
    sink = PagedTerminal(out, recording_pager(record), lines=10, columns=80)
    sink.write("one\ntwo\n")
    sink.flush()
    assert out.getvalue() == ""  # held until it is known whether it fits
    sink.close()
    assert out.getvalue() == "one\ntwo\n"
    assert not sink.paging and not record.exists()


def test_output_taller_than_the_screen_goes_whole_to_the_pager(tmp_path: Path) -> None:
    record = tmp_path / "paged.txt"
    out = io.StringIO()
    sink = PagedTerminal(out, recording_pager(record), lines=10, columns=80)
    assert sink.progress and sink.screen_lines == 9
    text = "".join(f"row {i}\n" for i in range(8))
    sink.write(text)  # 8 rows fit: the footer and the prompt need the last two
    assert not sink.paging
    sink.write("row 8\n")
    assert sink.paging and not sink.progress  # the terminal is the pager's now
    for i in range(9, 5000):
        sink.write(f"row {i}\n")
    sink.close()
    assert out.getvalue() == ""
    assert record.read_text() == "".join(f"row {i}\n" for i in range(5000))


def test_a_pager_that_quits_early_raises_output_closed(tmp_path: Path) -> None:
    record = tmp_path / "paged.txt"
    reader = f"{shlex.quote(sys.executable)} -c 'import sys; print(sys.stdin.readline(), end=\"\")' > {record}"
    sink = PagedTerminal(io.StringIO(), reader, lines=5, columns=80)
    with pytest.raises(OutputClosed):
        for i in range(1_000_000):  # far more than a pipe buffers
            sink.write(f"row {i}\n")
    sink.close()  # the pager has exited: closing does not hang or raise
    assert record.read_text() == "row 0\n"


def test_table_header_is_repeated_at_the_top_of_every_screen() -> None:
    rows = [(i, b"v") for i in range(10)]
    text = render_all("table", ("key", "value"), [rows[:4], rows[4:]], screen_lines=5)
    lines = text.splitlines()
    header, rule = lines[0], lines[1]
    assert header == " key | value" and set(rule) <= {"-", "+"}
    # screens of 5 lines: header, rule and 3 rows each; the last screen has the last row
    for start in range(0, len(lines), 5):
        assert lines[start:start + 2] == [header, rule]
    assert [line for line in lines if line not in (header, rule)] == [f"   {i} | v" for i in range(10)]
    assert len(lines) == 10 + 2 * 4


def test_a_header_for_wider_columns_starts_a_new_screen_count() -> None:
    r = renderer("table", ("key",), screen_lines=4)
    first = r.page([(1,), (2,)]).splitlines()
    assert first == [" key", "-----", "   1", "   2"]
    second = r.page([(123456,), (3,)]).splitlines()
    # the wider column reprints the header (after a blank line); the count starts again there
    assert second == ["", "  key", "--------", " 123456", "      3"]


def test_no_header_repetition_without_a_screen_or_on_a_tiny_one() -> None:
    rows = [[(i,) for i in range(50)]]
    for screen in (0, 1, 2):
        assert render_all("table", ("key",), rows, screen_lines=screen).count(" key\n") == 1


def test_only_tables_repeat_headers() -> None:
    rows = [[(i, b"v") for i in range(20)]]
    assert render_all("csv", ("key", "value"), rows, screen_lines=5).count("key,value") == 1
    assert "RECORD 20" in render_all("vertical", ("key", "value"), rows, screen_lines=5)


def test_a_pager_that_cannot_start_leaves_the_text_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork(*args: object, **kwargs: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr("shell.pager.subprocess.Popen", no_fork)
    out = io.StringIO()
    sink = PagedTerminal(out, "less -S", lines=5, columns=80)
    text = [f"row {i}\n" for i in range(20)]
    for line in text:
        sink.write(line)
    sink.close()
    assert out.getvalue() == "".join(text) and not sink.paging


@pytest.mark.parametrize("rows", [20, 20_000], ids=["noticed-at-close", "noticed-while-writing"])
def test_a_pager_that_fails_is_reported_and_the_result_printed_directly(rows: int) -> None:
    """A pager that exits with a status above 0 without reading (a bad option in $PAGER, less with
    no usable terminal) is a failure, not a quit: no OutputClosed (the statement is not
    cancelled); the caller is told why, and the whole result reaches the terminal.  A short result
    fits the pipe, so the failure shows when the pager is waited for; a long one breaks the pipe."""
    failing = f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'"
    told: list[str] = []
    out = io.StringIO()
    sink = PagedTerminal(out, failing, lines=5, columns=80, on_failure=told.append)
    text = [f"row {i}\n" for i in range(rows)]
    for line in text:
        sink.write(line)
    sink.close()
    assert told == [f"pager {failing!r} exited with status 3"]
    assert sink.failure == told[0]
    assert out.getvalue() == "".join(text) and not sink.paging
