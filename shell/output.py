r"""Where a statement's rows go: the terminal, the pager (:mod:`shell.pager`) or a ``\o`` file.

Only rows go there. Messages, footers and errors stay on the shell's own streams, so after
``\o rows.csv`` the file holds the data and the terminal still says what happened. A file gets
the text a pipe would get: ``csv`` keeps the exact text, and binary stays ``\x`` hex (the rules of
:mod:`shell.formats`); progress lines are drawn on the terminal, never in the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from raftkv.errors import RaftKVError

from .pager import PagedTerminal, pager_command

if TYPE_CHECKING:
    from .runner import Shell

MIN_SCREEN_LINES = 5  # below this a terminal is too small for repeated headers or a pager


class ResultStream(Protocol):
    """Where one statement's rows are written."""

    tty: bool  # the text will be shown on a terminal (escape it for the screen)

    @property
    def progress(self) -> bool:
        """Whether a progress line may be drawn on the shell's terminal between pages."""
        ...

    @property
    def screen_lines(self) -> int:
        """Height of a screen, to repeat a table's header on (0: print it once)."""
        ...

    def write(self, text: str) -> None:
        """Write some of the result."""
        ...

    def flush(self) -> None:
        """Make what was written visible."""
        ...

    def close(self) -> None:
        """The statement ended or was stopped: finish the output (may wait for a pager)."""
        ...


class Writable(Protocol):
    """A text stream, as far as results need one."""

    def write(self, text: str, /) -> object:
        """Write ``text``."""
        ...

    def flush(self) -> None:
        """Flush."""
        ...


class OutputError(RaftKVError):
    """Writing results to the ``\\o`` file failed."""


class Direct:
    """Rows written straight to a stream (a terminal without pager, a pipe, a file)."""

    def __init__(self, stream: Writable, *, tty: bool, progress: bool, screen_lines: int = 0) -> None:
        self.stream = stream
        self.tty = tty
        self.progress = progress
        self.screen_lines = screen_lines

    def write(self, text: str) -> None:
        """Write ``text`` to the stream."""
        self.stream.write(text)

    def flush(self) -> None:
        """Flush the stream."""
        self.stream.flush()

    def close(self) -> None:
        """Flush: the stream stays open for the next statement."""
        self.stream.flush()


class OutputFile:
    """The file ``\\o FILE`` sends results to, open until ``\\o`` alone (or another file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # newline="": lines end in "\n" exactly as rendered; odd text must not fail a statement
        self._file = open(os.path.expanduser(path), "w", encoding="utf-8", errors="backslashreplace",
                          newline="")

    def write(self, text: str) -> None:
        """Append ``text``; a failure (disk full) is an :class:`OutputError` naming the file."""
        try:
            self._file.write(text)
        except OSError as exc:
            raise OutputError(f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def flush(self) -> None:
        """Flush to the file, so it is complete after each statement."""
        try:
            self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Close the file (errors of a last flush are reported as :class:`OutputError`)."""
        try:
            self._file.close()
        except OSError as exc:
            raise OutputError(f"cannot write to {self.path}: {exc.strerror or exc}") from None


def terminal_size(stream: TextIO) -> os.terminal_size | None:
    """The size of the terminal ``stream`` writes to, or None if it is none (or cannot be told)."""
    try:
        fd = stream.fileno()
        return os.get_terminal_size(fd) if os.isatty(fd) else None
    except (AttributeError, OSError, ValueError):
        return None


@dataclass
class PagerState:
    """What one shell session learned about its pager (each :class:`~shell.runner.Shell` has its own)."""

    warned: set[str] = field(default_factory=set)  # problems already reported, once each
    # why the pager is not used any more: it failed (exited with a status above 0); the rest of
    # the session prints results directly rather than hide each one behind it
    failed: str | None = None


def open_results(shell: Shell) -> ResultStream:
    """Where the next statement's rows go: the ``\\o`` file, the pager, or ``shell.out``.

    The pager is used only when ``shell.out`` is a terminal whose size is known, ``\\pager`` is on
    and no ``\\o`` file is set. On a terminal, a table repeats its header once per screen.
    """
    tty = shell._is_tty()
    if shell.output_file is not None:
        return Direct(shell.output_file, tty=False, progress=tty)
    if not tty:
        return Direct(shell.out, tty=False, progress=False)
    size = terminal_size(shell.out)
    if size is None or size.lines < MIN_SCREEN_LINES:
        return Direct(shell.out, tty=True, progress=True)
    state = shell.pager_state
    if shell.settings.pager and state.failed is None:
        command, problem = pager_command()
        if command is not None:
            def failed(message: str) -> None:
                state.failed = message
                shell.err.write(f"warning: {message}; printing results directly for the rest of the session "
                                "(\\pager on tries it again)\n")
                shell.err.flush()

            return PagedTerminal(shell.out, command, size.lines, size.columns, on_failure=failed)
        if problem is not None and problem not in state.warned:
            state.warned.add(problem)
            shell.err.write(f"warning: {problem} (\\pager off stops this warning)\n")
            shell.err.flush()
    return Direct(shell.out, tty=True, progress=True, screen_lines=size.lines - 1)
