"""Node and cluster configuration: parsing and validation (pure)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import ssl
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidArgument
from ..routing.nodes import check_advertised
from ..routing.placement import DEFAULT_SCHEME, HRW, SCHEMES
from ..routing.shardmap import DEFAULT_SHARDS


@dataclass(frozen=True)
class NodeAddress:
    """Where a node listens: its client address and its peer (Raft) address."""

    id: str
    client: tuple[str, int]
    peer: tuple[str, int]


def parse_hostport(text: str) -> tuple[str, int]:
    """``"host:port"`` as a tuple."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidArgument(f"bad address {text!r}: expected host:port")
    return host, int(port)


def format_hostport(addr: tuple[str, int]) -> str:
    """Inverse of :func:`parse_hostport`."""
    return f"{addr[0]}:{addr[1]}"


def parse_nodes(spec: str) -> list[NodeAddress]:
    """``"n1=host:cport:pport,n2=..."`` as node addresses (ids unique, at least one)."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        node_id, sep, rest = part.partition("=")
        host, _, ports = rest.partition(":")
        cport, _, pport = ports.partition(":")
        if not sep or not node_id or not host or not cport.isdigit() or not pport.isdigit():
            raise InvalidArgument(f"bad node spec {part!r}: expected id=host:client_port:peer_port")
        out.append(NodeAddress(node_id, (host, int(cport)), (host, int(pport))))
    ids = [n.id for n in out]
    if not out or len(set(ids)) != len(ids):
        raise InvalidArgument("node list is empty or repeats an id")
    return out


def format_nodes(nodes: list[NodeAddress]) -> str:
    """Inverse of :func:`parse_nodes`."""
    return ",".join(f"{n.id}={n.client[0]}:{n.client[1]}:{n.peer[1]}" for n in nodes)


def parse_peer_via(spec: str) -> dict[str, tuple[str, int]]:
    """``"n2=host:port,n3=host:port"`` as peer id -> the address to dial that peer at (ids unique)."""
    out: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        peer_id, sep, addr = part.partition("=")
        if not sep or not peer_id or peer_id in out:
            raise InvalidArgument(f"bad peer-via entry {part!r}: expected id=host:port, each id once")
        out[peer_id] = parse_hostport(addr)
    return out


def format_peer_via(via: dict[str, tuple[str, int]]) -> str:
    """Inverse of :func:`parse_peer_via`."""
    return ",".join(f"{pid}={format_hostport(addr)}" for pid, addr in sorted(via.items()))


@dataclass
class NodeConfig:
    """Everything one node needs to start."""

    node_id: str
    data_dir: str
    nodes: list[NodeAddress]
    shards: int = DEFAULT_SHARDS
    replication: int = 3
    # how the initial shards are placed (routing/placement.py); part of the cluster's identity
    placement: str = DEFAULT_SCHEME
    bind_host: str | None = None  # listen here instead of the advertised host (containers)
    secret: bytes | None = None
    raft: dict[str, Any] = field(default_factory=dict)
    # dial these peers here instead of at their peer address: the fault lab routes each peer link
    # through a proxy it can cut; where a peer *listens* is unchanged
    peer_via: dict[str, tuple[str, int]] = field(default_factory=dict)
    # a shard whose data outgrows this splits in two (cluster setting: give every node the same)
    split_bytes: int = 64 << 20
    # stripes of a hot tail segment (0: the number of nodes, at most 16)
    tail_stripes: int = 0
    # appends (keys/s) to one shard above which its tail is striped (0: never)
    stripe_writes_per_s: int = 5000
    # write requests/s to one shard (not a hot tail) above which it splits on load (0: never)
    load_split_per_s: int = 1000
    # a node silent this long (seconds) is declared dead and its replicas re-created elsewhere
    dead_after: float = 60.0
    # the nodes the cluster was created with, when this node joined later (``nodes`` then holds
    # their addresses and this node's): the initial map and the meta group's first members are
    # derived from them on every node alike
    founders: list[str] | None = None
    # serve Prometheus metrics on this port (0: any free one), on the client port's host; None: off
    metrics_port: int | None = None
    log_format: str = "text"  # or "json": one object per line (logs.JsonFormatter)
    # a request slower than this (seconds) is logged (at most once per operation per 10 s)
    slow_request_seconds: float = 1.0
    # TLS on the client port (certificate and key files, PEM); tls_ca also verifies the other nodes'
    # certificates when this node calls their client ports (map polls, heartbeats, reconfiguration)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # the token a client's ``hello`` must carry before anything else (None: no token wanted)
    client_token: str | None = None
    # mutual TLS on the peer port too: tls_cert/tls_key presented, peers' certificates checked against tls_ca
    peer_tls: bool = False
    # the client addresses this node advertises to clients (``--advertise-client``, in order), one
    # per network clients reach it from; empty: its ``--nodes`` client address.  Other nodes always
    # call it at that address.
    advertise_clients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.placement not in SCHEMES:
            raise InvalidArgument(f"unknown placement {self.placement!r}: one of {', '.join(SCHEMES)}")
        if self.split_bytes < 1 or self.tail_stripes < 0 or self.stripe_writes_per_s < 0 or \
                self.load_split_per_s < 0:
            raise InvalidArgument("split_bytes must be positive; tail_stripes, stripe_writes_per_s and "
                                  "load_split_per_s >= 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise InvalidArgument("metrics_port must be a port number (0: any free one)")
        if self.log_format not in ("text", "json"):
            raise InvalidArgument(f"unknown log format {self.log_format!r}: text or json")
        if not self.slow_request_seconds > 0:
            raise InvalidArgument("slow_request_seconds must be positive")
        if not self.dead_after >= 5.0:
            raise InvalidArgument("dead_after must be at least 5 seconds")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidArgument("--tls-cert and --tls-key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise InvalidArgument("--tls-ca needs --tls-cert and --tls-key (it verifies the other nodes' TLS)")
        if self.client_token is not None:
            check_token(self.client_token)
        if self.peer_tls and self.tls_ca is None:
            raise InvalidArgument("--peer-tls needs --tls-cert, --tls-key and --tls-ca")
        if self.advertise_clients:
            try:
                self.advertise_clients = check_advertised(list(self.advertise_clients))
            except ValueError as exc:
                raise InvalidArgument(f"--advertise-client: {exc}") from None
        unknown = sorted(set(self.peer_via) - {n.id for n in self.nodes})
        if unknown:
            raise InvalidArgument(f"peer-via names nodes not in the node list: {', '.join(unknown)}")

    def credentials(self) -> Credentials:
        """What this node presents when it calls other nodes' client ports (they run with the same
        options: one token, one CA for the whole cluster)."""
        return Credentials(token=self.client_token, tls=self.tls_cert is not None, tls_ca=self.tls_ca)

    def peer_dial_addresses(self) -> dict[str, tuple[str, int]]:
        """Where this node dials each node's peer port: its ``peer_via`` override, else its peer address."""
        return {n.id: self.peer_via.get(n.id, n.peer) for n in self.nodes}

    def me(self) -> NodeAddress:
        """This node's own addresses."""
        for n in self.nodes:
            if n.id == self.node_id:
                return n
        raise InvalidArgument(f"node id {self.node_id!r} is not in the node list")

    def founder_ids(self) -> list[str]:
        """The ids of the nodes the cluster was created with."""
        return list(self.founders) if self.founders is not None else [n.id for n in self.nodes]

    def cluster_identity(self) -> dict[str, Any]:
        """What must not change across restarts of a data directory.  HRW placement is not named, so
        that clusters made before copysets keep their identity (and cluster name) unchanged."""
        ident: dict[str, Any] = {"nodes": sorted(self.founder_ids()), "shards": self.shards,
                                 "replication": self.replication}
        if self.placement != HRW:
            ident["placement"] = self.placement
        return ident

    def cluster_name(self) -> str:
        """What nodes tell clients their cluster is (``cluster`` in ``hello`` and ``map`` replies), so
        that a client following one node's advertised addresses never takes another cluster's node
        for it: a hash of :meth:`cluster_identity` and the founders' peer addresses (the founders'
        ``--nodes`` list, the same on every node, also on one that joined later).  Two ``raftkv up``
        clusters of one layout differ by their peer ports; nothing secret goes in."""
        founders = set(self.founder_ids())
        peers = sorted((n.id, format_hostport(n.peer).lower()) for n in self.nodes if n.id in founders)
        text = json.dumps([self.cluster_identity(), peers], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"raftkv cluster\0" + text.encode()).hexdigest()[:16]


MAX_TOKEN_CHARS = 4096


def check_token(token: object) -> str:
    """``token`` if it is a usable client token: a non-empty printable string (InvalidArgument)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not token.isprintable():
        raise InvalidArgument(f"a client token must be 1..{MAX_TOKEN_CHARS} printable characters")
    return token


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The client token kept in the file at ``path`` (surrounding whitespace, e.g. a newline, dropped)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read the token file {os.fspath(path)}: {exc}") from None
    if not text:
        raise InvalidArgument(f"the token file {os.fspath(path)} is empty")
    return check_token(text)


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The TLS context a node serves its client port with (TLS 1.2 at least)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"cannot load the TLS certificate {cert} and key {key}: {exc}") from None
    return ctx


@functools.lru_cache(maxsize=16)
def client_tls_context(ca: str | None) -> ssl.SSLContext:
    """A TLS context that trusts the certificates in the file ``ca`` (None: the system's CAs) and
    checks that a node's certificate names the host it was dialled at.  Cached per CA file: loading
    one costs milliseconds, and every connection of a client or node uses the same."""
    ctx = ssl.create_default_context(cafile=ca) if ca is not None else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only: ``localhost`` (and names
    under it), ``127.0.0.0/8`` or ``::1``, bracketed or not."""
    host = host.lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


@dataclass(frozen=True)
class Credentials:
    """What a caller of a node's client port presents: a token (sent in a ``hello`` request, the
    first on each connection), and whether to speak TLS (trusting ``tls_ca``, or the system's CAs)."""

    token: str | None = None
    tls: bool = False
    tls_ca: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        if self.tls_ca is not None and not self.tls:
            object.__setattr__(self, "tls", True)  # a CA given means TLS wanted

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client-side TLS context, or None without TLS."""
        try:
            return client_tls_context(self.tls_ca) if self.tls else None
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument(f"cannot load the TLS CA file {self.tls_ca}: {exc}") from None

    def hello(self) -> dict[str, object] | None:
        """The ``hello`` request to open each connection with (None: nothing to send)."""
        return {"op": "hello", "token": self.token} if self.token is not None else None


IDENTITY_FILE = "cluster-identity.json"


def recorded_identity(data_dir: str) -> dict[str, Any] | None:
    """The cluster identity a node's data dir was first started with (None: a new data dir)."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def recorded_layout(data_dir: str, shards: int | None, scheme: str | None) -> tuple[int, str]:
    """The shard count and placement scheme a node starts with: those given, else those its data dir
    was created with (a dir made before copysets records no scheme: HRW), else a new cluster's
    defaults.  So a node deployed before a default changed restarts as it was made."""
    stored = recorded_identity(data_dir)
    if stored is None:
        return (DEFAULT_SHARDS if shards is None else shards,
                DEFAULT_SCHEME if scheme is None else scheme)
    return (int(stored.get("shards", DEFAULT_SHARDS)) if shards is None else shards,
            str(stored.get("placement", HRW)) if scheme is None else scheme)


def check_data_dir(config: NodeConfig) -> None:
    """Refuse to start a data dir with a different cluster identity; record it on first start."""
    os.makedirs(config.data_dir, exist_ok=True)
    path = os.path.join(config.data_dir, IDENTITY_FILE)
    ident = config.cluster_identity()
    stored = recorded_identity(config.data_dir)
    if stored is not None:
        if stored != ident:
            raise InvalidArgument(f"data dir {config.data_dir} belongs to cluster {stored}, not {ident}")
        return
    with open(path + ".tmp", "w") as f:
        json.dump(ident, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def addresses_json(nodes: list[NodeAddress]) -> list[dict[str, Any]]:
    """Node addresses in JSON form."""
    return [{**asdict(n), "client": format_hostport(n.client), "peer": format_hostport(n.peer)} for n in nodes]
