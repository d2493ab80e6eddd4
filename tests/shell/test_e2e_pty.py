"""The interactive shell on a real terminal (a pty) against a real cluster: Ctrl-C cancels a long
SELECT and the prompt comes back."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

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


def open_shell(seeds: str) -> Terminal:
    """The shell on ``seeds`` in a pseudo-terminal, once it prompts (the caller closes it)."""
    env = {**cli_env(), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    term = Terminal([sys.executable, "-m", "raftkv", "shell", "--connect", seeds], env)
    try:
        term.wait_for(r"raftkv> ")
    except BaseException:
        term.kill()
        raise
    return term


def test_ctrl_c_cancels_a_running_select_and_the_prompt_returns(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds)
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
