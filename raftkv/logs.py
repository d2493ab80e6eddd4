"""Rate-limited logging: what a hostile or broken peer or client cannot flood.

One bad message per packet, or one failed accept per loop turn, would otherwise fill the log and
hide everything else; one line per key per interval keeps it readable and its size bounded, and the
count of lines held back says how bad it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

COMPLAINT_INTERVAL = 10.0  # seconds between two log lines with the same key


class LogLimiter:
    """At most one log line per key per ``interval`` seconds; the lines in between are counted."""

    def __init__(self, logger: logging.Logger, interval: float = COMPLAINT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._quiet: dict[str, tuple[float, int]] = {}  # key -> (silent until, lines suppressed since)

    def log(self, key: str, level: int, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` logged within the interval; True if it was logged."""
        now = self._clock()
        until, suppressed = self._quiet.get(key, (0.0, 0))
        if now < until:
            self._quiet[key] = (until, suppressed + 1)
            return False
        if suppressed:
            msg += " (and %d more like it since the last such line)"
            args = (*args, suppressed)
        self._log.log(level, msg, *args, exc_info=exc_info)
        self._quiet[key] = (now + self._interval, 0)
        return True

    def flush(self, final: bool = False) -> None:
        """Report counts of lines suppressed in finished intervals (in all, if ``final``); forget those keys."""
        now = self._clock()
        for key, (until, suppressed) in list(self._quiet.items()):
            if now >= until or final:
                del self._quiet[key]
                if suppressed:
                    self._log.warning("%s: %d more like the last line about it", key, suppressed)
