"""Small helpers shared by test packages."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import psutil

from raftkv.protocol.codec import NEED_DATA, FrameDecoder
from raftkv.routing.ranges import even_split_points
from raftkv.routing.shardmap import DEFAULT_SHARDS

T = TypeVar("T")


def recv_message(sock: socket.socket) -> Any:
    """Read one framed msgpack message from ``sock``; None if the peer hangs up first."""
    dec = FrameDecoder()
    while (msg := dec.next_message()) is NEED_DATA:
        data = sock.recv(65536)
        if not data:
            return None
        dec.receive_data(data)
    return msg


def keys_in_each_shard(per_shard: int = 2, shards: int = DEFAULT_SHARDS) -> list[int]:
    """``per_shard`` keys near the start of each of a new cluster's ``shards`` even shards."""
    return [start + 1 + i for start in [0, *even_split_points(shards)] for i in range(per_shard)]


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05,
               ignore: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """Call ``predicate()`` until it returns something truthy, and return that value.

    The one way tests wait: on a condition, never for a guessed time.  An exception of a type in
    ``ignore`` counts as "not yet" (a node still starting refuses connections).  After ``timeout``
    seconds, raise AssertionError naming ``what`` and the last value or exception seen, so a
    failure says what never happened and how far it got.  ``timeout`` bounds a hang, it is not
    a measurement: pick it generously (a loaded CI machine is slow), and assert nothing about it.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_exc = exc
        else:
            if value:
                return value
            last, last_exc = value, None
        if time.monotonic() >= deadline:
            seen = f"last exception {last_exc!r}" if last_exc is not None else f"last value {last!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; {seen}") from last_exc
        time.sleep(interval)


def signal_ours(pids: Iterable[int] | None, path: str | os.PathLike[str], sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to each of ``pids`` (None: every process) still running with ``path`` (a test's
    unique directory) on its command line; return the PIDs signalled.

    A test records the PIDs of every node it ever started, but a node that died long ago may have
    lent its PID to an unrelated process: only a process that still names our directory is ours.
    With None, this also finds a node whose PID the test never learnt (a start that failed half way).
    """
    needle = os.path.realpath(path) + (os.sep if str(path).endswith(os.sep) else "")  # keep a final "/"
    hit = []
    for pid in set(pids) if pids is not None else psutil.pids():
        try:
            if pid != os.getpid() and any(needle in arg for arg in psutil.Process(pid).cmdline()):
                if sig == signal.SIGKILL:
                    os.kill(pid, signal.SIGCONT)  # a stopped process dies only once it runs again
                os.kill(pid, sig)
                hit.append(pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return hit


def ctrl_c_when_main_waits_for_a_future(timeout: float = 30.0) -> None:
    """Send SIGINT to the main thread, as Ctrl-C does, once it waits in ``Future.result()``.

    Call it from a worker thread (a fake ``put_many``). The wait is where a real Ctrl-C usually
    finds an import, the cluster being slower than the reading; and Python 3.11 may leave a
    signal that arrives while the main thread runs bytecode unhandled until the main thread
    next blocks, which would make the test depend on timing.
    """
    main = threading.main_thread().ident or 0

    def stack() -> Iterator[Any]:
        frame = sys._current_frames().get(main)
        while frame is not None:
            yield frame
            frame = frame.f_back

    def result_frame() -> Any:
        return next((f for f in stack() if f.f_code.co_name == "result" and f.f_code.co_filename.endswith(
            os.path.join("concurrent", "futures", "_base.py"))), None)

    waiting = wait_until(result_frame, timeout, "the main thread waiting for a future", interval=0.005)
    # The main thread drops the GIL inside lock.acquire() just before it sleeps on the futex, and
    # that is exactly when this thread gets the GIL back: a signal sent then is only noted by
    # Python's handler, no system call is interrupted, and the main thread sleeps on (on a loaded
    # machine, often). A real Ctrl-C cannot aim at that window; this helper is woken into it. So
    # send again while that same result() call still waits: a new wait (the cancel's own) is a
    # different frame and gets no second Ctrl-C.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.05)
        if not any(f is waiting for f in stack()):
            return
