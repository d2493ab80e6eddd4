"""``raftkv cluster start|status|stop``: a local cluster of node processes, for development and tests."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidArgument, RaftKVError
from . import launcher


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``cluster`` command and its subcommands to the ``raftkv`` parser's subparsers."""
    p = sub.add_parser("cluster", help="start, inspect or stop a local cluster (processes on 127.0.0.1)",
                       description="A cluster of node processes on this machine, all kept in one --data-dir.")
    csub = p.add_subparsers(dest="cluster_command", required=True, metavar="{start,status,stop}")

    s = csub.add_parser("start", help="start (or restart) a local cluster and wait until it is ready",
                        description="Start the cluster in --data-dir, creating it on first use; on later "
                                    "starts only nodes that are not running are started, with the same ports.")
    s.add_argument("--data-dir", required=True, help="directory holding the whole cluster")
    # None = "3/8/3 for a new cluster, what cluster.json says for an existing one", so a restart
    # needs no repeat of the layout options
    s.add_argument("--nodes", type=int, default=None, help="node count of a new cluster (default 3)")
    s.add_argument("--base-port", type=int, default=None,
                   help="client ports P..P+N-1, peer ports P+100.. (default: free ports)")
    s.add_argument("--shards", type=int, default=None, help="initial shard count of a new cluster (default 8)")
    s.add_argument("--replication", type=int, default=None, help="replicas per shard of a new cluster (default 3)")
    s.add_argument("--raft", default=None, help='JSON of Raft options, e.g. {"election_min": 0.4}')
    s.add_argument("--wait", type=float, default=30.0, help="seconds to wait for leaders (default 30)")
    s.set_defaults(func=_guarded(_cmd_start))

    st = csub.add_parser("status", help="show nodes and shards of a local cluster")
    st.add_argument("--data-dir", required=True, help="directory holding the whole cluster")
    st.add_argument("--json", action="store_true", help="print the status as one JSON object")
    st.set_defaults(func=_guarded(_cmd_status))

    sp = csub.add_parser("stop", help="stop every node of a local cluster (SIGTERM, then SIGKILL)")
    sp.add_argument("--data-dir", required=True, help="directory holding the whole cluster")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds to wait before SIGKILL (default 10)")
    sp.set_defaults(func=_guarded(_cmd_stop))


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn OS errors (unwritable dir, ...) into a one-line message and exit 1, like raftkv's own errors."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except OSError as exc:
            raise RaftKVError(f"cluster {args.cluster_command}: {exc}") from None

    return run


def _cmd_start(args: argparse.Namespace) -> int:
    raft = None
    if args.raft is not None:
        try:
            raft = json.loads(args.raft)
        except ValueError as exc:
            raise InvalidArgument(f"--raft is not JSON: {exc}") from None
        if not isinstance(raft, dict):
            raise InvalidArgument("--raft must be a JSON object")
    info = launcher.start(args.data_dir, nodes=args.nodes, base_port=args.base_port, shards=args.shards,
                          replication=args.replication, raft=raft, wait=args.wait)
    print(f"cluster ready in {info.data_dir}: {len(info.nodes)} nodes, {info.shards} shards, "
          f"replication {info.replication}")
    print(f"seeds: {info.seeds}")
    print()
    print(render_status(launcher.status(info.data_dir, include_meta=True)))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(launcher.status(args.data_dir)))
    else:
        print(render_status(launcher.status(args.data_dir, include_meta=True)))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    result = launcher.stop(args.data_dir, timeout=args.timeout)
    for node_id, outcome in result.items():
        print(f"{node_id}: {outcome}")
    stuck = [n for n, outcome in result.items() if outcome == "still running"]
    if stuck:
        print(f"raftkv: could not stop {', '.join(stuck)}", file=sys.stderr)
        return 1
    return 0


# --- rendering ------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def key_range(start: int, end: int) -> str:
    """``[start, end)`` as inclusive hex bounds, so the last shard reads ...ffff rather than 2**64."""
    return f"{start:#018x}..{end - 1:#018x}"


def render_status(st: dict[str, Any]) -> str:
    """The human form of :func:`raftkv.cluster.launcher.status`."""
    nodes, shards = st["nodes"], st["shards"]
    up = sum(n["up"] for n in nodes)
    led = sum(s["leader"] is not None for s in shards)
    summary = f"{up}/{len(nodes)} nodes up"
    if shards:
        summary += f", {led}/{len(shards)} shards with a leader"
    elif up == 0:
        summary += " (shard map unknown: no node answers)"
    if "meta" in st:
        summary += f", meta leader {st['meta']['leader'] or '-'}"
    node_rows = [(n["id"], n["address"], n["pid"],
                  "up" if n["up"] else "down" if n["pid"] is None else "not answering") for n in nodes]
    out = [summary, "", _table(("NODE", "ADDRESS", "PID", "STATE"), node_rows)]
    if shards:
        shard_rows = [(s["id"], key_range(s["start"], s["end"]), ",".join(s["replicas"]), s["leader"])
                      for s in shards]
        out += ["", _table(("SHARD", "KEYS (hex, inclusive)", "REPLICAS", "LEADER"), shard_rows)]
    return "\n".join(out)
