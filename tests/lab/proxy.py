"""A user-space TCP proxy for one directed peer link (src -> dst) that the nemesis can cut and heal.

Each raftkv node sends Raft traffic to a peer only on the connection it dialed itself
(``replication/transport.py``), so making node *src* dial *dst* through a :class:`LinkProxy`
(``raftkv node --peer-via dst=HOST:PORT``) puts the src -> dst direction under our control.
A partition between A and B cuts both A -> B and B -> A.  Client traffic never passes here.

Two ways to cut, both healed by :meth:`LinkProxy.heal`:

* ``"reset"``: live connections are closed; new ones are accepted and closed at once (the dialer
  sees its link drop and keeps redialing);
* ``"blackhole"``: bytes in both directions are read and dropped, on live and new connections alike,
  so the dialer believes its link is up while nothing arrives -- a silent network partition.  Those
  streams have holes, so healing closes them and the nodes dial afresh.

Threads and blocking sockets; bytes are only copied, never decoded.
"""

from __future__ import annotations

import contextlib
import socket
import threading

HOST = "127.0.0.1"
MODES = ("reset", "blackhole")
_CHUNK = 64 * 1024
_ACCEPT_POLL = 0.2  # how often the accept loop notices close(); a blocked accept() ignores close


class _Pipe:
    """One proxied connection: the dialer's socket and ours to the target (None while blackholed)."""

    def __init__(self, down: socket.socket, up: socket.socket | None, blackholed: bool) -> None:
        self.down = down
        self.up = up
        self.blackholed = blackholed
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for s in (self.down, self.up):
            if s is not None:
                # shutdown first: it wakes a thread blocked in recv()/sendall() on this socket
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()


class LinkProxy:
    """Listen on ``HOST:port`` (0: the kernel picks) and forward each connection to ``target``."""

    def __init__(self, target: tuple[str, int], port: int = 0, name: str = "") -> None:
        self.target = target
        self.name = name or f"proxy->{target[1]}"
        self._listener = socket.create_server((HOST, port), backlog=64)
        self._listener.settimeout(_ACCEPT_POLL)
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        self._mode: str | None = None  # None: open; else a cut mode
        self._closed = False
        self.forwarded = 0  # bytes copied to the other side (both directions), for tests and stats
        self.connections = 0  # connections accepted
        self._thread = threading.Thread(target=self._accept_loop, name=f"lab-{self.name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """Where dialers should connect."""
        return self._listener.getsockname()[:2]

    @property
    def is_cut(self) -> bool:
        """Whether the link is cut now."""
        return self._mode is not None

    def cut(self, mode: str = "reset") -> None:
        """Stop the flow of bytes: ``"reset"`` closes connections, ``"blackhole"`` silently drops bytes."""
        if mode not in MODES:
            raise ValueError(f"cut mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self._mode = mode
            pipes = list(self._pipes)
            for p in pipes:
                p.blackholed = True  # from now on nothing is forwarded, whatever the mode
        if mode == "reset":
            for p in pipes:
                self._drop(p)

    def heal(self) -> None:
        """Let bytes flow again; connections that lost bytes while blackholed are closed (dial afresh)."""
        with self._lock:
            self._mode = None
            holed = [p for p in self._pipes if p.blackholed]
        for p in holed:
            self._drop(p)

    def close(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._closed = True
            pipes = list(self._pipes)
        for p in pipes:
            self._drop(p)
        # shutdown first: a thread blocked in accept() keeps a merely closed listener accepting
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> LinkProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _drop(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)
        pipe.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            down.settimeout(None)
            self.connections += 1
            mode = self._mode
            if mode == "reset":
                down.close()  # refused: the dialer sees the link drop and will try again
                continue
            up = None
            if mode is None:
                try:
                    up = socket.create_connection(self.target, timeout=2.0)
                    up.settimeout(None)
                    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    down.close()  # target down: the dialer sees what it would see without us
                    continue
            down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(down, up, blackholed=mode == "blackhole")
            with self._lock:
                if self._closed or self._mode != mode:
                    # the link changed (or closed) while we dialed: start over with this dialer
                    pipe.close()
                    continue
                self._pipes.add(pipe)
            self._spawn_pump(pipe, pipe.down, pipe.up)
            if up is not None:
                self._spawn_pump(pipe, up, down)

    def _spawn_pump(self, pipe: _Pipe, src: socket.socket, dst: socket.socket | None) -> None:
        threading.Thread(target=self._pump, args=(pipe, src, dst), name=f"lab-{self.name}-pump",
                         daemon=True).start()

    def _pump(self, pipe: _Pipe, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                if pipe.blackholed or dst is None:
                    continue  # dropped on the floor: the sender cannot tell
                dst.sendall(data)
                self.forwarded += len(data)
        except OSError:
            pass
        # either side ended: end both, as a dropped link would
        self._drop(pipe)
