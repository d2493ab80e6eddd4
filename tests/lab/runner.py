"""The fault lab: a real 3-node cluster, P recording clients, a nemesis, and a linearizability check.

One run:

1. starts a local cluster (launcher) in a fresh directory with short Raft timeouts, once plainly to
   fix its ports, then again with every peer link routed through a :class:`LinkProxy`
   (``peer_via``), so that partitions can be made without touching the kernel;
2. runs ``clients`` threads, each with its own :class:`raftkv.Client`, issuing a seeded mix of
   put / get / delete over ``keys`` keys, recording every call and its outcome;
3. meanwhile the nemesis carries out a seeded fault schedule (``nemesis.schedule``);
4. heals everything, waits for the cluster, reads every key once more (recorded too);
5. writes ``history.jsonl``, ``nemesis.jsonl``, ``summary.json`` and the node logs to ``out``,
   runs the checker (``tests.lab.check.check_history``) and stops every node it started.

History lines are ``{"process", "op", "key", "value", "call", "ret", "ok"}`` with
``time.monotonic()`` times.  ``ok`` is None (and ``ret`` None) when the outcome is unknown: a write
that failed with a timeout, a lost connection or ``Unavailable`` may still take effect later.
``ok`` is False only when the call certainly had no effect: an invalid argument, or any failed
read.  After an unknown outcome a client carries on as a new process (its id grows by
``clients``), so every process has at most one call outstanding, as a checker expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkv import Client
from raftkv.client import rpc
from raftkv.cluster import launcher
from raftkv.errors import InvalidArgument, NotLeader, RaftKVError, Unavailable
from raftkv.server.config import format_hostport

from ..helpers import signal_ours
from .nemesis import Fault, Nemesis, parse_faults, schedule
from .proxy import LinkProxy

# short timeouts so that faults bite within a short run: a lost leader is replaced in about a second
LAB_RAFT: dict[str, Any] = {"heartbeat": 0.05, "election_min": 0.4, "election_max": 0.8,
                            # small enough that compaction (and snapshot catch-up) happens under faults
                            "compact_entries": 1000}
# "fresh": a put to a key never written before (a Jepsen "set"): each is read back at the end, so an
# acknowledged write that a crash lost shows up as a final read that no order explains -- on keys
# that later writes cannot hide, unlike the contended ones
OP_WEIGHTS = {"put": 40, "get": 40, "delete": 10, "fresh": 10}
_SPREAD = 0x9E3779B97F4A7C15  # odd: multiplying by it permutes the u64 space, spreading fresh keys
NODES = 3
REPORT_WINDOW = 60  # ops of a failing window printed by report(); summary.json has them all
EXIT_LINEARIZABLE, EXIT_VIOLATION, EXIT_LAB_FAILED, EXIT_UNCHECKED = 0, 1, 2, 3


@dataclass
class LabConfig:
    """One lab run's parameters."""

    duration: float
    faults: list[str]
    seed: int
    out: str
    clients: int = 5
    keys: int = 5
    shards: int = 1
    client_timeout: float = 5.0
    think: float = 0.0  # mean pause between one client's calls (exponential), seconds
    keep: bool = False  # keep the cluster directory (data) after the run
    raft: dict[str, Any] = field(default_factory=lambda: dict(LAB_RAFT))


@dataclass
class LabResult:
    """What a run produced: the exit status and the summary written to ``summary.json``."""

    exit_code: int
    summary: dict[str, Any]
    verdict: Any = None


# --- the cluster under test -----------------------------------------------------------------------


class LabCluster:
    """A launcher cluster whose peer links run through proxies; implements ``nemesis.ClusterControl``."""

    def __init__(self, root: str, shards: int, raft: dict[str, Any]) -> None:
        self.root = root
        self.shards = shards
        self.raft = raft
        self.pids: set[int] = set()  # every node process ever started for this run: all killed at the end
        self.proxies: dict[tuple[str, str], LinkProxy] = {}  # (src, dst) -> proxy src dials dst through
        self.info: launcher.ClusterInfo | None = None
        self.node_ids: list[str] = []
        self._shard_ids: list[str] = []
        self.keys: list[int] = []  # the clients' contended keys: splits cut between them

    # lifecycle

    def start(self) -> None:
        """Start the cluster with every peer link through a proxy; returns when it is ready."""
        # the first start fixes the ports (the launcher picks free ones), which the proxies need
        info = launcher.start(self.root, nodes=NODES, shards=self.shards, raft=self.raft, wait=60)
        self._track(info)
        launcher.stop(self.root)
        for src in info.nodes:
            for dst in info.nodes:
                if src.id != dst.id:
                    self.proxies[(src.id, dst.id)] = LinkProxy(dst.peer, name=f"{src.id}->{dst.id}")
        via = {src.id: {dst.id: self.proxies[(src.id, dst.id)].address for dst in info.nodes if dst.id != src.id}
               for src in info.nodes}
        self.info = launcher.start(self.root, nodes=None, shards=None, replication=None, peer_via=via, wait=60)
        self._track(self.info)
        self.node_ids = [n.id for n in self.info.nodes]
        smap = rpc.call(self.info.addresses[0], "map", timeout=5.0)["map"]
        self._shard_ids = [s["id"] for s in smap["shards"]]

    def _track(self, info: launcher.ClusterInfo) -> None:
        self.pids |= {p for p in info.pids.values() if p}

    def address(self, node: str) -> str:
        assert self.info is not None
        return format_hostport(self.info.node(node).client)

    @property
    def seeds(self) -> str:
        assert self.info is not None
        return self.info.seeds

    def heal_all(self, wait: float = 60.0) -> None:
        """Heal every link, resume every paused node, start every dead one; wait until ready."""
        self.heal_links()
        signal_ours(None, self.root, signal.SIGCONT)
        self.restart_all(wait)

    def stop(self) -> None:
        """Stop every node this run started (launcher, then SIGKILL by PID) and close the proxies."""
        try:
            with contextlib.suppress(RaftKVError, OSError):
                launcher.stop(self.root, timeout=10)
        finally:
            signal_ours(None, self.root)  # nothing we started may outlive the run, whatever stop() did
            for p in self.proxies.values():
                p.close()

    # ClusterControl

    def leader(self, shard: int) -> str | None:
        """The node that says it leads data shard ``shard % shards`` with the highest term, or None."""
        if not self._shard_ids:
            return None
        group = self._shard_ids[shard % len(self._shard_ids)]
        best: tuple[int, str] | None = None
        deadline = time.monotonic() + 5.0
        while best is None and time.monotonic() < deadline:
            for node in self.node_ids:
                try:
                    st = rpc.call(self.address(node), "status", timeout=1.0)
                except RaftKVError:
                    continue
                for g in st["groups"]:
                    if g["id"] == group and g["state"] == "leader" and (best is None or g["term"] > best[0]):
                        best = (g["term"], node)
            if best is None:
                time.sleep(0.1)
        return None if best is None else best[1]

    def signal(self, node: str, sig: int) -> int | None:
        """Send ``sig`` to ``node`` (launcher.kill_node: for KILL it waits until the process is gone)."""
        return launcher.kill_node(self.root, node, sig)

    def kill_all(self) -> list[int]:
        """kill -9 every node at once (signals first, then wait), so none outlives the others by much."""
        info = launcher.load(self.root)
        pids = [p for p in info.pids.values() if p]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for node in self.node_ids:
            launcher.kill_node(self.root, node, signal.SIGKILL)  # waits for the exit, clears the PID file
        return pids

    def restart(self, node: str) -> None:
        """Start ``node`` again; returns once it answers."""
        self.pids.add(launcher.start_node(self.root, node, wait=60))

    def restart_all(self, wait: float = 60.0) -> None:
        """Start every node not running and wait until every group has a leader."""
        # None: keep the stored layout, Raft options and peer_via (the proxies)
        self.info = launcher.start(self.root, nodes=None, shards=None, replication=None, wait=wait)
        self._track(self.info)

    def cut(self, a: str, b: str, mode: str) -> None:
        """Cut a -> b and b -> a."""
        self.proxies[(a, b)].cut(mode)
        self.proxies[(b, a)].cut(mode)

    def heal_links(self) -> None:
        """Heal every proxy."""
        for p in self.proxies.values():
            p.heal()

    def reshape(self, kind: str, pick: int) -> dict[str, Any] | None:
        """Split or stripe a range shard of the current map at its leader (see nemesis.ClusterControl).

        The ``pick``-th range shard is tried first, then the others in turn, until one takes the
        change.  A split cuts between the clients' keys when the shard holds any (so that
        operations on neighbouring keys cross the new boundary); a stripe starts past the
        shard's largest key, which a shard whose keys reach its end cannot do.
        """
        smap = rpc.call_any(self.seeds, "map", timeout=2.0)["map"]
        shards = [s for s in smap["shards"] if not s.get("stripe")]
        for i in range(len(shards)):
            shard = shards[(pick + i) % len(shards)]
            start, end = shard["start"], 2**64 if shard["end"] is None else shard["end"]
            fields: dict[str, Any] = {"shard": shard["id"]}
            if kind == "split":
                inside = [k for k in self.keys if start < k < end]
                fields["at"] = inside[pick % len(inside)] if inside else start + (end - start) // 2
                if not start < fields["at"] < end:
                    continue
            else:
                fields["stripes"] = 3
            reply = self._at_leader(kind, fields)
            if reply is not None:
                return reply
        return None

    def move(self, pick: int) -> dict[str, Any] | None:
        """See nemesis.ClusterControl.move."""
        from raftkv.server import maplink

        assert self.info is not None
        secret = launcher.read_secret(os.path.join(self.root, "secret")) \
            if os.path.exists(os.path.join(self.root, "secret")) else None
        smap = rpc.call_any(self.seeds, "map", timeout=2.0)["map"]
        full = [s for s in smap["shards"] if len(s["replicas"]) == len(self.node_ids) and not s.get("learners")]
        if not full:
            return None
        shard = full[pick % len(full)]
        leader = self.leader_of_group(shard["id"])
        victim = next((n for n in shard["replicas"] if n != leader), None)
        if leader is None or victim is None:
            return None
        fields = {"shard": shard["id"], "add": None, "remove": victim,
                  "proof": maplink.proof(secret, ["reconfigure", shard["id"], None, victim])}
        reply = self._at_leader("reconfigure", fields)
        if reply is None or reply.get("step") != "change":
            return None
        return {"shard": shard["id"], "removed": victim}

    def repaired(self, shard: str, timeout: float) -> bool:
        """See nemesis.ClusterControl.repaired."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                now = {s["id"]: s for s in rpc.call_any(self.seeds, "map", timeout=2.0)["map"]["shards"]}
            except RaftKVError:
                continue
            s = now.get(shard)
            if s is not None and len(s["replicas"]) == len(self.node_ids) and not s.get("learners"):
                return True
        return False

    def leader_of_group(self, group: str) -> str | None:
        """The node that says it leads ``group``, or None."""
        for node in self.node_ids:
            try:
                st = rpc.call(self.address(node), "status", timeout=1.0, brief=True)
            except RaftKVError:
                continue
            if any(g["id"] == group and g["state"] == "leader" for g in st["groups"]):
                return node
        return None

    def _at_leader(self, op: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """``op`` answered by the shard's leader (the nodes are asked in turn), or None if refused."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            for node in self.node_ids:
                try:
                    return rpc.call(self.address(node), op, timeout=10.0, **fields)
                except (NotLeader, Unavailable):
                    continue  # not the leader, or down (a fault): ask the next node
                except RaftKVError:
                    return None  # refused (say, no room past the largest key)
            time.sleep(0.2)
        return None


# --- clients --------------------------------------------------------------------------------------


class History:
    """The recorded operations, appended by every client thread."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, process: int, op: str, key: int, value: str | None, call: float, ret: float | None,
               ok: bool | None) -> None:
        with self._lock:
            self.ops.append({"process": process, "op": op, "key": key, "value": value, "call": call,
                             "ret": ret, "ok": ok})

    def sorted(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self.ops, key=lambda o: (o["call"], o["process"]))


def _decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


class ClientWorker:
    """One client thread: its own Client, a seeded stream of calls, every outcome recorded."""

    def __init__(self, index: int, cfg: LabConfig, seeds: str, keys: Sequence[int], history: History,
                 stop: threading.Event) -> None:
        self.index = index
        self.cfg = cfg
        self.seeds = seeds
        self.keys = keys
        self.history = history
        self.stop = stop
        self.process = index
        self.errors: Counter[str] = Counter()
        self.fresh: list[int] = []  # fresh keys this client wrote (or may have written)
        self._thread = threading.Thread(target=self._run, name=f"lab-client-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the thread; False if it is still running (a call stuck past its deadline)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        rng = random.Random(f"{self.cfg.seed}:client:{self.index}")
        db = Client(self.seeds, timeout=self.cfg.client_timeout,
                    attempt_timeout=min(1.5, self.cfg.client_timeout))
        n = 0
        try:
            while not self.stop.is_set():
                op = rng.choices(list(OP_WEIGHTS), weights=list(OP_WEIGHTS.values()))[0]
                key = rng.choice(self.keys)
                n += 1
                if op == "fresh":
                    op, key = "put", fresh_key(self.index, n)
                    if key in self.keys:  # astronomically unlikely; a fresh key must be written once
                        continue
                    self.fresh.append(key)
                self.one(db, op, key, f"p{self.process}-{n}" if op == "put" else None)
                if self.cfg.think > 0:
                    self.stop.wait(rng.expovariate(1.0 / self.cfg.think))
        finally:
            with contextlib.suppress(Exception):
                db.close()

    def one(self, db: Client, op: str, key: int, value: str | None) -> None:
        """Make one call and record it; after an unknown outcome, continue as a new process."""
        process = self.process
        call = time.monotonic()
        try:
            if op == "put":
                assert value is not None
                db.put(key, value)
            elif op == "get":
                value = _decode(db.get(key))
            else:
                db.delete(key)
        except InvalidArgument as exc:  # refused before anything was sent: certainly no effect
            self.errors[type(exc).__name__] += 1
            self.history.record(process, op, key, value, call, time.monotonic(), False)
            return
        except Exception as exc:  # noqa: BLE001 -- any failure: a read had no effect, a write may have
            self.errors[type(exc).__name__] += 1
            if op == "get":
                self.history.record(process, op, key, None, call, time.monotonic(), False)
            else:
                self.history.record(process, op, key, value, call, None, None)
                self.process += self.cfg.clients  # this process may still have the call in flight
            return
        self.history.record(process, op, key, value, call, time.monotonic(), True)


def fresh_key(client: int, n: int) -> int:
    """Client ``client``'s ``n``-th fresh key: unique per (client, n) and spread over every shard."""
    return (((1 << 63) | (client << 40) | n) * _SPREAD) % (1 << 64)


def lab_keys(count: int, shards: int) -> list[int]:
    """The keys the clients use: 0..count-1 with one shard; spread over the key space with more."""
    stride = (1 << 64) // count if shards > 1 else 1
    return [i * stride for i in range(count)]


# --- one run --------------------------------------------------------------------------------------


def read_back_fresh(db: Client, fresh: list[int], history: History, process: int,
                    problems: list[str]) -> dict[str, int]:
    """Read every fresh key back with one linearizable scan and record each as a get.

    A scan reads each shard at one point between its call and its return, so every row is a get
    with that call and return.  Returns counts: keys written, and acknowledged ones now missing.
    """
    wanted = set(fresh)
    found: dict[int, str | None] = {}
    call = time.monotonic()
    try:
        for k, v in db.scan(0, (1 << 64) - 1):
            if k in wanted:
                found[k] = _decode(v)
    except RaftKVError as exc:
        problems.append(f"final scan of the fresh keys failed: {exc}")
        return {"written": len(wanted), "acknowledged_lost": -1}
    ret = time.monotonic()
    for k in sorted(wanted):
        history.record(process, "get", k, found.get(k), call, ret, True)
    acked = {o["key"]: o["value"] for o in history.ops if o["ok"] and o["op"] == "put" and o["key"] in wanted}
    lost = sorted(k for k, v in acked.items() if found.get(k) != v)
    if lost:
        problems.append(f"{len(lost)} acknowledged fresh writes missing or changed, e.g. key {lost[0]}")
    return {"written": len(wanted), "acknowledged": len(acked), "acknowledged_lost": len(lost)}


def _outcomes(ops: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for o in ops:
        name = "ok" if o["ok"] else "unknown" if o["ok"] is None else "fail"
        out.setdefault(o["op"], {"ok": 0, "fail": 0, "unknown": 0})[name] += 1
    return out


def _write_jsonl(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _verdict_json(verdict: Any) -> dict[str, Any] | None:
    if verdict is None:
        return None
    return {"linearizable": bool(verdict.linearizable), "key": getattr(verdict, "key", None),
            "window": getattr(verdict, "window", None)}


def check(ops: list[dict[str, Any]]) -> Any:
    """Run the checker on ``ops``; None if the checker module is not there (yet)."""
    try:
        from .check import check_history
    except ImportError:
        return None
    return check_history(ops)


def run(cfg: LabConfig, log: Any = print) -> LabResult:
    """One lab run (see the module docstring).  Always stops every node it started."""
    kinds = parse_faults(",".join(cfg.faults))
    if cfg.clients < 1 or cfg.keys < 1 or cfg.duration <= 0:
        raise ValueError("need clients >= 1, keys >= 1 and a positive duration")
    os.makedirs(cfg.out, exist_ok=True)
    for name in ("history.jsonl", "nemesis.jsonl", "summary.json"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(cfg.out, name))
    root = tempfile.mkdtemp(prefix="raftkv-lab-")
    plan: list[Fault] = schedule(kinds, cfg.duration, random.Random(cfg.seed), [f"n{i + 1}" for i in range(NODES)])
    cluster = LabCluster(root, cfg.shards, cfg.raft)
    history = History()
    stop = threading.Event()
    workers: list[ClientWorker] = []
    nemesis: Nemesis | None = None
    summary: dict[str, Any] = {"seed": cfg.seed, "faults": kinds, "duration": cfg.duration, "clients": cfg.clients,
                               "keys": cfg.keys, "shards": cfg.shards, "raft": cfg.raft,
                               "schedule": [f.to_json() for f in plan], "cluster_dir": root}
    problems: list[str] = []
    interrupted = False
    try:
        log(f"lab: seed {cfg.seed}, faults {','.join(kinds) or '-'}, {cfg.duration:g}s, {cfg.clients} clients, "
            f"{cfg.keys} keys; cluster in {root}")
        cluster.start()
        summary["pids"] = sorted(cluster.pids)
        keys = lab_keys(cfg.keys, cfg.shards)
        cluster.keys = keys
        t0 = time.monotonic()
        summary["t0"] = t0
        nemesis = Nemesis(cluster, plan, os.path.join(cfg.out, "nemesis.jsonl"), t0, t0 + cfg.duration)
        workers = [ClientWorker(i, cfg, cluster.seeds, keys, history, stop) for i in range(cfg.clients)]
        for w in workers:
            w.start()
        nemesis.start()
        time.sleep(cfg.duration)
        nemesis.stop.set()
        nemesis.join(timeout=120)
        stop.set()
        stuck = [w.index for w in workers if not w.join(cfg.client_timeout + 30)]
        if stuck:
            problems.append(f"client threads {stuck} did not finish a call within their deadline")
        # the final phase: everything healed, then every key read once more
        cluster.heal_all()
        launcher.wait_ready(cluster.info.addresses if cluster.info else [], timeout=60)
        final_process = max(w.process for w in workers) + 1
        with Client(cluster.seeds, timeout=30) as db:
            for key in keys:
                call = time.monotonic()
                try:
                    value = _decode(db.get(key))
                except RaftKVError as exc:
                    problems.append(f"final read of key {key} failed: {exc}")
                    history.record(final_process, "get", key, None, call, time.monotonic(), False)
                else:
                    history.record(final_process, "get", key, value, call, time.monotonic(), True)
            summary["fresh"] = read_back_fresh(db, [k for w in workers for k in w.fresh], history,
                                               final_process + 1, problems)
    except BaseException as exc:
        stop.set()
        if nemesis is not None:
            nemesis.stop.set()
        if not isinstance(exc, Exception):
            interrupted = True  # Ctrl-C: stop every node, keep what was recorded, then re-raise
        problems.append("interrupted" if interrupted else f"lab failed: {exc!r}")
    finally:
        stop.set()
        cluster.stop()
        if nemesis is not None:
            nemesis.join(timeout=10)
        _copy_logs(root, cfg.out)
        if not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
    ops = history.sorted()
    _write_jsonl(os.path.join(cfg.out, "history.jsonl"), ops)
    summary["ops"] = _outcomes(ops)
    summary["errors"] = dict(sum((w.errors for w in workers), Counter()))
    summary["nemesis"] = nemesis.events if nemesis else []
    summary["problems"] = problems
    verdict = check(ops) if ops and not interrupted else None
    summary["verdict"] = _verdict_json(verdict)
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
        f.write("\n")
    if interrupted:
        raise KeyboardInterrupt
    if verdict is None:
        code = EXIT_LAB_FAILED if problems else EXIT_UNCHECKED
    elif not verdict.linearizable:
        code = EXIT_VIOLATION
    else:
        code = EXIT_LAB_FAILED if problems else EXIT_LINEARIZABLE
    return LabResult(code, summary, verdict)


def _copy_logs(root: str, out: str) -> None:
    dest = os.path.join(out, "logs")
    os.makedirs(dest, exist_ok=True)
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        src = os.path.join(root, name, launcher.LOG_FILE)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, f"{name}.log"))


def report(result: LabResult) -> str:
    """A human summary of a run: op counts, problems, the verdict and a failing window."""
    s = result.summary
    lines = [f"seed {s['seed']} faults {','.join(s['faults']) or '-'} duration {s['duration']:g}s"]
    for op, counts in sorted(s.get("ops", {}).items()):
        lines.append(f"  {op:6} ok {counts['ok']:5}  fail {counts['fail']:5}  unknown {counts['unknown']:5}")
    for ev in s.get("nemesis", []):
        if ev["event"] in ("start", "skip", "error"):
            what = {k: v for k, v in ev.items() if k not in ("time", "plan", "index")}
            lines.append(f"  nemesis {what}")
    fresh = s.get("fresh")
    if fresh:
        lines.append(f"  fresh keys: {fresh['written']} written, {fresh.get('acknowledged', 0)} acknowledged, "
                     f"{fresh['acknowledged_lost']} of those lost")
    lines += [f"  problem: {p}" for p in s.get("problems", [])]
    v = s.get("verdict")
    if v is None:
        lines.append("verdict: not checked (tests/lab/check.py missing)" if not s.get("problems") else
                     "verdict: not checked")
    elif v["linearizable"]:
        lines.append("verdict: linearizable")
    else:
        lines.append(f"verdict: NOT linearizable, key {v['key']}")
        window = v.get("window")
        if isinstance(window, (list, tuple)):
            lines += [f"    {json.dumps(o, default=str)}" for o in window[:REPORT_WINDOW]]
            if len(window) > REPORT_WINDOW:
                lines.append(f"    ... {len(window) - REPORT_WINDOW} more in summary.json")
        elif window is not None:
            lines.append(f"    {window}")
    return "\n".join(lines)
