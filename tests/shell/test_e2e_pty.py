"""The interactive shell on a real terminal (a pty) against a real cluster: Ctrl-C cancels a long
SELECT and the prompt comes back; tall results go through the pager ($PAGER set to a command that
records what it got, or the real less), \\o sends them to a file, and Tab completes JSON field names
seen in earlier results."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.cluster import launcher

from .conftest import cli_env

pytestmark = pytest.mark.timeout(120)

ROWS = 200_000
BASE = 10**12
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]|\r")


class Terminal:
    """A child process on a pty, with helpers to wait for output."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader with the pty as its controlling terminal
            try:
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.seen = ""  # everything read, ANSI sequences removed

    def read(self, timeout: float = 0.2) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                return
            self.seen += _ANSI.sub("", data.decode("utf-8", "replace"))

    def wait_for(self, pattern: str, start: int = 0, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.compile(pattern).search(self.seen, start)
            if m:
                return m
            self.read()
        raise AssertionError(f"no {pattern!r} in the terminal after {timeout}s; tail: {self.seen[-800:]!r}")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait_exit(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("the shell did not exit")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture(scope="module")
def loaded(cluster: launcher.ClusterInfo) -> launcher.ClusterInfo:
    with Client(cluster.seeds) as db:
        for start in range(BASE, BASE + ROWS, 20_000):
            db.put_many((k, b'{"temp": %d, "dev": "a7"}' % (k % 50)) for k in range(start, start + 20_000))
    return cluster


def open_shell(seeds: str, *options: str, env: dict[str, str | None] | None = None) -> Terminal:
    """The shell on ``seeds`` in a pseudo-terminal, once it prompts (the caller closes it);
    ``env`` adds variables to its environment (None: removes one)."""
    full = {**cli_env(), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    term = Terminal([sys.executable, "-m", "raftkv", "shell", "--connect", seeds, *options],
                    {k: v for k, v in full.items() if v is not None})
    try:
        term.wait_for(r"raftkv> ")
    except BaseException:
        term.kill()
        raise
    return term


def test_ctrl_c_cancels_a_running_select_and_the_prompt_returns(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds, "--no-pager")  # rows stream onto the terminal itself
    try:
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE};\r")
        term.wait_for(rf"{BASE + 500} \| ", start)  # rows are streaming
        term.send("\x03")
        cancelled = term.wait_for(r"\ncancelled( after [\d,]+ rows?)?\n", start)
        term.wait_for(r"raftkv> ", cancelled.end())
        assert f"({ROWS} rows" not in term.seen[start:].replace(",", "")  # it did not run to the end

        # the session still works: same client, next query
        again = len(term.seen)
        term.send(f"SELECT count(*) FROM kv WHERE key >= {BASE};\r")
        counted = term.wait_for(rf"{ROWS}\s*\n.*\(1 row, ", again)
        # Ctrl-D only once the prompt is back: before that the terminal is in cooked mode, where
        # the line discipline would swallow it as end-of-file instead of passing the key on
        term.wait_for(r"raftkv> ", counted.end())
        term.send("\x04")
        assert term.wait_exit() == 0
    finally:
        term.kill()


SCREEN_ROWS = 40  # the Terminal's size: a pager shows 39 rows a screen, its last row is its prompt
ROW = re.compile(r"^\s*(\d+) \| ")


def recording_pager(path: Path) -> dict[str, str | None]:
    return {"PAGER": f"cat > {path}"}


def test_tall_results_go_through_the_pager_with_the_header_on_every_screen(loaded: launcher.ClusterInfo,
                                                                           tmp_path: Path) -> None:
    record = tmp_path / "paged.txt"
    term = open_shell(loaded.seeds, env=recording_pager(record))
    try:
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE} LIMIT 100;\r")
        done = term.wait_for(r"\(100 rows", start)  # printed once the pager has exited
        lines = record.read_text().splitlines()
        header = lines[0]
        assert header.split() == ["key", "|", "value"]
        assert [i for i, line in enumerate(lines) if line == header] == list(range(0, len(lines), SCREEN_ROWS - 1))
        keys = [int(m.group(1)) for m in map(ROW.match, lines) if m]
        assert keys == list(range(BASE, BASE + 100))
        assert f"{BASE + 50} | " not in term.seen[start:]  # the rows went to the pager only

        # a result that fits the screen is printed directly, no pager
        record.unlink()
        term.wait_for(r"raftkv> ", done.end())
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE} LIMIT 5;\r")
        term.wait_for(r"\(5 rows", start)
        assert f"{BASE + 4} | " in term.seen[start:]
        assert not record.exists()
    finally:
        term.kill()


def test_o_sends_results_to_a_file_and_back_without_the_pager(loaded: launcher.ClusterInfo, tmp_path: Path) -> None:
    record, target = tmp_path / "paged.txt", tmp_path / "rows.txt"
    term = open_shell(loaded.seeds, env=recording_pager(record))
    try:
        start = len(term.seen)
        term.send(f"\\o {target}\r")
        shown = term.wait_for(r"results go to .*rows\.txt", start)
        term.wait_for(r"raftkv> ", shown.end())
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE} LIMIT 100;\r")
        done = term.wait_for(r"\(100 rows", start)  # the footer still comes to the terminal
        lines = target.read_text().splitlines()
        assert [int(m.group(1)) for m in map(ROW.match, lines) if m] == list(range(BASE, BASE + 100))
        assert lines[0].split() == ["key", "|", "value"] and len(lines) == 102  # one header: a file has no screens
        assert "\x1b" not in target.read_text()
        assert not record.exists()  # no pager under \o
        assert f"{BASE + 50} | " not in term.seen[start:]

        term.wait_for(r"raftkv> ", done.end())
        start = len(term.seen)
        term.send("\\o\r")
        shown = term.wait_for(r"results go to the terminal", start)
        term.wait_for(r"raftkv> ", shown.end())
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE} LIMIT 3;\r")
        term.wait_for(r"\(3 rows", start)
        assert f"{BASE + 2} | " in term.seen[start:]
        assert len(target.read_text().splitlines()) == 102  # the file kept what it had
    finally:
        term.kill()


def test_quitting_the_pager_early_cancels_the_select_and_the_shell_goes_on(loaded: launcher.ClusterInfo,
                                                                           tmp_path: Path) -> None:
    record = tmp_path / "paged.txt"
    # a pager that reads five lines and quits, as a person pressing q after the first screen
    term = open_shell(loaded.seeds, env={"PAGER": f"head -n 5 > {record}"})
    try:
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE};\r")
        cancelled = term.wait_for(r"\ncancelled( after [\d,]+ rows?)?\n", start)
        term.wait_for(r"raftkv> ", cancelled.end())
        assert len(record.read_text().splitlines()) == 5
        assert "Traceback" not in term.seen and "BrokenPipe" not in term.seen
        assert f"({ROWS} rows" not in term.seen[start:].replace(",", "")

        start = len(term.seen)
        term.send(f"SELECT count(*) FROM kv WHERE key >= {BASE};\r")
        term.wait_for(rf"{ROWS}\s*\n.*\(1 row, ", start)
    finally:
        term.kill()


def pagers_of(term: Terminal) -> list[int]:
    """The less processes running in the shell's session (its pager)."""
    found = subprocess.run(["pgrep", "-s", str(term.pid), "-x", "less"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def quit_less(term: Terminal) -> None:
    """Press q until less has gone: a key typed just after Ctrl-C may be dropped with the typeahead
    that less discards on an interrupt."""
    deadline = time.monotonic() + 30
    while pagers_of(term):
        assert time.monotonic() < deadline, "less did not quit"
        term.send("q")
        for _ in range(10):
            term.read(0.1)
            if not pagers_of(term):
                return


@pytest.mark.skipif(shutil.which("less") is None or shutil.which("pgrep") is None, reason="needs less and pgrep")
def test_the_default_pager_less_can_be_quit_or_interrupted(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds, env={"PAGER": None, "LESS": None})
    try:
        for interrupt in (False, True):  # quit at once; Ctrl-C (cancels the query), then quit
            start = len(term.seen)
            term.send(f"SELECT * FROM kv WHERE key >= {BASE};\r")
            term.wait_for(rf"{BASE + 30} \| ", start)  # less shows the first screen
            assert pagers_of(term)
            if interrupt:
                term.send("\x03")
            quit_less(term)
            cancelled = term.wait_for(r"\ncancelled( after [\d,]+ rows?)?\n", start)
            term.wait_for(r"raftkv> ", cancelled.end())
            assert "Traceback" not in term.seen
        start = len(term.seen)
        term.send(f"SELECT count(*) FROM kv WHERE key >= {BASE};\r")
        term.wait_for(rf"{ROWS}\s*\n.*\(1 row, ", start)
    finally:
        term.kill()


def test_tab_completes_json_field_names_seen_in_a_previous_result(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds)
    try:
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key = {BASE + 7};\r")
        shown = term.wait_for(r"\(1 row", start)
        assert '"dev": "a7"' in term.seen[start:]
        term.wait_for(r"raftkv> ", shown.end())
        term.send("SELECT value->'d")
        term.wait_for(r"value->'d", shown.end())
        typed = len(term.seen)
        term.send("\t")  # the only field starting with d: inserted with its closing quote
        term.wait_for(r"ev'", typed)
        start = len(term.seen)
        term.send(f" AS dev FROM kv WHERE key = {BASE + 7};\r")
        # had Tab not completed it, the string would be unterminated and the statement refused
        term.wait_for(r"\n\s*dev\s*\n-+\n\s*\"?a7\"?\s*\n\(1 row", start)
    finally:
        term.kill()


def test_colwidth_cuts_wide_cells_with_a_marker_and_a_note(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds)
    try:
        start = len(term.seen)
        term.send("\\colwidth 12\r")
        shown = term.wait_for(r"wider than 12 columns are cut", start)
        term.wait_for(r"raftkv> ", shown.end())
        start = len(term.seen)
        term.send(f"SELECT * FROM kv WHERE key >= {BASE} LIMIT 2;\r")
        note = term.wait_for(r"\(2 rows, [^)]*\)\nnote: 2 values were cut to 12 columns \(ending in …\)", start)
        table = term.seen[start:note.start()]
        # 11 columns of the value, then the marker; keys (numbers) are never cut
        assert f'{BASE} | {{"temp": 0,…' in table and f'{BASE + 1} | {{"temp": 1,…' in table
        assert '"dev": "a7"}' not in table
    finally:
        term.kill()
