"""``raftkv cluster start|status|split|add-node|remove-node|stop``: a local cluster of node processes, shard
splits and node removal on any cluster."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import tzinfo
from typing import Any, TextIO

from ..client import rpc
from ..client.rpc import call_any
from ..errors import InvalidArgument, RaftKVError, Unavailable
from ..keys import KEY_SPACE_END, MAX_KEY
from ..query.timestamps import parse_timezone, zone_argument
from ..server.config import Credentials, read_token_file
from . import launcher

# exit statuses of `raftkv cluster status` (the other commands: 0 done, 1 an error; argparse's usage errors: 2)
EXIT_HEALTHY = 0  # every node answers, every shard and the meta group has a leader
EXIT_UNHEALTHY = 1  # a node is down or silent, or a group has no leader (and every raftkv error, as elsewhere)
EXIT_UNREACHABLE = 2  # no node answers (etcdctl's "bad connection" status, and argparse's usage errors)
# how long `cluster status` looks again when every node process runs but a group has no leader or a node
# is slow to answer: an election (0.6-1.2 s) or a loaded machine, not a failure, unless it lasts
STATUS_SETTLE = 3.0
KEY_STYLES = ("hex", "timestamp")  # how `cluster status` shows range bounds


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``cluster`` command and its subcommands to the ``raftkv`` parser's subparsers."""
    p = sub.add_parser("cluster", help="start, inspect or stop a local cluster (processes on 127.0.0.1); split shards",
                       description="A cluster of node processes on this machine, all kept in one --data-dir; "
                                   "`split` also works on any cluster through --connect.")
    csub = p.add_subparsers(dest="cluster_command", required=True, metavar="{start,status,split,add-node,remove-node,stop}")

    s = csub.add_parser("start", help="start (or restart) a local cluster and wait until it is ready",
                        description="Start the cluster in --data-dir, creating it on first use; on later "
                                    "starts only nodes that are not running are started, with the same ports.")
    s.add_argument("--data-dir", required=True, help="directory holding the whole cluster")
    # None = "3/8/3 for a new cluster, what cluster.json says for an existing one", so a restart
    # needs no repeat of the layout options
    s.add_argument("--nodes", type=int, default=None, help="node count of a new cluster (default 3)")
    s.add_argument("--base-port", type=int, default=None,
                   help=f"client ports P..P+N-1, peer ports P+100.. (default: {launcher.DEFAULT_BASE_PORT}.. and "
                        f"{launcher.DEFAULT_BASE_PORT + launcher.PEER_PORT_OFFSET}.. if all are free, else free ports)")
    s.add_argument("--shards", type=int, default=None, help="initial shard count of a new cluster (default 12)")
    s.add_argument("--replication", type=int, default=None, help="replicas per shard of a new cluster (default 3)")
    s.add_argument("--raft", default=None, help='JSON of Raft options, e.g. {"election_min": 0.4}')
    s.add_argument("--wait", type=float, default=30.0, help="seconds to wait for leaders (default 30)")
    from ..cli import add_split_options

    add_split_options(s, defaults=False)
    s.add_argument("--tls-cert", default=None, metavar="FILE",
                   help="serve the client ports over TLS with this certificate (PEM; with --tls-key)")
    s.add_argument("--tls-key", default=None, metavar="FILE", help="the private key of --tls-cert (PEM)")
    s.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="CA file that signed the nodes' certificates (nodes and this launcher verify them; the "
                        "peer links then use mutual TLS too)")
    s.add_argument("--client-token-file", default=None, metavar="FILE",
                   help="file holding a token every client must present (a `hello` first on each connection)")
    s.set_defaults(func=_guarded(_cmd_start))

    st = csub.add_parser("status", help="show nodes and shards of a local cluster; exit 1 if unhealthy",
                         description="Show the nodes and shards of the local cluster in --data-dir, and say "
                                     "on stderr what is unhealthy.",
                         epilog=f"Exit status: {EXIT_HEALTHY} every node answers and every shard (and the meta "
                                f"group) has a leader; {EXIT_UNHEALTHY} a node is down or not answering, or a "
                                f"shard has no leader (or an error, such as no cluster in --data-dir); "
                                f"{EXIT_UNREACHABLE} no node answers (or a usage error). The status is printed "
                                "whatever the exit status, --json included. While every node process runs, "
                                f"a missing leader or a silent node is looked at again for up to "
                                f"{STATUS_SETTLE:g} s (an election) before it counts.")
    st.add_argument("--data-dir", default=launcher.DEFAULT_DATA_DIR,
                    help=f"directory holding the whole cluster (default {launcher.DEFAULT_DATA_DIR})")
    st.add_argument("--json", action="store_true", help="print the status as one JSON object")
    st.add_argument("--keys", choices=KEY_STYLES, default="hex",
                    help="how shard ranges show their bounds: hex (default) or timestamp (RFC 3339 with "
                         "nanoseconds, for keys that are nanosecond timestamps); --json is unaffected")
    st.add_argument("--timezone", type=zone_argument, default="UTC", metavar="ZONE",
                    help="time zone of --keys timestamp: UTC (default), an offset such as +02:00, or an IANA "
                         "name such as Europe/Berlin")
    st.set_defaults(func=_guarded(_cmd_status))

    sl = csub.add_parser("split", help="split a shard in two, at a key or near its median",
                         description="Ask a shard's leader to split it: the shard keeps [start, KEY) and a new "
                                     "shard takes [KEY, end) on the same replicas. Without --at the leader "
                                     "picks a key near the shard's median. Works on the local cluster in "
                                     "--data-dir or on any cluster through --connect.")
    _add_where(sl)
    sl.add_argument("--shard", required=True, metavar="ID", help="the shard to split, e.g. s0003 (see `status`)")
    sl.add_argument("--at", metavar="KEY", default=None,
                    help="first key of the new shard, decimal or 0x-hex (default: near the median)")
    sl.add_argument("--timeout", type=float, default=30.0, help="seconds to try, retries included (default 30)")
    sl.add_argument("--json", action="store_true", help='print {"epoch", "shards": [left, right]} as JSON')
    sl.set_defaults(func=_guarded(_cmd_split))

    an = csub.add_parser("add-node", help="add a node to a running local cluster and print its id",
                         description="Start one more node in --data-dir (next id, free ports); it joins the "
                                     "running cluster, which then moves replicas to it over time.")
    an.add_argument("--data-dir", required=True, help="directory holding the whole cluster")
    an.add_argument("--wait", type=float, default=60.0, help="seconds to wait until it has joined (default 60)")
    an.set_defaults(func=_guarded(_cmd_add_node))

    rn = csub.add_parser("remove-node", help="drain a node of its replicas and take it out of the cluster",
                         description="Decommission a node: its replicas (and the leadership of its shards) move "
                                     "to the other nodes, then the cluster forgets it. With --data-dir its "
                                     "process is stopped and it leaves cluster.json; with --connect you stop "
                                     "the process yourself once this command says so.")
    _add_where(rn)
    rn.add_argument("--node", required=True, metavar="ID", help="the node to remove, e.g. n4 (see `status`)")
    rn.add_argument("--secret-file", default=None,
                    help="with --connect: the cluster secret's file, if the cluster has one")
    rn.add_argument("--timeout", type=float, default=600.0,
                    help="seconds to wait for the node to be drained (default 600)")
    rn.set_defaults(func=_guarded(_cmd_remove_node))

    sp = csub.add_parser("stop", help="stop every node of a local cluster (SIGTERM, then SIGKILL)")
    sp.add_argument("--data-dir", required=True, help="directory holding the whole cluster")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds to wait before SIGKILL (default 10)")
    sp.set_defaults(func=_guarded(_cmd_stop))


def _add_where(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` (a local cluster) or ``--connect`` (any cluster), exactly one."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", help="directory holding a local cluster")
    where.add_argument("--connect", metavar="ADDRS", help="host:port[,host:port...] of any nodes of a cluster")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="with --connect: file holding the cluster's client token, if it wants one")
    p.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="with --connect: speak TLS, trusting the CA in FILE (the local cluster's are known)")


def _connect_credentials(args: argparse.Namespace) -> Credentials:
    """What the commands taking ``--connect`` present to the nodes: the options given, or with
    ``--data-dir`` the local cluster's own (stored by ``cluster start``)."""
    if args.data_dir is not None:
        if args.token_file is not None or args.tls_ca is not None:
            raise InvalidArgument("--token-file and --tls-ca go with --connect; with --data-dir the "
                                  "cluster's own are used")
        return launcher.load(args.data_dir).credentials()
    creds = Credentials(token=read_token_file(args.token_file) if args.token_file else None, tls_ca=args.tls_ca)
    rpc.set_default_credentials(creds)  # the launcher's calls to these nodes (remove-node) present them too
    return creds


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn OS errors (unwritable dir, ...) into a one-line message and exit 1, like raftkv's own errors."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except BrokenPipeError:
            raise  # the reader of stdout left (| head): raftkv.cli.main ends quietly, not with an error
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
    settings = {name: getattr(args, name) for name in launcher.SETTINGS if getattr(args, name) is not None}
    security = {name: getattr(args, name) for name in launcher.SECURITY if getattr(args, name) is not None}
    info = start_local(args.data_dir, nodes=args.nodes, base_port=args.base_port, shards=args.shards,
                       replication=args.replication, raft=raft, wait=args.wait, settings=settings,
                       security=security or None)
    print(f"cluster ready in {info.data_dir}: {len(info.nodes)} nodes, {info.shards} shards, "
          f"replication {info.replication}")
    print(f"seeds: {info.seeds}")
    print()
    print(render_status(launcher.status(info.data_dir, include_meta=True)))
    return 0


def start_local(data_dir: str, *, nodes: int | None = None, base_port: int | None = None, shards: int | None = None,
                replication: int | None = None, raft: dict[str, Any] | None = None, wait: float = 30.0,
                settings: dict[str, int] | None = None, err: TextIO | None = None,
                security: dict[str, str] | None = None) -> launcher.ClusterInfo:
    """Start (or restart) the local cluster in ``data_dir`` as ``raftkv cluster start`` and ``raftkv up`` do.

    A new cluster without ``base_port`` listens on :func:`launcher.default_ports` (clients on
    7401.., peers on 7501..) when all of them are free, and on free ports otherwise, which it says
    on ``err`` (default stderr).  None for a layout option means "3 nodes / 12 shards / 3 replicas
    for a new cluster, what ``cluster.json`` says for an existing one"; so does None for
    ``security`` (:data:`launcher.SECURITY`: TLS files and the client token's file).
    """

    def notice(message: str) -> None:
        print(f"raftkv: {message}", file=sys.stderr if err is None else err, flush=True)

    prefer = None if base_port is not None else launcher.default_ports(3 if nodes is None else nodes)
    return launcher.start(data_dir, nodes=nodes, base_port=base_port, shards=shards, replication=replication,
                          raft=raft, wait=wait, settings=settings, prefer_ports=prefer, notice=notice,
                          security=security)


def _cmd_status(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + STATUS_SETTLE
    while True:
        st = launcher.status(args.data_dir, include_meta=True)
        code, problems = health(st)
        # a node whose process is gone stays down: only a cluster whose processes all run may settle
        running = all(n["pid"] is not None for n in st["nodes"])
        if code == EXIT_HEALTHY or not running or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if args.json:
        # the documented shape: the meta leader only counts towards the exit status
        print(json.dumps({k: v for k, v in st.items() if k != "meta"}))
    else:
        print(render_status(st, keys=args.keys, tz=parse_timezone(args.timezone)))
    if problems:
        what = "unreachable" if code == EXIT_UNREACHABLE else "unhealthy"
        print(f"raftkv: cluster {what}: {'; '.join(problems)}", file=sys.stderr)
    return code


def health(st: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit status of ``raftkv cluster status`` for a :func:`launcher.status`, and what is wrong.

    :data:`EXIT_UNREACHABLE` when no node answers; :data:`EXIT_UNHEALTHY` when a node is not
    running or not answering, no node returned the shard map, a shard has no leader, or (if ``st``
    has ``meta``) the meta group has none; else :data:`EXIT_HEALTHY` and no problems.
    """
    nodes = st["nodes"]
    # a node whose process is gone and one that runs but does not answer call for different remedies
    silent = [f"{how}: {', '.join(ids)}" for how, ids in (
        ("not running", [n["id"] for n in nodes if not n["up"] and n["pid"] is None]),
        ("not answering", [n["id"] for n in nodes if not n["up"] and n["pid"] is not None])) if ids]
    if not any(n["up"] for n in nodes):
        return EXIT_UNREACHABLE, [f"no node answers ({'; '.join(silent) or 'the cluster has no nodes'})"]
    problems = silent
    if st.get("epoch") is None:
        problems.append("no node returned the shard map")
    leaderless = [s["id"] for s in st["shards"] if s["leader"] is None]
    if leaderless:
        shown = ", ".join(leaderless[:8]) + (f" and {len(leaderless) - 8} more" if len(leaderless) > 8 else "")
        problems.append(f"no leader for {shown}")
    if "meta" in st and st["meta"].get("leader") is None:
        problems.append("no leader for the meta group")
    return (EXIT_UNHEALTHY if problems else EXIT_HEALTHY), problems


def parse_key(text: str) -> int:
    """A key as ``--at`` takes it: decimal (``1234``) or hex (``0x4d2``), in ``[0, 2**64-1]``."""
    t = text.strip()
    try:
        if t[:2].lower() == "0x" and t[2:].isascii() and t[2:].isalnum():
            key = int(t[2:], 16)
        elif t.isascii() and t.isdigit():
            key = int(t, 10)
        else:
            raise ValueError(t)
    except ValueError:
        raise InvalidArgument(f"bad key {text!r}: write it in decimal (1234) or hex (0x4d2)") from None
    if key > MAX_KEY:
        raise InvalidArgument(f"key {text} is outside the key space [0, 2**64-1]")
    return key


def _cmd_split(args: argparse.Namespace) -> int:
    from ..client.sync import Client  # the client and its event loop only for this command

    if args.timeout <= 0:
        raise InvalidArgument(f"--timeout must be positive, not {args.timeout:g}")
    at = None if args.at is None else parse_key(args.at)
    shard_id = args.shard.strip()
    creds = _connect_credentials(args)
    if args.data_dir is not None:
        info = launcher.load(args.data_dir)
        seeds = [a for n, a in zip(info.nodes, info.addresses, strict=True) if info.pids[n.id] is not None]
        where = info.data_dir
        if not seeds:
            raise Unavailable(f"no node of the cluster in {where} is running; start it with "
                              f"`raftkv cluster start --data-dir {args.data_dir}`")
    else:
        seeds, where = args.connect, args.connect
    try:
        # a quick probe: an unreachable cluster is reported in seconds, not after the whole --timeout
        call_any(seeds, "map", timeout=min(args.timeout, 3.0), credentials=creds)
    except Unavailable as exc:
        raise Unavailable(f"cannot reach the cluster at {where}: {exc.message}") from None
    # a split is not retried blindly (see AsyncClient.split_shard), so give each attempt room to finish
    db = Client(seeds, timeout=args.timeout, attempt_timeout=min(args.timeout, 10.0), token=creds.token,
                tls=creds.tls, tls_ca=creds.tls_ca)
    try:
        try:
            db.connect()
        except Unavailable as exc:
            raise Unavailable(f"cannot reach the cluster at {where}: {exc.message}") from None
        try:
            reply = db.split_shard(shard_id, at)
        except Unavailable as exc:
            raise Unavailable(f"cannot split {shard_id}: no answer within {args.timeout:g}s, so the split may "
                              f"or may not have happened (see `raftkv cluster status`): {exc.message}") from None
        except RaftKVError as exc:
            raise type(exc)(f"cannot split {shard_id}: {exc.message}", **exc.details) from None
    finally:
        db.close()
    shards = [_split_shard_view(d) for d in reply["shards"]]
    if args.json:
        print(json.dumps({"epoch": int(reply["epoch"]), "shards": shards}))
    else:
        print(render_split(int(reply["epoch"]), shards))
    return 0


def _split_shard_view(d: dict[str, Any]) -> dict[str, Any]:
    """A shard of a split reply in the form ``status`` uses (``end`` an int, 2**64 for the last)."""
    return {"id": str(d["id"]), "start": int(d["start"]),
            "end": KEY_SPACE_END if d["end"] is None else int(d["end"]),
            "replicas": [str(r) for r in d["replicas"]], "generation": int(d.get("generation", 1)),
            "stripe": None if d.get("stripe") is None else [int(x) for x in d["stripe"]]}


def _cmd_add_node(args: argparse.Namespace) -> int:
    if args.wait <= 0:
        raise InvalidArgument(f"--wait must be positive, not {args.wait:g}")
    print(launcher.add_node(args.data_dir, wait=args.wait))
    return 0


def _cmd_remove_node(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise InvalidArgument(f"--timeout must be positive, not {args.timeout:g}")
    node_id = args.node.strip()
    if not node_id:
        raise InvalidArgument("--node needs a node id, e.g. n4")
    if args.data_dir is not None and args.secret_file is not None:
        raise InvalidArgument("--secret-file goes with --connect; with --data-dir the cluster's own secret is used")

    def progress(left: int) -> None:
        # on stderr: stdout keeps only the outcome
        print(f"{node_id}: {left} shard{'' if left == 1 else 's'} still with a replica on it",
              file=sys.stderr, flush=True)

    try:
        if args.data_dir is not None:
            outcome = launcher.remove_node(args.data_dir, node_id, wait=args.timeout, progress=progress)
            print(f"{node_id} removed from the cluster; its process: {outcome}")
            return 1 if outcome == "still running" else 0
        secret = launcher.read_secret(args.secret_file)
        _connect_credentials(args)
        try:
            # a quick probe: an unreachable cluster is reported in seconds, not after the whole --timeout
            call_any(args.connect, "nodes", timeout=min(args.timeout, 3.0))
        except Unavailable as exc:
            raise Unavailable(f"cannot reach the cluster at {args.connect}: {exc.message}") from None
        launcher.drain_and_forget(args.connect, node_id, secret, timeout=args.timeout, progress=progress)
    except InvalidArgument as exc:
        hint = ""
        if "unauthenticated" in exc.message and args.secret_file is None and args.connect is not None:
            hint = " (the cluster has a secret: pass its file with --secret-file)"
        raise InvalidArgument(f"cannot remove {node_id}: {exc.message}{hint}") from None
    print(f"{node_id} removed from the cluster: it holds no replica and the other nodes no longer talk to it. "
          f"Stop its process yourself now (this command cannot signal a process on another machine).")
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


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell (numbers in the ``right`` columns aligned right); None is "-"."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in cells)


def key_range(start: int, end: int, keys: str = "hex", tz: tzinfo | None = None) -> str:
    """``[start, end)`` as inclusive bounds, so the last shard reads ...ffff rather than 2**64: hex, or
    with ``keys="timestamp"`` RFC 3339 timestamps (nanoseconds since the epoch) in ``tz`` (None: UTC)."""
    if keys == "timestamp":
        from ..query.timestamps import format_timestamp

        return f"{format_timestamp(start, tz)}..{format_timestamp(end - 1, tz)}"
    return f"{start:#018x}..{end - 1:#018x}"


def human_bytes(n: int | None) -> str | None:
    """``n`` bytes as people read them: ``512 B``, ``1.5 KiB``, ``3.2 GiB`` (None stays None)."""
    if n is None:
        return None
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_count(n: int | None) -> str | None:
    """An approximate count, short: ``950``, ``12.3k``, ``4.1M``, ``2.0G`` (None stays None)."""
    if n is None:
        return None
    for scale, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)


def human_rate(rate: float | None) -> str | None:
    """Writes per second: one decimal below 100, whole above (None stays None)."""
    if rate is None:
        return None
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def stripe_text(stripe: Sequence[int] | None) -> str | None:
    """``[i, K]`` as ``i/K`` (stripe i of K); None for a range shard."""
    return None if stripe is None else f"{stripe[0]}/{stripe[1]}"


def render_status(st: dict[str, Any], keys: str = "hex", tz: tzinfo | None = None) -> str:
    """The human form of :func:`raftkv.cluster.launcher.status`.

    One row per shard, in map order.  Stripes of one segment share their range, so nothing here
    assumes ranges are unique.  Fields a node did not report show as "-".  ``keys`` and ``tz``:
    how ranges are shown (see :func:`key_range`).
    """
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
    if st.get("epoch") is not None:
        summary += f", map epoch {st['epoch']}"
    # MEMBER and the counts are the meta leader's view (a status from before membership has none:
    # "-"); STATE is what this machine sees of the process
    node_rows = [(n["id"], n["address"], n["pid"],
                  "up" if n["up"] else "down" if n["pid"] is None else "not answering",
                  n.get("state"), n.get("replicas"), n.get("leaders"), n.get("metrics")) for n in nodes]
    out = [summary, "", _table(("NODE", "ADDRESS", "PID", "STATE", "MEMBER", "REPLICAS", "LEADERS", "METRICS"),
                               node_rows, right=(5, 6))]
    if shards:
        shard_rows = [(s["id"], key_range(s["start"], s["end"], keys, tz), stripe_text(s.get("stripe")),
                       s.get("generation"), ",".join(s["replicas"]), s["leader"], human_count(s.get("keys")),
                       human_bytes(s.get("bytes")), human_rate(s.get("writes_per_s")))
                      for s in shards]
        shown = "RFC 3339" if keys == "timestamp" else "hex"
        headers = ("SHARD", f"RANGE ({shown}, inclusive)", "STRIPE", "GEN", "REPLICAS", "LEADER", "~KEYS", "~SIZE",
                   "WRITES/S")
        out += ["", _table(headers, shard_rows, right=(3, 6, 7, 8))]
    return "\n".join(out)


def render_split(epoch: int, shards: Sequence[dict[str, Any]]) -> str:
    """The human form of a split's outcome: the split key, the new epoch and the two shards."""
    left, right = shards
    lines = [f"split {left['id']} at {right['start']} ({right['start']:#018x}): {left['id']} and "
             f"{right['id']}, shard map epoch {epoch}", ""]
    rows = [(s["id"], key_range(s["start"], s["end"]), s["generation"], ",".join(s["replicas"])) for s in shards]
    lines.append(_table(("SHARD", "RANGE (hex, inclusive)", "GEN", "REPLICAS"), rows, right=(2,)))
    return "\n".join(lines)
