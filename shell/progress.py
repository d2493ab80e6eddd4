"""A progress line for long copies: ``COPY`` in the shell, ``raftkv import`` and ``raftkv export``.

It is the terminal side of :mod:`raftkv.bulk`, which only calls a :data:`raftkv.bulk.Progress`
function; the line is drawn on stderr, and only when that is a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def progress_text(label: str, rows: int, elapsed: float, fraction: float | None = None) -> str:
    """``import: 120,000 rows, 45,000 rows/s, 34 %``: one progress line, without its terminal codes."""
    rate = f", {rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
    share = f", {fraction * 100:.0f} %" if fraction is not None else ""
    return f"{label}: {rows:,} row{'' if rows == 1 else 's'}{rate}{share}"


class ProgressLine:
    """A progress line that rewrites itself on ``stream``, if ``stream`` is a terminal (else nothing).

    It appears once an operation has run ``after`` seconds, and changes at most every
    ``interval`` seconds; :meth:`clear` removes it. Call it as a :data:`Progress`.
    """

    def __init__(self, stream: TextIO, label: str, *, after: float = 0.3, interval: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        isatty = getattr(stream, "isatty", None)
        try:
            self.enabled = bool(isatty and isatty())
        except ValueError:  # a closed stream
            self.enabled = False
        self.stream = stream
        self.label = label
        self.after = after
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.rows = 0
        self._shown_at: float | None = None

    def __call__(self, rows: int, fraction: float | None = None) -> None:
        self.rows = rows
        if not self.enabled:
            return
        now = self.clock()
        elapsed = now - self.started
        if elapsed < self.after or (self._shown_at is not None and now - self._shown_at < self.interval):
            return
        self.stream.write("\r\x1b[2K" + progress_text(self.label, rows, elapsed, fraction))
        self.stream.flush()
        self._shown_at = now

    def clear(self) -> None:
        """Erase the line, if it was shown."""
        if self._shown_at is not None:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown_at = None
