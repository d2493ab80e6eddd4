"""The ``raftkv`` command: ``node``, ``cluster``, ``shell``, ``up``, ``import``, ``export``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from shell.cli import add_commands as add_shell_commands

from .bulk_cli import add_commands as add_bulk_commands
from .cluster.cli import add_commands as add_cluster_commands
from .errors import RaftKVError


def _add_node(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run one node (what docker-compose and deployments run)")
    p.add_argument("--id", required=True, help="this node's id, as named in --nodes")
    p.add_argument("--data-dir", required=True, help="directory for this node's Raft logs and LevelDB stores")
    p.add_argument("--nodes", required=True, help="every node: id=host:client_port:peer_port,...")
    p.add_argument("--shards", type=int, default=None,
                   help="initial shard count (default: what the data dir was created with, else 12)")
    p.add_argument("--replication", type=int, default=3, help="replicas per shard (default 3)")
    p.add_argument("--placement", choices=["hrw", "copysets"], default=None,
                   help="how a new cluster places its initial shards: copysets (when the founders form two "
                        "or more groups of --replication) or hrw (default: what the data dir was created "
                        "with, else copysets)")
    p.add_argument("--bind", default=None, help="listen on this host instead of the one in --nodes")
    p.add_argument("--advertise-client", action="append", default=None, metavar="HOST:PORT",
                   help="a client address to advertise to clients instead of the one in --nodes (repeat it "
                        "for each network clients come from, in the same order on every node, e.g. n1:7400 "
                        "and 127.0.0.1:7401 in compose); each client uses the one that works from where it runs")
    p.add_argument("--secret-file", default=None, help="file holding the cluster secret for peer links")
    p.add_argument("--raft", default=None,
                   help='JSON of Raft options, e.g. {"compact_entries": 1000} (heartbeat, election_min, ...)')
    p.add_argument("--peer-via", default=None, metavar="ID=HOST:PORT,...",
                   help="dial these peers at these addresses instead of their peer ports (e.g. through a "
                        "proxy, as the fault lab does); where this node listens is unchanged")
    p.add_argument("--join", default=None, metavar="ADDRS",
                   help="join the running cluster at these client addresses (host:port,...); --nodes then "
                        "names only this node, and the cluster's shard count and replication apply")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, HOST being the client "
                        "address's (0: any free port; default: no metrics)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text (default) or as one JSON object each, with event fields")
    p.add_argument("--slow-request-ms", type=float, default=1000, metavar="MS",
                   help="log requests slower than this (default 1000 ms; at most one line per "
                        "operation per 10 s)")
    p.add_argument("--tls-cert", default=None, metavar="FILE",
                   help="serve the client port over TLS with this certificate (PEM; with --tls-key)")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="the private key of --tls-cert (PEM)")
    p.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="CA file that signed the other nodes' certificates: this node verifies them when it "
                        "calls their client ports (default: the system's CAs)")
    p.add_argument("--client-token-file", default=None, metavar="FILE",
                   help="file holding the token every client must present in a `hello` request before any "
                        "other (other nodes present it too: give every node the same)")
    p.add_argument("--peer-tls", action="store_true",
                   help="mutual TLS on the peer (Raft) port too: this node presents --tls-cert and wants "
                        "every peer's certificate signed by --tls-ca (give every node this option)")
    add_split_options(p, defaults=True)
    p.set_defaults(func=_cmd_node)


def add_split_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The cluster settings of splitting and striping (``raftkv node`` and ``raftkv cluster start``)."""
    p.add_argument("--split-bytes", type=int, default=(64 << 20) if defaults else None,
                   help="a shard whose data outgrows this many bytes splits in two (default 64 MiB)")
    p.add_argument("--tail-stripes", type=int, default=0 if defaults else None,
                   help="stripes of a hot tail segment (default 0: one per node, at most 16)")
    p.add_argument("--stripe-writes-per-s", type=int, default=5000 if defaults else None,
                   help="keys/s of appends above which a shard's tail is striped (default 5000; 0: never)")
    p.add_argument("--load-split-per-s", type=int, default=1000 if defaults else None,
                   help="write requests/s above which a shard that is not a hot tail splits at the middle "
                        "of its recent writes, so its halves' leaders can spread (default 1000; 0: never)")
    p.add_argument("--dead-after", type=int, default=60 if defaults else None, metavar="S",
                   help="seconds of silence after which a node is declared dead and its replicas are "
                        "re-created on other nodes (default 60, at least 5)")


def _cmd_node(args: argparse.Namespace) -> int:
    from .client import rpc
    from .server.config import NodeConfig, parse_nodes, parse_peer_via, read_token_file, recorded_layout
    from .server.node import run_node

    secret = None
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().strip()
    raft = json.loads(args.raft) if args.raft else json.loads(os.environ.get("RAFTKV_RAFT", "{}"))
    # a data dir made before a default changed keeps its layout: its identity holds it
    shards, scheme = recorded_layout(args.data_dir, args.shards, args.placement)
    config = NodeConfig(node_id=args.id, data_dir=args.data_dir, nodes=parse_nodes(args.nodes),
                        shards=shards, placement=scheme, replication=args.replication, bind_host=args.bind,
                        secret=secret, raft=raft, peer_via=parse_peer_via(args.peer_via or ""),
                        split_bytes=args.split_bytes, tail_stripes=args.tail_stripes,
                        stripe_writes_per_s=args.stripe_writes_per_s, load_split_per_s=args.load_split_per_s,
                        dead_after=args.dead_after,
                        metrics_port=args.metrics_port, log_format=args.log_format,
                        slow_request_seconds=args.slow_request_ms / 1000,
                        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca, peer_tls=args.peer_tls,
                        client_token=read_token_file(args.client_token_file) if args.client_token_file else None,
                        advertise_clients=tuple(args.advertise_client or ()))
    config.me()
    # a node's own blocking calls to other nodes (``--join``) present the cluster's token and TLS
    rpc.set_default_credentials(config.credentials())
    if args.join:
        from .server.joining import joined_config

        config = joined_config(config, args.join)
    run_node(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="raftkv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_node(sub)
    add_cluster_commands(sub)
    add_shell_commands(sub)
    add_bulk_commands(sub)
    return parser


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left (| head)


def main(argv: list[str] | None = None) -> int:
    """Run the ``raftkv`` command; returns its exit status."""
    try:
        try:
            return _dispatch(argv)
        finally:
            # flushed inside the try: a reader that left early (``| head``) is noticed here, and not
            # when Python flushes stdout at exit, where all it can do is print a traceback
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _dispatch(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RaftKVError as exc:
        print(f"raftkv: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _stdout_to_devnull() -> None:
    """Point stdout's descriptor at /dev/null, so the flush at exit writes what is still buffered there
    instead of failing again (the Python docs' recipe for SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return  # stdout is not a file here (replaced in-process): nothing will flush to a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
