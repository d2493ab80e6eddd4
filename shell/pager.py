"""The pager: results taller than the screen are shown through ``$PAGER``, as psql does.

:class:`PagedTerminal` holds back the first screenful of a result. If the result ends within it,
the text goes straight to the terminal; once it grows past it, the pager starts, gets what was
held, and the rest streams into its standard input. A result of any size is therefore never held
whole, and the pipe to the pager throttles the query while the person reads. A pager that quits
early (``q`` in less: it exits with status 0) raises :class:`OutputClosed`, which the shell
reports as a cancelled statement. A pager that *fails* (exits with a status above 0: a bad option
in ``$PAGER``, ``less`` with no usable terminal) is reported, and the result is printed directly:
what was sent to it again (up to :data:`REPLAY_CHARS`), then the rest. :func:`pager_command` picks
the program; :class:`ScreenFill` is the pure measure of when output no longer fits.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import TextIO

from .formats import text_width

DEFAULT_PAGERS = ("less -S", "more")  # psql's choice (less), chopping long lines as pgcli does
PAGER_ENV = "PAGER"
# text sent to a pager that is kept to print again if the pager fails: a failing pager exits at
# once, long before a result this long went to it (one that quits later has shown the text)
REPLAY_CHARS = 1 << 20
EXIT_WAIT_SECONDS = 5.0  # how long a pager whose input broke is given to exit, to learn its status


class OutputClosed(Exception):
    """The reader of the results (the pager) went away before they ended."""


def pager_command(env: Mapping[str, str] | None = None,
                  which: Callable[[str], str | None] = shutil.which) -> tuple[str | None, str | None]:
    """The pager to run, and why there is none.

    ``$PAGER`` wins; set but empty, it means no pager (as in psql). Otherwise ``less -S``, or
    ``more``, whichever is installed. Returns ``(command, None)``, ``(None, None)`` when no pager is
    wanted or none is installed, and ``(None, problem)`` when ``$PAGER`` names a program that is
    not there (then the results go to the terminal directly, which beats a pager that fails).
    """
    env = os.environ if env is None else env
    if PAGER_ENV in env:
        command = env[PAGER_ENV].strip()
        if not command:
            return None, None
        program = _program(command)
        if program is not None and which(program) is None:
            return None, f"pager {program!r} (from ${PAGER_ENV}) not found; printing results directly"
        return command, None
    for command in DEFAULT_PAGERS:
        if which(command.split()[0]) is not None:
            return command, None
    return None, None


def _program(command: str) -> str | None:
    """The program a shell command line runs first, when it is plain enough to tell."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or "=" in words[0] or words[0] in ("exec", "env", "command"):
        return None  # FOO=1 less, exec less: leave the judging to sh
    return words[0]


class ScreenFill:
    """Counts the screen rows text takes on a terminal ``columns`` wide, until more than ``room``.

    A line wider than the terminal wraps onto several rows. Only the text up to the point where
    the room is exceeded is measured: what comes after goes to the pager anyway.
    """

    def __init__(self, room: int, columns: int) -> None:
        self.room = max(1, room)
        self.columns = max(1, columns)
        self.used = 0
        self._open_line = 0  # width of a line begun but not yet ended by "\n"

    @property
    def full(self) -> bool:
        """Whether the text so far needs more rows than the room."""
        return self.used > self.room

    def add(self, text: str) -> bool:
        """Count ``text``; returns :attr:`full`."""
        pos = 0
        while not self.full and pos < len(text):
            end = text.find("\n", pos)
            if end < 0:
                self._open_line += text_width(text[pos:])
                break
            width = self._open_line + text_width(text[pos:end])
            self._open_line = 0
            self.used += max(1, -(-width // self.columns))
            pos = end + 1
        return self.full


class _Pager:
    """A running pager process, fed through an unbuffered pipe so that nothing waits in a buffer
    when it is closed (a flush into a full pipe would block until the person quits the pager)."""

    def __init__(self, command: str, encoding: str) -> None:
        self.command = command
        self.encoding = encoding
        self.proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, bufsize=0)
        assert self.proc.stdin is not None
        self._stdin = self.proc.stdin

    def write(self, text: str) -> None:
        data = memoryview(text.encode(self.encoding, "backslashreplace"))
        try:
            while data:
                data = data[os.write(self._stdin.fileno(), data):]
        except (BrokenPipeError, ValueError):  # ValueError: already closed after an earlier failure
            raise OutputClosed("the pager exited") from None

    def finish(self) -> int:
        """Close the pager's input and wait until the person quits it; returns its exit status."""
        try:
            self._stdin.close()
        except OSError:
            pass
        while True:
            try:
                return self.proc.wait()
            except KeyboardInterrupt:
                continue  # the pager owns the terminal until it exits: Ctrl-C is its to handle

    def exit_status(self) -> int | None:
        """Its exit status once its input broke (it is exiting), or None if it does not exit soon."""
        try:
            return self.proc.wait(timeout=EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            return None


class PagedTerminal:
    """Results for a terminal of ``lines`` x ``columns``: direct if they fit, else through ``command``.

    A result fits when it takes at most ``lines - 2`` rows: the footer and the next prompt need the
    rest. Writes follow the shell's result-stream protocol (see :mod:`shell.output`).
    """

    tty = True

    def __init__(self, out: TextIO, command: str, lines: int, columns: int,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.out = out
        self.command = command
        # told (before the result is printed directly) when the pager fails: "pager 'X' exited with status N"
        self.on_failure = on_failure
        self.failure: str | None = None  # that message, once the pager failed
        self._sent: list[str] | None = []  # what went to the pager, to print if it fails (None: too much)
        self._sent_chars = 0
        self._quit = False  # the pager was quit before the result ended (OutputClosed raised)
        # less shows a screen of lines - 1 rows (its last row is the prompt)
        self.screen_lines = max(0, lines - 1)
        self._fill = ScreenFill(lines - 2, columns)
        self._held: list[str] = []
        self._pager: _Pager | None = None

    @property
    def paging(self) -> bool:
        """Whether the pager has started."""
        return self._pager is not None

    @property
    def progress(self) -> bool:
        """A progress line may be drawn only while the terminal is still the shell's."""
        return self._pager is None

    def write(self, text: str) -> None:
        """Hold ``text`` while it fits the screen, else send it (and what was held) to the pager."""
        if self._pager is not None:
            self._to_pager(text)
            return
        if self._fill.full:  # the pager could not start: the terminal gets everything
            self.out.write(text)
            return
        self._held.append(text)
        if self._fill.add(text):
            self.out.flush()  # a progress line's erasure must reach the terminal before the pager
            try:
                self._pager = _Pager(self.command, getattr(self.out, "encoding", None) or "utf-8")
            except OSError:  # no process to be had (fork failed): better unpaged than lost
                self.close()
                return
            held, self._held = "".join(self._held), []
            self._to_pager(held)

    def _to_pager(self, text: str) -> None:
        """Send ``text`` to the pager (kept, to print again should it fail); a pager that quit
        raises :class:`OutputClosed`, one that failed has the result printed directly."""
        assert self._pager is not None
        if self._sent is not None:
            self._sent_chars += len(text)
            if self._sent_chars > REPLAY_CHARS:
                self._sent = None
            else:
                self._sent.append(text)
        try:
            self._pager.write(text)
        except OutputClosed:
            status = self._pager.exit_status()
            if status is None or status <= 0:  # quit (0), or killed by a signal (Ctrl-C): cancelled
                self._quit = True
                raise
            self._fall_back(status)

    def _fall_back(self, status: int) -> None:
        """The pager failed with ``status``: say so and print the result directly from here on,
        beginning with what was sent to it."""
        pager, self._pager = self._pager, None
        if pager is not None:
            pager.finish()  # it has exited: this closes the pipe and reaps it
        self.failure = f"pager {self.command!r} exited with status {status}"
        if self.on_failure is not None:
            self.on_failure(self.failure if self._sent is not None else
                            f"{self.failure} (the start of this result went to it and is not shown)")
        sent, self._sent = self._sent, None
        self.out.write("".join(sent or ()))

    def flush(self) -> None:
        """Flush the terminal once the text no longer fits; held text waits until it is known."""
        if self._pager is None and self._fill.full:
            self.out.flush()

    def close(self) -> None:
        """The result ended (or was stopped): print what was held, or wait for the pager to be quit."""
        if self._pager is None:
            held, self._held = "".join(self._held), []
            self.out.write(held)
            self.out.flush()
        else:
            status = self._pager.finish()
            # a status above 0 is a failure, whether it came before or after its input ended (a
            # quit is 0); once the statement was cancelled for a quit, nothing is printed again
            if status > 0 and not self._quit:
                self._fall_back(status)
                self.out.flush()
