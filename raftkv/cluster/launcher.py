"""Local cluster manager: start, inspect and stop N raftkv nodes as detached processes on 127.0.0.1.

A cluster directory looks like this::

    DATA_DIR/cluster.json   node ids and ports, shard count, replication, Raft options (fixed at first start),
                            and which nodes joined later (``add_node``)
    DATA_DIR/.lock          serialises launcher commands on this directory
    DATA_DIR/secret         the cluster secret (mode 0600) every node authenticates its peer links with
    DATA_DIR/nX/            node nX's ``--data-dir``
    DATA_DIR/nX/pid         PID of node nX while it runs
    DATA_DIR/nX/node.log    node nX's stdout and stderr, appended across restarts

Everything here is keyed by that directory, so ``raftkv cluster start/status/stop`` can run in
separate processes, and nodes outlive the command that started them.

Nodes come in two kinds.  The *founders* (n1..nN of the first start) all run with the same
``--nodes`` list, the founders' own: it is their cluster identity, which a node checks at every
start, so it never changes, not even when a founder is removed.  A node added later
(:func:`add_node`) runs with ``--nodes`` naming only itself and ``--join`` naming the others; the
cluster admits it on its first start, and it finds what it was told in its data dir afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ..client import rpc
from ..client.rpc import call, call_any
from ..errors import InvalidArgument, RaftKVError, Unavailable
from ..routing.shardmap import DEFAULT_SHARDS, META_GROUP, Shard
from ..server import maplink
from ..server.config import (
    Credentials,
    NodeAddress,
    format_hostport,
    format_nodes,
    format_peer_via,
    parse_hostport,
    parse_nodes,
    read_token_file,
)

CLUSTER_FILE = "cluster.json"
PID_FILE = "pid"
LOG_FILE = "node.log"
LOCK_FILE = ".lock"
SECRET_FILE = "secret"
HOST = "127.0.0.1"
PEER_PORT_OFFSET = 100  # with --base-port P: client ports P.., peer ports P+100..
# the one default of every command that works on the local cluster (`raftkv up`, `shell`, `cluster status`)
DEFAULT_DATA_DIR = "./raftkv-data"
# a new local cluster listens on 7401.. for clients (what the README's examples and docker-compose's
# published ports use, so addresses can be copied between them) and 7501.. for peers, when those are free
DEFAULT_BASE_PORT = 7401
# how long a launcher waits for another one that is creating a cluster on preferred ports, and how long
# it then holds that claim itself while its nodes bind them (see _PortClaim)
PORT_CLAIM_WAIT = 15.0
PROBE_TIMEOUT = 1.0  # per RPC; a live node on loopback answers in milliseconds
_FORMAT_VERSION = 1

# Popen objects of nodes this process spawned: kept so that a node that exits is reaped (not left a
# zombie until we exit) and so that Popen does not warn about a child still running when collected.
_CHILDREN: dict[int, subprocess.Popen] = {}
_EXITS: dict[int, int] = {}  # PID -> exit status of a node we spawned and reaped (negative: killed by signal)


@dataclass(frozen=True)
class ClusterInfo:
    """A local cluster's layout (from ``cluster.json``) and the PIDs of its running nodes."""

    data_dir: str
    nodes: tuple[NodeAddress, ...]
    shards: int
    replication: int
    raft: dict[str, Any] = field(default_factory=dict)
    pids: dict[str, int | None] = field(default_factory=dict)
    # node id -> {peer id -> address it dials that peer at}: the fault lab's proxies (node --peer-via)
    peer_via: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    # cluster settings every node runs with (SETTINGS): split_bytes, tail_stripes, stripe_writes_per_s, ...
    settings: dict[str, int] = field(default_factory=dict)
    # ids of the nodes (in ``nodes``) that joined a running cluster (add_node); the others are founders
    joined: tuple[str, ...] = ()
    # the founders' addresses, when a founder has been removed (empty: the nodes not in ``joined``);
    # the remaining founders keep running with the whole list, their cluster identity
    removed_founders: tuple[NodeAddress, ...] = ()
    # client-port security every node runs with (SECURITY: file paths, absolute): TLS and a client token
    security: dict[str, str] = field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        """Client addresses ("host:port"), in node order."""
        return [format_hostport(n.client) for n in self.nodes]

    @property
    def seeds(self) -> str:
        """Client addresses joined by commas, as clients take them."""
        return ",".join(self.addresses)

    @property
    def founders(self) -> tuple[NodeAddress, ...]:
        """The nodes the cluster was created with, removed ones included, in id order of creation."""
        kept = [n for n in self.nodes if n.id not in self.joined]
        return tuple(sorted([*kept, *self.removed_founders], key=lambda n: _id_number(n.id)))

    @property
    def nodes_spec(self) -> str:
        """The ``--nodes`` argument every founder runs with (nodes added later run with their own)."""
        return format_nodes(list(self.founders))

    def is_joined(self, node_id: str) -> bool:
        """Whether node ``node_id`` joined the running cluster rather than founding it."""
        return node_id in self.joined

    def node(self, node_id: str) -> NodeAddress:
        """The addresses of node ``node_id``."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise InvalidArgument(f"no node {node_id!r} in the cluster at {self.data_dir} "
                              f"(nodes: {', '.join(n.id for n in self.nodes)})")

    def node_dir(self, node_id: str) -> str:
        """Node ``node_id``'s own data directory."""
        return os.path.join(self.data_dir, node_id)

    def to_json(self) -> dict[str, Any]:
        """What ``cluster.json`` holds."""
        return {"version": _FORMAT_VERSION,
                "nodes": [{"id": n.id, "client": format_hostport(n.client), "peer": format_hostport(n.peer)}
                          for n in self.nodes],
                "shards": self.shards, "replication": self.replication, "raft": dict(self.raft),
                **({"settings": dict(self.settings)} if self.settings else {}),
                **({"joined": list(self.joined)} if self.joined else {}),
                **({"removed_founders": [{"id": n.id, "client": format_hostport(n.client),
                                          "peer": format_hostport(n.peer)} for n in self.removed_founders]}
                   if self.removed_founders else {}),
                **({"peer_via": {src: {dst: format_hostport(a) for dst, a in via.items()}
                                 for src, via in self.peer_via.items()}} if self.peer_via else {}),
                **({"security": dict(self.security)} if self.security else {})}

    def credentials(self) -> Credentials:
        """What a caller of these nodes' client ports presents (their token, TLS with their CA)."""
        token_file = self.security.get("client_token_file")
        return Credentials(token=read_token_file(token_file) if token_file else None,
                           tls="tls_cert" in self.security, tls_ca=self.security.get("tls_ca"))


# --- files ----------------------------------------------------------------------------------------


def _root(data_dir: str | os.PathLike[str]) -> str:
    # realpath: node processes are recognised by the --data-dir in their command line, so every
    # call must spell the directory the same way whatever the caller passed
    return os.path.realpath(os.fspath(data_dir))


def _write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a torn one."""
    tmp = f"{path}.tmp{os.getpid()}"
    # created with ``mode`` from the start (umask can only narrow it): a secret is never world-readable
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    """Hold an exclusive lock on the cluster directory (two concurrent starts must not both spawn n1)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LOCK_FILE), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _secret_path(info: ClusterInfo) -> str:
    return os.path.join(info.data_dir, SECRET_FILE)


def _ensure_secret(info: ClusterInfo) -> str | None:
    """The cluster's secret file, created (random, mode 0600) if the cluster has none and no node runs.

    Without a secret any local process that names a node id is a peer and can send Raft messages.
    A cluster made by an older launcher has no secret, and its running nodes accept only
    unauthenticated peers: a node started now *with* a secret could talk to none of them.  So the
    secret appears when no node of the cluster is running (first start, or the next start of a
    stopped cluster), and all its nodes get it together.  Nodes started meanwhile go without, like
    the running ones.  Call with the directory lock held.
    """
    path = _secret_path(info)
    if os.path.exists(path):
        return path
    if any(_live_pid(info, n.id) is not None for n in info.nodes):
        return None
    _write_atomic(path, secrets.token_hex(32) + "\n", mode=0o600)
    return path


def _save(info: ClusterInfo) -> None:
    """Write ``cluster.json`` (call with the directory lock held)."""
    _write_atomic(os.path.join(info.data_dir, CLUSTER_FILE), json.dumps(info.to_json(), indent=2) + "\n")
    _present_credentials(info)


def _present_credentials(info: ClusterInfo) -> None:
    """Have every rpc.call to this cluster's nodes (status, probes, membership) present its token and
    TLS: they are registered per address, so clusters of one process (tests) keep theirs apart."""
    try:
        creds = info.credentials()
    except InvalidArgument:
        # the token file is gone: stop, status and the rest must still work as far as they can
        creds = Credentials(tls="tls_cert" in info.security, tls_ca=info.security.get("tls_ca"))
    # registered even when empty: a port of a cluster gone may serve another one now
    rpc.remember_credentials([*info.addresses, *(format_hostport(n.client) for n in info.removed_founders)], creds)


def _read_config(root: str) -> ClusterInfo | None:
    path = os.path.join(root, CLUSTER_FILE)
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc}") from None
    try:
        nodes = tuple(NodeAddress(str(n["id"]), parse_hostport(n["client"]), parse_hostport(n["peer"]))
                      for n in raw["nodes"])
        peer_via = {str(src): {str(dst): parse_hostport(a) for dst, a in via.items()}
                    for src, via in (raw.get("peer_via") or {}).items()}
        ids = {n.id for n in nodes}
        joined = tuple(str(i) for i in raw.get("joined") or [])
        if not set(joined) <= ids:
            raise ValueError(f"joined names nodes not in the node list: {sorted(set(joined) - ids)}")
        removed = tuple(NodeAddress(str(n["id"]), parse_hostport(n["client"]), parse_hostport(n["peer"]))
                        for n in raw.get("removed_founders") or [])
        info = ClusterInfo(root, nodes, int(raw["shards"]), int(raw["replication"]), dict(raw.get("raft") or {}),
                           peer_via=peer_via, settings=check_settings(raw.get("settings") or {}),
                           joined=joined, removed_founders=removed,
                           security=check_security(raw.get("security") or {}, files=False))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"{path} is malformed: {exc!r}") from None
    _present_credentials(info)
    return info


def client_security(data_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The client-port security of the cluster in ``data_dir`` (:data:`SECURITY` names -> file
    paths); {} if it has none, or there is no cluster there."""
    info = _read_config(_root(data_dir))
    return dict(info.security) if info is not None else {}


def load(data_dir: str | os.PathLike[str]) -> ClusterInfo:
    """The cluster in ``data_dir`` with the PIDs of its live nodes; InvalidArgument if there is none."""
    root = _root(data_dir)
    info = _read_config(root)
    if info is None:
        raise InvalidArgument(f"no cluster in {root} (no {CLUSTER_FILE}); create one with `raftkv cluster start`")
    return replace(info, pids={n.id: _live_pid(info, n.id) for n in info.nodes})


def addresses(data_dir: str | os.PathLike[str]) -> list[str]:
    """Client addresses of the cluster in ``data_dir``."""
    info = _read_config(_root(data_dir))
    if info is None:
        raise InvalidArgument(f"no cluster in {_root(data_dir)} (no {CLUSTER_FILE})")
    return info.addresses


# --- ports ----------------------------------------------------------------------------------------


# its own generator: the global one belongs to callers (hypothesis tests watch it for strategies)
_SHUFFLER = random.Random()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux's default if unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now.

    Taken below the kernel's ephemeral range when there is room: a node that restarts binds its
    old ports again, and a port from that range may meanwhile be the local end of any outgoing
    connection on the machine (a restart then failed with "address already in use").
    """
    lo, _ = _ephemeral_range()
    pool = range(max(1024, lo - 12_000), lo) if lo - 1024 >= 4 * count else range(0)
    socks: list[socket.socket] = []
    try:
        # hold every socket until all are bound, so no port is handed out twice
        for port in _SHUFFLER.sample(pool, min(len(pool), 64 * count)) if pool else ():
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:  # no room below the range (or all taken): the kernel's choice
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_busy(port: int) -> bool:
    # SO_REUSEADDR as the node's own listeners use it: a port left in TIME_WAIT by a previous run is
    # fine, one with a live listener is not
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def default_ports(nodes: int) -> list[int] | None:
    """The ports a new local cluster of ``nodes`` nodes prefers: client ports 7401.., then peer ports 7501..

    None when that layout does not fit (more than :data:`PEER_PORT_OFFSET` nodes): such a cluster
    simply takes free ports.
    """
    if not 1 <= nodes <= PEER_PORT_OFFSET:
        return None
    return ([DEFAULT_BASE_PORT + i for i in range(nodes)]
            + [DEFAULT_BASE_PORT + PEER_PORT_OFFSET + i for i in range(nodes)])


def choose_ports(wanted: Sequence[int], is_free: Callable[[int], bool]) -> tuple[list[int] | None, list[int]]:
    """``(wanted, [])`` if ``is_free`` says every wanted port is free, else ``(None, the taken ones)``.

    All or nothing: a cluster on half its usual ports would only confuse.  Every port is asked
    about, so that a message can name all the taken ones.  :class:`InvalidArgument` for a port
    outside 1..65535 or one wanted twice.
    """
    wanted = list(wanted)
    bad = [p for p in wanted if type(p) is not int or not 1 <= p <= 65535]
    if bad:
        raise InvalidArgument(f"not a TCP port: {', '.join(map(str, bad))}")
    twice = sorted({p for p in wanted if wanted.count(p) > 1})
    if twice:
        raise InvalidArgument(f"ports wanted twice: {', '.join(map(str, twice))}")
    taken = [p for p in wanted if not is_free(p)]
    return (None, taken) if taken else (wanted, [])


class _PortClaim:
    """A lock shared by every launcher on this machine, held from "the preferred ports are free" until
    the new cluster's nodes listen on them.

    Without it two clusters created at the same moment (two test runs, or a test and a developer's
    ``raftkv up``) could both find 7401 free before either node has bound it, and one of them would
    fail to start.  The lock is a file in the temporary directory; if it cannot be opened (another
    user's file), the claim is simply not had, and the caller takes free ports.
    """

    PATH = os.path.join(tempfile.gettempdir(), "raftkv-port-claim.lock")

    def __init__(self) -> None:
        self._fd: int | None = None

    def acquire(self, timeout: float = PORT_CLAIM_WAIT) -> bool:
        """Take the claim, waiting up to ``timeout`` s for a launcher that holds it; whether it was had."""
        try:
            fd = os.open(self.PATH, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write access
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
                continue
            self._fd = fd
            return True

    @property
    def held(self) -> bool:
        """Whether this launcher holds the claim."""
        return self._fd is not None

    def release(self) -> None:
        """Let the next launcher look (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def _preferred_ports(claim: _PortClaim, wanted: Sequence[int], nodes: int,
                     notice: Callable[[str], None] | None) -> list[int] | None:
    """``wanted`` (client ports, then peer ports) if they are all free, with ``claim`` held; else None,
    after telling ``notice`` why."""
    if len(wanted) != 2 * nodes:
        raise InvalidArgument(f"{nodes} nodes need {2 * nodes} preferred ports (a client and a peer port each), "
                              f"not {len(wanted)}")
    choose_ports(wanted, lambda p: True)  # refuses malformed lists before anything waits
    which = f"{_port_runs(wanted[:nodes])} (peers {_port_runs(wanted[nodes:])})"
    if not claim.acquire():
        why = "another raftkv cluster is being created on this machine"
    else:
        chosen, taken = choose_ports(wanted, lambda p: not _port_busy(p))
        if chosen is not None:
            return chosen
        claim.release()
        why = f"port{'s' if len(taken) > 1 else ''} {_port_runs(taken)} already in use on {HOST}"
    if notice is not None:
        notice(f"{why}: the new cluster takes free ports instead of {which}")
    return None


def _port_runs(ports: Sequence[int]) -> str:
    """``7401-7403, 7501``: ports in the given order, consecutive runs shortened."""
    runs: list[list[int]] = []
    for p in ports:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def _wait_listening(info: ClusterInfo, timeout: float) -> None:
    """Return once every port of ``info`` has a listener, a node has exited, or ``timeout`` has passed."""
    ports = [p for n in info.nodes for p in (n.client[1], n.peer[1])]
    deadline = time.monotonic() + timeout
    while not all(_port_busy(p) for p in ports) and time.monotonic() < deadline:
        if any(_live_pid(info, n.id) is None for n in info.nodes):
            return  # it will not bind now; _wait_started says why
        time.sleep(0.05)


def _new_layout(root: str, nodes: int, base_port: int | None, shards: int, replication: int,
                raft: dict[str, Any], ports: Sequence[int] | None = None) -> ClusterInfo:
    """A new cluster's layout: ``ports`` (client ports, then peer ports) if given, else from
    ``base_port``, else free ports."""
    if nodes < 1:
        raise InvalidArgument(f"a cluster needs at least one node, not {nodes}")
    if shards < 1:
        raise InvalidArgument(f"a cluster needs at least one shard, not {shards}")
    if not 1 <= replication <= nodes:
        raise InvalidArgument(f"replication must be between 1 and the node count ({nodes}), not {replication}")
    if ports is not None:
        client, peer = list(ports[:nodes]), list(ports[nodes:])
    elif base_port is None:
        ports = free_ports(2 * nodes)
        client, peer = ports[:nodes], ports[nodes:]
    else:
        if nodes > PEER_PORT_OFFSET:
            raise InvalidArgument(f"--base-port supports at most {PEER_PORT_OFFSET} nodes")
        if not 1024 <= base_port or base_port + PEER_PORT_OFFSET + nodes - 1 > 65535:
            raise InvalidArgument(f"base port {base_port} out of range: needs ports {base_port}.."
                                  f"{base_port + PEER_PORT_OFFSET + nodes - 1} within 1024..65535")
        client = [base_port + i for i in range(nodes)]
        peer = [base_port + PEER_PORT_OFFSET + i for i in range(nodes)]
        busy = [p for p in client + peer if _port_busy(p)]
        if busy:
            raise InvalidArgument(f"ports already in use on {HOST}: {', '.join(map(str, busy))}; "
                                  "choose another --base-port (or omit it to pick free ports)")
    spec = ",".join(f"n{i + 1}={HOST}:{client[i]}:{peer[i]}" for i in range(nodes))
    return ClusterInfo(root, tuple(parse_nodes(spec)), shards, replication, dict(raft))


def _check_same_layout(info: ClusterInfo, nodes: int | None, base_port: int | None, shards: int | None,
                       replication: int | None) -> None:
    """Refuse to silently ignore a layout argument that contradicts the existing cluster.json."""
    # the layout arguments describe the cluster as it was created (its founders): nodes added or
    # removed since do not make a restart with the same arguments an error
    founders = info.founders
    stored = {"nodes": len(founders), "shards": info.shards, "replication": info.replication}
    asked = {"nodes": nodes, "shards": shards, "replication": replication}
    diff = [f"{k}={asked[k]} (it has {stored[k]})" for k in stored if asked[k] is not None and asked[k] != stored[k]]
    if base_port is not None:
        expected = [(base_port + i, base_port + PEER_PORT_OFFSET + i) for i in range(len(founders))]
        if [(n.client[1], n.peer[1]) for n in founders] != expected:
            diff.append(f"base_port={base_port} (it uses client ports "
                        f"{', '.join(str(n.client[1]) for n in founders)})")
    if diff:
        raise InvalidArgument(f"{info.data_dir} already holds a cluster that differs: {'; '.join(diff)}. "
                              "Omit these options to restart it as it is, or use another data dir.")


# --- processes ------------------------------------------------------------------------------------


def _pid_file(info: ClusterInfo, node_id: str) -> str:
    return os.path.join(info.node_dir(node_id), PID_FILE)


def _read_pid(info: ClusterInfo, node_id: str) -> int | None:
    try:
        with open(_pid_file(info, node_id)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has exited)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _EXITS[pid] = child.returncode  # kept to say how it ended (a signal? an error?)
        del _CHILDREN[pid]  # our own child exited; poll() reaped it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, though not ours
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc")  # without /proc the signal probe is all we have
    except OSError:
        return True
    if _state(stat) not in (b"Z", b"X"):
        return True
    # A process whose main thread has exited shows as a zombie while its other threads still run
    # (say, one finishing an fsync after SIGKILL); its files -- LevelDB's lock among them -- are
    # released only when the last thread is gone.
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                if _state(f.read()) not in (b"Z", b"X"):
                    return True
        except OSError:
            continue
    return False


def _state(stat: bytes) -> bytes:
    """The state letter of a /proc stat line (after the parenthesised command name)."""
    return stat[stat.rfind(b")") + 2:][:1]


def _pid_is_node(pid: int, node_dir: str) -> bool:
    """Whether ``pid`` is a live raftkv node process running on ``node_dir``.

    A PID file can outlive its process and the PID be reused, so existence alone proves nothing:
    the process must be ours and (where /proc exists) its command line must name raftkv and this
    node's data dir.

    A process this one spawned and has not reaped is judged by the argv it was spawned with, not by
    /proc: its PID cannot have been reused, and /proc/PID/cmdline reads *empty* for a moment after
    Popen returns (Popen waits for exec to close the close-on-exec descriptors, and the kernel sets
    the new argv only after that, while it loads the program).  A node caught in that moment was
    taken for dead by ``_wait_started``, which then waited for pid -1 and ignored its answers.
    """
    if not _pid_exists(pid):
        return False
    child = _CHILDREN.get(pid)  # still there: _pid_exists just saw it running
    if child is not None and isinstance(child.args, (list, tuple)):
        return node_dir in child.args
    try:
        os.kill(pid, 0)
    except OSError:
        return False  # gone meanwhile, or someone else's process: our nodes run as us
    if not os.path.isdir("/proc"):
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return False
    return any("raftkv" in a for a in argv) and node_dir in argv


def _live_pid(info: ClusterInfo, node_id: str) -> int | None:
    """PID of node ``node_id`` if its PID file names a live node process, else None."""
    pid = _read_pid(info, node_id)
    return pid if pid is not None and _pid_is_node(pid, info.node_dir(node_id)) else None


def _remove_pid_file(info: ClusterInfo, node_id: str, pid: int | None = None) -> None:
    # only the file naming ``pid`` (if given): never clobber the PID of a node started meanwhile
    if pid is None or _read_pid(info, node_id) == pid:
        with contextlib.suppress(FileNotFoundError):
            os.remove(_pid_file(info, node_id))


def _spawn(info: ClusterInfo, node_id: str) -> int:
    """Start node ``node_id`` detached from us; record and return its PID."""
    node = info.node(node_id)
    node_dir = info.node_dir(node_id)
    os.makedirs(node_dir, exist_ok=True)
    argv = [sys.executable, "-m", "raftkv", "node", "--id", node.id, "--data-dir", node_dir]
    if info.is_joined(node_id):
        # the cluster tells a newcomer its layout and founders when it admits it (first start); later
        # starts find that answer in the data dir, so the seeds only matter once
        argv += ["--nodes", format_nodes([node]), "--join", _join_seeds(info, node_id)]
    else:
        argv += ["--nodes", info.nodes_spec, "--shards", str(info.shards), "--replication", str(info.replication)]
    # always explicit, so that cluster.json and not an inherited RAFTKV_RAFT decides
    argv += ["--raft", json.dumps(info.raft, sort_keys=True)]
    for name, value in sorted(info.settings.items()):
        argv += [SETTINGS[name], str(value)]
    # not for a newcomer: its --nodes names only itself, and a node refuses --peer-via for peers it
    # does not know at start
    if info.peer_via.get(node_id) and not info.is_joined(node_id):
        argv += ["--peer-via", format_peer_via(info.peer_via[node_id])]
    # metrics on any free port: the node reports where in `status` (a fixed one could be taken)
    argv += ["--metrics-port", "0"]
    for name, path in sorted(info.security.items()):
        argv += [SECURITY[name], path]
    if "tls_ca" in info.security:  # a cluster CA: the peer links use it too (mutual TLS)
        argv += ["--peer-tls"]
    if os.path.exists(_secret_path(info)):  # see _ensure_secret: all nodes have it, or none does
        argv += ["--secret-file", _secret_path(info)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log shows what happened up to a crash
    with open(os.path.join(node_dir, LOG_FILE), "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} launcher: starting {node.id}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    _CHILDREN[proc.pid] = proc
    _write_atomic(_pid_file(info, node_id), f"{proc.pid}\n")
    return proc.pid


def _join_seeds(info: ClusterInfo, node_id: str) -> str:
    """Client addresses of the other nodes, running ones first (``--join`` tries them in turn)."""
    others = [n for n in info.nodes if n.id != node_id]
    running = [n for n in others if _live_pid(info, n.id) is not None]
    return ",".join(format_hostport(n.client) for n in [*running, *(n for n in others if n not in running)])


def _id_number(node_id: str) -> int:
    """k of a node id ``n<k>`` (what the launcher names nodes); -1 for any other id."""
    m = re.fullmatch(r"n(\d+)", node_id)
    return int(m.group(1)) if m else -1


def _terminate(info: ClusterInfo, running: dict[str, int], timeout: float) -> dict[str, str]:
    """Stop the given (verified) node processes: SIGTERM, up to ``timeout`` s, then SIGKILL.

    Returns node id -> "stopped", "killed" or "still running" (survived SIGKILL for 5 s, e.g.
    stuck in the kernel), and removes the PID files of those that are gone.
    """
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a node paused by a fault test must run to see the TERM
    stragglers = _wait_dead(running, time.monotonic() + timeout)
    for pid in stragglers.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    survivors = _wait_dead(stragglers, time.monotonic() + 5.0)
    for node_id, pid in running.items():
        if node_id not in survivors:
            _remove_pid_file(info, node_id, pid)
    return {node_id: ("still running" if node_id in survivors else "killed" if node_id in stragglers
                      else "stopped") for node_id in running}


def _wait_dead(pids: dict[str, int], deadline: float) -> dict[str, int]:
    """Poll until the given (already verified) node processes have exited or ``deadline``.

    Returns those still alive.  Only existence is checked here, not identity: an exiting process
    drops its command line before it becomes a zombie, and it is not gone until then.
    """
    alive = dict(pids)
    while alive:
        alive = {nid: pid for nid, pid in alive.items() if _pid_exists(pid)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def _how_it_ended(info: ClusterInfo, node_id: str) -> str:
    """How node ``node_id`` ended, e.g. " (killed by SIGKILL)", if this process spawned it and saw it exit."""
    pid = _read_pid(info, node_id)
    code = _EXITS.get(pid) if pid is not None else None
    if code is None:
        return ""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f" (killed by {signal.Signals(-code).name})"
    return f" (exit status {code})"


def _log_tail(info: ClusterInfo, node_id: str, lines: int = 3) -> str:
    try:
        with open(os.path.join(info.node_dir(node_id), LOG_FILE), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# --- probing a running cluster --------------------------------------------------------------------


@dataclass
class _View:
    """What the nodes that answered say about the cluster."""

    status: dict[str, dict[str, Any]]  # address -> its `status` reply
    shard_map: dict[str, Any] | None  # the newest (highest epoch) map any node returned
    leaders: dict[str, str]  # group id -> node id, from the nodes' own claims
    why_silent: dict[str, str] = field(default_factory=dict)  # address -> why it did not count

    def groups(self) -> list[str]:
        shards = [s["id"] for s in self.shard_map["shards"]] if self.shard_map else []
        return [*shards, META_GROUP]

    def leaderless(self) -> list[str]:
        return [g for g in self.groups() if g not in self.leaders]


def _ask(address: str, timeout: float, brief: bool) -> tuple[dict[str, Any] | str, dict[str, Any] | None]:
    """``status`` and ``map`` from one node; instead of the status, why there is none."""
    try:
        st = call(address, "status", timeout=timeout, **({"brief": True} if brief else {}))
    except RaftKVError as exc:
        return f"{type(exc).__name__}: {exc}", None
    try:
        mp = call(address, "map", timeout=timeout)
    except RaftKVError:
        mp = None
    return st, mp


def _probe(addrs: Sequence[str], expect: dict[str, tuple[str, int | None]] | None = None,
           timeout: float = PROBE_TIMEOUT, brief: bool = True) -> _View:
    """Ask every address for ``status`` and ``map`` in parallel.

    ``expect`` maps address -> (node id, pid): a reply from a different node or process (a stray
    process on a reused port) does not count as that node answering.  ``brief`` leaves out what
    costs the nodes a read of every store (sizes and key counts): readiness does not need them.
    """
    if not addrs:
        return _View({}, None, {})
    with ThreadPoolExecutor(max_workers=len(addrs)) as pool:
        replies = dict(zip(addrs, pool.map(lambda a: _ask(a, timeout, brief), addrs), strict=True))
    status: dict[str, dict[str, Any]] = {}
    best_map: dict[str, Any] | None = None
    why: dict[str, str] = {}
    for addr, (st, mp) in replies.items():
        if not isinstance(st, dict):
            why[addr] = st if isinstance(st, str) else f"status answered {st!r:.80}"
            continue
        if expect is not None:
            node_id, pid = expect[addr]
            if st.get("node") != node_id or (pid is not None and st.get("pid") != pid):
                why[addr] = f"answered as {st.get('node')!r} pid {st.get('pid')!r}, not {node_id} pid {pid}"
                continue
        status[addr] = st
        shard_map = mp.get("map") if isinstance(mp, dict) else None
        if isinstance(shard_map, dict) and (best_map is None or shard_map["epoch"] > best_map["epoch"]):
            best_map = shard_map
    # a group's leader is the node that says it leads it: a follower's hint may still name a node that
    # just died; if an old leader has not noticed it was replaced yet, the higher term wins
    claims: dict[str, tuple[int, str]] = {}
    for st in status.values():
        for g in st.get("groups", []):
            if g.get("state") == "leader" and (g["id"] not in claims or g["term"] > claims[g["id"]][0]):
                claims[g["id"]] = (g["term"], st["node"])
    return _View(status, best_map, {gid: node for gid, (_, node) in claims.items()}, why)


def wait_ready(addrs: Sequence[str], timeout: float = 30.0,
               expect: dict[str, tuple[str, int | None]] | None = None) -> dict[str, str]:
    """Wait until every address answers ``status`` and every shard and the meta group has a leader.

    ``expect`` (address -> (node id, pid or None)) makes a reply count only if it comes from that
    node (and process).  Returns group id -> leader node id.  Raises :class:`Unavailable` after
    ``timeout`` seconds, naming the nodes that do not answer and the groups without a leader.
    """
    return _wait_ready(addrs, timeout, expect)


def _wait_ready(addrs: Sequence[str], timeout: float, expect: dict[str, tuple[str, int | None]] | None,
                hopeless: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """:func:`wait_ready`, giving up early once ``hopeless()`` says waiting longer cannot help."""
    deadline = time.monotonic() + timeout
    while True:
        view = _probe(addrs, expect)
        silent = [a for a in addrs if a not in view.status]
        if not silent and view.shard_map is not None and not view.leaderless():
            return dict(view.leaders)
        given_up = hopeless()
        if given_up or time.monotonic() >= deadline:
            problems = []
            if silent:
                problems.append("not answering: " + ", ".join(
                    f"{a} ({view.why_silent[a]})" if a in view.why_silent else a for a in silent))
            if view.shard_map is None:
                problems.append("no node returned the shard map")
            elif view.leaderless():
                problems.append(f"no leader for: {', '.join(view.leaderless())}")
            when = "" if given_up else f" after {timeout:g}s"
            raise Unavailable(f"cluster not ready{when}: {'; '.join(problems)}")
        time.sleep(0.1)


# --- public API -----------------------------------------------------------------------------------


def start(data_dir: str | os.PathLike[str], nodes: int | None = 3, base_port: int | None = None,
          shards: int | None = None, replication: int | None = 3, raft: dict[str, Any] | None = None,
          wait: float = 30.0, peer_via: dict[str, dict[str, tuple[str, int]]] | None = None,
          settings: dict[str, int] | None = None, prefer_ports: Sequence[int] | None = None,
          notice: Callable[[str], None] | None = None, security: dict[str, str] | None = None) -> ClusterInfo:
    """Start the cluster in ``data_dir`` (creating it on first use) and wait until it is ready.

    The first start fixes the layout in ``cluster.json``: ``nodes`` nodes n1..nN, client ports
    ``base_port``.. and peer ports ``base_port+100``.. (if ``base_port`` is None: the
    ``prefer_ports``, n1..nN's client ports then their peer ports, when every one is free, else
    free ports, after telling ``notice`` why; the commands prefer :func:`default_ports`), ``shards``
    shards with ``replication`` replicas, and ``raft`` options.  Later starts reuse it
    and only start nodes that are not running; a layout argument that contradicts it raises
    :class:`InvalidArgument` (pass None to accept the stored value).  A ``raft`` given on a
    later start replaces the stored options for nodes started from then on.  ``peer_via``
    (node id -> {peer id -> (host, port)}) makes that node dial that peer at another address, e.g.
    through a proxy that can cut the link (the fault lab); it is stored and replaced like ``raft``.
    ``settings`` (:data:`SETTINGS`: ``split_bytes``, ...) are merged into the stored ones and
    given to the nodes started from then on.  ``security`` (:data:`SECURITY`: ``tls_cert``,
    ``tls_key``, ``tls_ca``, ``client_token_file``; file paths) is stored and replaces the stored
    one like ``raft`` (stop the cluster first: running nodes keep what they started with); the
    launcher's own calls to the nodes then present the token and speak TLS.

    Waits up to ``wait`` seconds for every node to answer and every shard and the meta group to
    have a leader, else raises :class:`Unavailable` saying what is missing (the nodes are left
    running: call :func:`stop`).
    """
    root = _root(data_dir)
    claim = _PortClaim()
    try:
        with _locked(root):
            info = _start_locked(root, claim, nodes, base_port, shards, replication, raft, peer_via, settings,
                                 prefer_ports, notice, security)
        # a launcher that wants the same ports looks once our nodes listen on them, and so finds them taken
        if claim.held:
            _wait_listening(info, min(wait, PORT_CLAIM_WAIT))
    finally:
        claim.release()
    _wait_started(info, wait)
    return load(root)


def _start_locked(root: str, claim: _PortClaim, nodes: int | None, base_port: int | None, shards: int | None,
                  replication: int | None, raft: dict[str, Any] | None,
                  peer_via: dict[str, dict[str, tuple[str, int]]] | None, settings: dict[str, int] | None,
                  prefer_ports: Sequence[int] | None, notice: Callable[[str], None] | None,
                  security: dict[str, str] | None = None) -> ClusterInfo:
    """:func:`start`'s part under the directory lock: the layout read or made, missing nodes spawned."""
    info = _read_config(root)
    if info is None:
        count = 3 if nodes is None else nodes
        ports = None
        if prefer_ports is not None and base_port is None:
            ports = _preferred_ports(claim, prefer_ports, count, notice)
        info = _new_layout(root, count, base_port, DEFAULT_SHARDS if shards is None else shards,
                           3 if replication is None else replication, raft or {}, ports)
        if peer_via:
            info = replace(info, peer_via=_checked_peer_via(info, peer_via))
        settings, why = first_settings(count, usable_cores(), settings)
        if why is not None and notice is not None:
            notice(why)
        if settings:
            info = replace(info, settings=check_settings(settings))
        if security:
            info = replace(info, security=check_security(security))
        _save(info)
    else:
        _check_same_layout(info, nodes, base_port, shards, replication)
        if raft is not None and raft != info.raft:
            info = replace(info, raft=dict(raft))
            _save(info)
        if settings and {**info.settings, **settings} != info.settings:
            info = replace(info, settings=check_settings({**info.settings, **settings}))
            _save(info)
        if security is not None and check_security(security) != info.security:
            info = replace(info, security=check_security(security))
            _save(info)
        checked = None if peer_via is None else _checked_peer_via(info, peer_via)
        if checked is not None and checked != info.peer_via:
            info = replace(info, peer_via=checked)
            _save(info)
    _ensure_secret(info)
    for node in info.nodes:
        if _live_pid(info, node.id) is None:
            _spawn(info, node.id)
    return info


# client-port security the launcher stores (file paths) and passes to every node, with the node option
SECURITY = {"tls_cert": "--tls-cert", "tls_key": "--tls-key", "tls_ca": "--tls-ca",
            "client_token_file": "--client-token-file"}


def check_security(security: dict[str, Any], files: bool = True) -> dict[str, str]:
    """``security`` checked: known names, cert and key together, and (``files``) existing files, their
    paths made absolute (nodes run in their own directories).  InvalidArgument otherwise."""
    if not isinstance(security, dict):
        raise InvalidArgument("cluster security settings must be a mapping")
    unknown = sorted(set(security) - set(SECURITY))
    if unknown:
        raise InvalidArgument(f"unknown security settings {unknown}; known: {sorted(SECURITY)}")
    out = {}
    for name, path in security.items():
        if not isinstance(path, str) or (files and not os.path.isfile(path)):
            raise InvalidArgument(f"{SECURITY[name]}: no such file: {path!r}")
        out[name] = os.path.abspath(path) if files else path
    if ("tls_cert" in out) != ("tls_key" in out) or ("tls_ca" in out and "tls_cert" not in out):
        raise InvalidArgument("--tls-cert and --tls-key go together, and --tls-ca needs them")
    return out


# cluster settings the launcher stores and passes to every node, with the node option that takes each
SETTINGS = {"split_bytes": "--split-bytes", "tail_stripes": "--tail-stripes",
            "stripe_writes_per_s": "--stripe-writes-per-s", "load_split_per_s": "--load-split-per-s",
            "dead_after": "--dead-after"}


def first_settings(nodes: int, cores: int, given: dict[str, int] | None) -> tuple[dict[str, int], str | None]:
    """The settings a new local cluster of ``nodes`` nodes stores, on a machine whose processes may
    use ``cores`` cores, when ``given`` these; and a notice to show when the launcher chose one.

    With fewer cores than nodes, hot tails are not striped (``stripe_writes_per_s`` 0) unless
    ``given`` says otherwise.  A striped segment spreads a tail's writes over groups led by
    different nodes, which pays when those nodes bring CPU of their own; here they would share
    the cores the one group already had, and every write would cost more (smaller batches, a
    stripe hash per key, and sequential keys interleaved in each node's LevelDB).  Measured on 2 cores with 3 nodes: a 1M-key bulk
    load 9-23 % faster without striping, the next million 32-41 % (docs/design.md, §5a).  The
    scale lab, whose capped nodes stand for machines of their own, passes its own value.
    """
    settings = dict(given or {})
    if cores >= nodes or "stripe_writes_per_s" in settings:
        return settings, None
    settings["stripe_writes_per_s"] = 0
    return settings, (f"{nodes} nodes share {cores} core{'s' if cores != 1 else ''} here: hot tails will not "
                      "be striped (stripe_writes_per_s 0), since stripes would only share the same cores; "
                      "--stripe-writes-per-s N turns it on")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one); cgroup quotas are not read."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_settings(settings: dict[str, Any]) -> dict[str, int]:
    """``settings`` checked: known names, non-negative ints (InvalidArgument otherwise)."""
    if not isinstance(settings, dict):
        raise InvalidArgument("cluster settings must be a mapping")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise InvalidArgument(f"unknown cluster settings {unknown}; known: {sorted(SETTINGS)}")
    for name, value in settings.items():
        if type(value) is not int or value < 0:
            raise InvalidArgument(f"cluster setting {name} must be a non-negative integer, not {value!r}")
    if settings.get("split_bytes") == 0:
        raise InvalidArgument("split_bytes must be positive")
    if settings.get("dead_after", 5) < 5:
        raise InvalidArgument("dead_after must be at least 5 seconds")
    return dict(settings)


def _checked_peer_via(info: ClusterInfo, peer_via: dict[str, dict[str, tuple[str, int]]]
                      ) -> dict[str, dict[str, tuple[str, int]]]:
    """``peer_via`` normalised (no empty entries), refusing node ids the cluster does not have."""
    ids = {n.id for n in info.nodes}
    named = set(peer_via) | {dst for via in peer_via.values() for dst in via}
    unknown = sorted(named - ids)
    if unknown:
        raise InvalidArgument(f"peer_via names nodes not in the cluster: {', '.join(unknown)}")
    return {src: {dst: (str(a[0]), int(a[1])) for dst, a in via.items()} for src, via in peer_via.items() if via}


def _wait_started(info: ClusterInfo, wait: float) -> None:
    # only our own processes count: a stray node of another cluster could hold one of our ports
    # (-1 for a node already dead, so that nothing can stand in for it)
    expect = {format_hostport(n.client): (n.id, _live_pid(info, n.id) or -1) for n in info.nodes}
    # a node that exited will not come back by itself: say so now rather than after ``wait``
    def some_exited() -> bool:
        return any(_live_pid(info, n.id) is None for n in info.nodes)

    try:
        _wait_ready(info.addresses, wait, expect, some_exited)
    except Unavailable as exc:
        # say why, per node: an exited node's log usually names the cause (port taken, bad data dir)
        notes = []
        for node in info.nodes:
            pid = _live_pid(info, node.id)
            if pid is None:
                notes.append(f"{node.id} exited{_how_it_ended(info, node.id)}; "
                             f"log {os.path.join(info.node_dir(node.id), LOG_FILE)}: "
                             f"{_log_tail(info, node.id)}")
            elif format_hostport(node.client) in exc.message:
                # alive but silent: have it write every thread's stack to its log (node.py registers
                # SIGUSR1 with faulthandler), so a hang can be diagnosed after the fact
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGUSR1)
                notes.append(f"{node.id} (pid {pid}) is alive but does not answer; its threads' stacks "
                             f"are in {os.path.join(info.node_dir(node.id), LOG_FILE)}")
        raise Unavailable(exc.message + ("\n" + "\n".join(notes) if notes else "")) from None


def start_node(data_dir: str | os.PathLike[str], node_id: str, wait: float = 30.0) -> int:
    """Start one node of an existing cluster if it is not running; return its PID once it answers.

    Raises :class:`Unavailable` if it does not answer ``status`` within ``wait`` seconds.
    """
    root = _root(data_dir)
    with _locked(root):
        info = load(root)
        info.node(node_id)  # validates the id
        _ensure_secret(info)
        pid = _live_pid(info, node_id) or _spawn(info, node_id)
    address = format_hostport(info.node(node_id).client)
    deadline = time.monotonic() + wait
    while not _probe([address], {address: (node_id, pid)}).status:
        if _live_pid(info, node_id) is None:
            raise Unavailable(f"node {node_id} exited: {_log_tail(info, node_id)}")
        if time.monotonic() >= deadline:
            raise Unavailable(f"node {node_id} (pid {pid}) does not answer on {address} after {wait:g}s")
        time.sleep(0.1)
    return pid


def kill_node(data_dir: str | os.PathLike[str], node_id: str, sig: int = signal.SIGKILL,
              timeout: float = 10.0) -> int | None:
    """Send ``sig`` to node ``node_id`` (for fault tests); return its PID, or None if it was not running.

    For signals that end a process (KILL, TERM, INT) waits up to ``timeout`` seconds for it to
    exit and then removes its PID file; for others (e.g. SIGSTOP) returns at once.
    """
    info = load(data_dir)
    info.node(node_id)
    pid = info.pids.get(node_id)
    if pid is None:
        return None
    os.kill(pid, sig)
    if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        if not _wait_dead({node_id: pid}, time.monotonic() + timeout):
            _remove_pid_file(info, node_id, pid)
    return pid


def stop(data_dir: str | os.PathLike[str], timeout: float = 10.0) -> dict[str, str]:
    """Stop every node: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; remove PID files.

    Idempotent.  Returns node id -> "stopped", "killed", "not running" or "still running"
    (a process that survived SIGKILL for 5 s, e.g. stuck in the kernel).
    """
    root = _root(data_dir)
    if not os.path.isdir(root):
        raise InvalidArgument(f"no cluster in {root}: no such directory")
    with _locked(root):
        info = _read_config(root)
        if info is None:
            # no cluster.json (e.g. a start that failed early): still stop whatever PID files name
            ids = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, PID_FILE)))
            if not ids:
                raise InvalidArgument(f"no cluster in {root} (no {CLUSTER_FILE})")
            info = ClusterInfo(root, tuple(NodeAddress(i, (HOST, 0), (HOST, 0)) for i in ids), 0, 0)
        result = {n.id: "not running" for n in info.nodes}
        running = {n.id: pid for n in info.nodes if (pid := _live_pid(info, n.id)) is not None}
        result.update(_terminate(info, running, timeout))
        for n in info.nodes:
            if result[n.id] == "not running":
                _remove_pid_file(info, n.id)  # a stale one
    return result


def status(data_dir: str | os.PathLike[str], include_meta: bool = False) -> dict[str, Any]:
    """The cluster as its processes and nodes report it.

    ``{"nodes": [{"id", "address", "pid", "up", "metrics"}], "shards": [{"id", "start", "end", "replicas",
    "leader", "generation", "stripe", "bytes", "keys", "writes_per_s"}], "epoch"}``: ``up`` means
    the process is alive and answers ``status``; shards come from the newest map any live node
    returns (empty, and ``epoch`` None, if none answers), in map order; ``end`` is exclusive (2**64
    for the last segment), ``leader`` is a node id or None, ``stripe`` is ``[i, K]`` for stripe
    ``i`` of a segment served by K shards (which then share ``start`` and ``end``) or None.
    ``bytes``, ``keys`` (both approximate) and ``writes_per_s`` (recent) come from the leader's
    replica, else another replica that reports them, else are None.  ``include_meta`` adds
    ``"meta": {"leader"}``, the shard map's own Raft group.

    Each node entry also has ``state`` ("up", "suspect", "dead" or "decommissioning"), ``replicas``
    (how many shards the map places on it) and ``leaders`` (how many it leads, as it last reported)
    as the meta leader sees them; all three are None when no meta leader answers, and ``leaders``
    also before the node's first heartbeat reached it.
    """
    info = load(data_dir)
    expect = {format_hostport(n.client): (n.id, info.pids[n.id]) for n in info.nodes if info.pids[n.id]}
    view = _probe(list(expect), expect, brief=False)  # with each shard's size, rate and keys
    up_ids = {st["node"] for st in view.status.values()}
    # each node's metrics address ("host:port"), as it reports it (None: not serving metrics)
    metrics = {st["node"]: st.get("metrics") if isinstance(st.get("metrics"), str) else None
               for st in view.status.values()}
    out: dict[str, Any] = {
        "nodes": [{"id": n.id, "address": format_hostport(n.client), "pid": info.pids[n.id], "up": n.id in up_ids,
                   "state": None, "replicas": None, "leaders": None, "metrics": metrics.get(n.id)}
                  for n in info.nodes],
        "shards": [],
        "epoch": None if view.shard_map is None else int(view.shard_map["epoch"]),
    }
    # the meta leader is the one node that knows liveness: ask it first, the others if it is silent
    meta_leader = view.leaders.get(META_GROUP)
    asked = sorted(view.status, key=lambda a: view.status[a].get("node") != meta_leader)
    states = _member_states(asked)
    for entry in out["nodes"]:
        entry.update(states.get(entry["id"], {}))
    reports = _group_reports(view)
    for raw in (view.shard_map or {}).get("shards", []):
        s = Shard.from_dict(raw)  # also fills in generation 1 for maps written before splits
        leader = view.leaders.get(s.id)
        out["shards"].append({"id": s.id, "start": s.start, "end": s.end, "replicas": list(s.replicas),
                              "leader": leader, "generation": s.generation,
                              "stripe": None if s.stripe is None else list(s.stripe),
                              **_shard_load(reports, s.id, [*([leader] if leader else []), *s.replicas])})
    if include_meta:
        out["meta"] = {"leader": view.leaders.get(META_GROUP)}
    return out


def _member_states(addrs: Sequence[str], timeout: float = PROBE_TIMEOUT) -> dict[str, dict[str, Any]]:
    """node id -> {"state", "replicas", "leaders"} from the first of ``addrs`` that leads the meta
    group (only the meta leader includes ``states`` in its ``nodes`` reply); {} if none does."""
    for addr in addrs:
        try:
            reply = call(addr, "nodes", timeout=timeout)
        except RaftKVError:
            continue
        states = reply.get("states") if isinstance(reply, dict) else None
        if isinstance(states, dict):
            return {str(nid): {"state": st.get("state") if isinstance(st.get("state"), str) else None,
                               "replicas": _count(st.get("replicas")), "leaders": _count(st.get("leaders"))}
                    for nid, st in states.items() if isinstance(st, dict)}
    return {}


def _group_reports(view: _View) -> dict[str, dict[str, dict[str, Any]]]:
    """node id -> group id -> that node's ``status`` entry for the group."""
    return {st["node"]: {g["id"]: g for g in st.get("groups", []) if isinstance(g, dict) and "id" in g}
            for st in view.status.values()}


def _shard_load(reports: dict[str, dict[str, dict[str, Any]]], shard_id: str,
                nodes: Sequence[str]) -> dict[str, Any]:
    """``bytes``, ``keys`` and ``writes_per_s`` of a shard from the first of ``nodes`` that reports them.

    All three come from one replica so they describe the same moment; a node that does not report
    them (one older than these fields) gives None rather than a guess.
    """
    for node_id in nodes:
        entry = reports.get(node_id, {}).get(shard_id)
        if entry is not None and any(k in entry for k in ("bytes", "keys", "writes_per_s")):
            return {"bytes": _count(entry.get("bytes")), "keys": _count(entry.get("keys")),
                    "writes_per_s": _rate(entry.get("writes_per_s"))}
    return {"bytes": None, "keys": None, "writes_per_s": None}


def _count(value: Any) -> int | None:
    # bool is an int subclass: not a count
    return value if type(value) is int and value >= 0 else None


def _rate(value: Any) -> float | None:
    if type(value) in (int, float) and value >= 0 and value != float("inf"):
        return float(value)
    return None


# --- membership: adding and removing nodes --------------------------------------------------------

MEMBER_RPC_TIMEOUT = 10.0  # per request; decommission and forget commit through the meta group
POLL_INTERVAL = 0.5


def read_secret(path: str | os.PathLike[str] | None) -> bytes | None:
    """The cluster secret kept in the file at ``path``, read as nodes read it; None without a path."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read().strip()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the secret file {os.fspath(path)}: {exc.strerror}") from None


def _cluster_secret(info: ClusterInfo) -> bytes | None:
    path = _secret_path(info)
    return read_secret(path) if os.path.exists(path) else None


def member_records(seeds: str | Sequence[str], timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    """Every node's record as the cluster keeps it (``nodes``): id -> {"id", "client", "peer",
    "state", "version"}, from the first of ``seeds`` that answers."""
    reply = call_any(seeds, "nodes", timeout=timeout)
    return {str(r["id"]): r for r in reply.get("records") or [] if isinstance(r, dict) and "id" in r}


def placed_on(seeds: str | Sequence[str], node_id: str, timeout: float = 2.0) -> list[str] | None:
    """The shards whose replicas or learners include ``node_id`` in the newest map any of ``seeds``
    returns; None if none answers."""
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    best: dict[str, Any] | None = None
    for addr in (a.strip() for a in items if a.strip()):
        try:
            reply = call(addr, "map", timeout=timeout)
        except RaftKVError:
            continue
        shard_map = reply.get("map") if isinstance(reply, dict) else None
        if isinstance(shard_map, dict) and (best is None or shard_map["epoch"] > best["epoch"]):
            best = shard_map
    if best is None:
        return None
    return [s["id"] for s in best["shards"] if node_id in s.get("replicas", []) or node_id in s.get("learners", [])]


def decommission(seeds: str | Sequence[str], node_id: str, secret: bytes | None, timeout: float = 30.0) -> None:
    """Ask the cluster to drain ``node_id`` (the meta leader's mover moves its replicas away).

    Retried while the cluster is unavailable (a meta election); the node's refusal (unknown node,
    too few active nodes would remain) is raised as it answered it, an :class:`InvalidArgument`.
    Asking again for a node already being drained is harmless.
    """
    deadline = time.monotonic() + timeout
    proof = maplink.proof(secret, ["decommission", node_id])
    while True:
        try:
            call_any(seeds, "decommission", timeout=MEMBER_RPC_TIMEOUT, node=node_id, proof=proof)
            return
        except Unavailable as exc:
            if time.monotonic() >= deadline:
                raise Unavailable(f"cannot decommission {node_id}: {exc.message}") from None
        time.sleep(POLL_INTERVAL)


def drain_and_forget(seeds: str | Sequence[str], node_id: str, secret: bytes | None, timeout: float = 600.0,
                     progress: Callable[[int], None] | None = None) -> None:
    """Decommission ``node_id``, wait until it holds no replica, and delete its record (``forget``).

    ``progress(n)`` is called with the number of shards that still place a replica (voter or
    learner) on the node, first and whenever it changes.  The map empties first; the meta leader
    may still count a replica the map does not show (the meta group's own), so ``forget`` is
    retried while it answers that the node "still holds" one.  Raises :class:`Unavailable` after
    ``timeout`` seconds, with the last answer; the cluster goes on draining the node meanwhile, so
    calling this again later picks up where it stopped.
    """
    deadline = time.monotonic() + timeout
    decommission(seeds, node_id, secret, timeout)
    proof = maplink.proof(secret, ["forget", node_id])
    reported: int | None = None
    last = "no node returned the shard map"
    while True:
        held = placed_on(seeds, node_id)
        if held is not None:
            if len(held) != reported:
                reported = len(held)
                if progress is not None:
                    progress(reported)
            last = f"the map still places it in {len(held)} shards ({', '.join(held[:5])})" if held else last
        if held == []:
            try:
                call_any(seeds, "forget", timeout=MEMBER_RPC_TIMEOUT, node=node_id, proof=proof)
                return
            except InvalidArgument as exc:
                if "still holds" not in exc.message:
                    raise
                last = f"forget answered: {exc.message}"
            except Unavailable as exc:
                last = f"forget: {exc.message}"
        if time.monotonic() >= deadline:
            raise Unavailable(f"node {node_id} is not drained after {timeout:g}s: {last}. The cluster goes on "
                              "moving its replicas away; run the removal again to finish it")
        time.sleep(POLL_INTERVAL)


def _next_id(info: ClusterInfo) -> str:
    """``n<k>``, k one more than any id the cluster directory has used: nodes, removed founders, and
    node directories left by removed nodes (a new node must not start on a removed one's data)."""
    used = [_id_number(n.id) for n in (*info.nodes, *info.removed_founders)]
    used += [_id_number(d) for d in os.listdir(info.data_dir) if os.path.isdir(os.path.join(info.data_dir, d))]
    return f"n{max([0, *used]) + 1}"


def _new_ports(info: ClusterInfo) -> tuple[int, int]:
    """A free client port and a free peer port that no node in ``cluster.json`` has (a stopped node's
    ports are free now but still its own)."""
    taken = {p for n in (*info.nodes, *info.removed_founders) for p in (n.client[1], n.peer[1])}
    ports = [p for p in free_ports(2 + len(taken)) if p not in taken]
    return ports[0], ports[1]


def add_node(data_dir: str | os.PathLike[str], wait: float = 60.0) -> str:
    """Add a node to the running cluster in ``data_dir``; return its id once the cluster knows it.

    The node gets the next id (``n<k>``) and free ports, is recorded in ``cluster.json`` as joined,
    and is started with ``--join`` (see :func:`_spawn`).  Waits up to ``wait`` seconds until it
    answers ``status``, the cluster's node records include it and the meta leader sees it up; the
    mover then gives it replicas over time.  Raises :class:`Unavailable` if no node of the cluster runs, or if the new node does
    not join in time: it stays in ``cluster.json`` then (``start`` tries it again,
    :func:`remove_node` takes it out).
    """
    root = _root(data_dir)
    with _locked(root):
        info = load(root)
        running = [format_hostport(n.client) for n in info.nodes if info.pids[n.id] is not None]
        if not running:
            raise Unavailable(f"no node of the cluster in {root} is running: a node joins a running cluster "
                              f"(start it with `raftkv cluster start --data-dir {data_dir}`)")
        node_id = _next_id(info)
        client, peer = _new_ports(info)
        node = NodeAddress(node_id, (HOST, client), (HOST, peer))
        info = replace(info, nodes=(*info.nodes, node), joined=(*info.joined, node_id))
        _save(info)  # first: if we die now, the next `start` still knows (and starts) the node
        pid = _spawn(info, node_id)
    address = format_hostport(node.client)
    deadline = time.monotonic() + wait
    while True:
        if _probe([address], {address: (node_id, pid)}).status:
            with contextlib.suppress(RaftKVError):
                if node_id in member_records(running):
                    # and, if a meta leader answers, until it has heard the newcomer's heartbeat:
                    # before that it shows the node as dead (see status)
                    states = _member_states(running)
                    if not states or states.get(node_id, {}).get("state") == "up":
                        return node_id
        if _live_pid(info, node_id) is None:
            raise Unavailable(f"node {node_id} exited{_how_it_ended(info, node_id)} before joining: "
                              f"{_log_tail(info, node_id)} (log {os.path.join(info.node_dir(node_id), LOG_FILE)}). "
                              f"It stays in {CLUSTER_FILE}: `raftkv cluster start` tries it again, "
                              f"`raftkv cluster remove-node --node {node_id}` takes it out")
        if time.monotonic() >= deadline:
            raise Unavailable(f"node {node_id} (pid {pid}) has not joined after {wait:g}s; it goes on trying "
                              f"(log {os.path.join(info.node_dir(node_id), LOG_FILE)})")
        time.sleep(0.2)


def remove_node(data_dir: str | os.PathLike[str], node_id: str, wait: float = 600.0,
                progress: Callable[[int], None] | None = None) -> str:
    """Take node ``node_id`` out of the cluster in ``data_dir`` for good.

    Decommissions it, waits until its replicas (and their leadership) have moved to other nodes
    and the cluster has forgotten it (:func:`drain_and_forget`, ``progress`` as there), then stops
    its process and drops it from ``cluster.json``.  Its directory stays, log included; its id is
    not given to a later node.  Returns how its process ended: "stopped", "killed", "still
    running" or "not running".

    Refused with :class:`InvalidArgument` (and nothing changed) for a node the directory does not
    have, or when the cluster refuses: fewer active nodes than the replication factor would remain.
    A node the cluster never admitted (an :func:`add_node` that failed) is just stopped and dropped.
    """
    root = _root(data_dir)
    info = load(root)
    info.node(node_id)  # a clear error for an unknown id
    deadline = time.monotonic() + wait
    # the others first: the node being removed is the one that stops serving at the end
    seeds = [format_hostport(n.client) for n in sorted(info.nodes, key=lambda n: n.id == node_id)
             if info.pids[n.id] is not None]
    if not [a for a in seeds if a != format_hostport(info.node(node_id).client)]:
        raise Unavailable(f"no other node of the cluster in {root} is running; start the cluster first")
    stopped = None
    if node_id not in _records_or_unavailable(seeds):
        # never admitted: nothing to drain.  Stop it first, then look again (it may have been
        # admitted just now, and then it leaves the normal way)
        stopped = _stop_one(root, node_id)
        if node_id not in _records_or_unavailable(seeds):
            _drop(root, node_id)
            return stopped
    drain_and_forget(seeds, node_id, _cluster_secret(info), max(1.0, deadline - time.monotonic()), progress)
    outcome = _stop_one(root, node_id)
    _drop(root, node_id)
    return stopped if stopped is not None and outcome == "not running" else outcome


def _records_or_unavailable(seeds: Sequence[str]) -> dict[str, dict[str, Any]]:
    try:
        return member_records(seeds, timeout=MEMBER_RPC_TIMEOUT)
    except Unavailable as exc:
        raise Unavailable(f"cannot read the cluster's node records: {exc.message}") from None


def _stop_one(root: str, node_id: str, timeout: float = 10.0) -> str:
    """Stop node ``node_id``'s process if it runs; how it ended (as :func:`stop` says it)."""
    with _locked(root):
        info = load(root)
        pid = info.pids.get(node_id)
        if pid is None:
            _remove_pid_file(info, node_id)
            return "not running"
        return _terminate(info, {node_id: pid}, timeout)[node_id]


def _drop(root: str, node_id: str) -> None:
    """Remove node ``node_id`` from ``cluster.json``; a founder's address is kept for the other
    founders' ``--nodes`` (their identity)."""
    with _locked(root):
        info = load(root)
        gone = info.node(node_id)
        founder = not info.is_joined(node_id)
        peer_via = {src: {dst: a for dst, a in via.items() if dst != node_id}
                    for src, via in info.peer_via.items() if src != node_id}
        _save(replace(info, nodes=tuple(n for n in info.nodes if n.id != node_id),
                      joined=tuple(j for j in info.joined if j != node_id),
                      removed_founders=(*info.removed_founders, gone) if founder else info.removed_founders,
                      peer_via={src: via for src, via in peer_via.items() if via}))
