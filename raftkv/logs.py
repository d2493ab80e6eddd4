"""Rate-limited logging: what a hostile or broken peer or client cannot flood.

One bad message per packet, or one failed accept per loop turn, would otherwise fill the log and
hide everything else; one line per key per interval keeps it readable and its size bounded, and the
count of lines held back says how bad it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC
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

    def log(self, key: str, level: int, msg: str, *args: Any, exc_info: bool = False,
            extra: dict[str, Any] | None = None) -> bool:
        """Log ``msg % args`` unless ``key`` logged within the interval; True if it was logged."""
        now = self._clock()
        until, suppressed = self._quiet.get(key, (0.0, 0))
        if now < until:
            self._quiet[key] = (until, suppressed + 1)
            return False
        if suppressed:
            msg += " (and %d more like it since the last such line)"
            args = (*args, suppressed)
        self._log.log(level, msg, *args, exc_info=exc_info, extra=extra)
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


# the fields of an event line beyond its message: ``log.info(msg, extra=event("split", shard=...))``
def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra`` of a log call that records an event: its name and fields (shard, term, ...).

    The text format shows only the message, which names them too; the JSON format
    (``--log-format json``) gives each its own key, for log pipelines to filter on.
    """
    return {"raftkv_event": {"event": name, **fields}}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, event fields, and
    the traceback as one string when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        import json
        from datetime import datetime

        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "raftkv_event", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


LOG_FORMATS = ("text", "json")


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Set up the root logger of a node process in ``fmt`` (one of :data:`LOG_FORMATS`)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
