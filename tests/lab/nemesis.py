"""The nemesis: a seeded fault schedule (pure) and the thread that carries it out on a live cluster.

:func:`schedule` decides everything that can be decided up front -- which fault, when, for how
long, which node or link, which cut mode -- from a :class:`random.Random`, so one seed gives one
plan and the plan is tested without a cluster.  Only what depends on the running cluster (who
leads the shard *now*) is resolved when the fault fires.

Faults run one at a time, each healed before the next starts: a kill restarts the node, a pause
resumes it, a partition heals.  If the cluster is slower than planned, later faults shift rather
than overlap, and a fault that would run past the end of the run is skipped.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

FAULT_KINDS = ("kill", "leader-kill", "pause", "partition", "restart-all", "split", "stripe", "move")
PARTITION_VARIANTS = ("leader", "node", "link")  # isolate the leader / a random node / cut one pair
CUT_MODES = ("reset", "blackhole")

# how long each kind of fault lasts (seconds, drawn uniformly): pauses outlast the lab's election
# timeout (0.4-0.8 s) so that a paused leader is deposed while it sleeps
HOLD = {"kill": (1.0, 4.0), "leader-kill": (1.0, 4.0), "pause": (1.5, 3.0), "partition": (2.0, 5.0),
        "restart-all": (0.5, 2.0), "split": (0.0, 0.0), "stripe": (0.0, 0.0), "move": (0.0, 0.0)}
# time the cluster needs after the heal before the next fault should start (restarts, elections)
RECOVERY = {"kill": 2.0, "leader-kill": 2.0, "pause": 1.0, "partition": 1.0, "restart-all": 4.0,
            "split": 1.0, "stripe": 1.0, "move": 4.0}
QUIET = (0.5, 2.5)  # extra fault-free time after each recovery, so clients get served between faults


@dataclass(frozen=True)
class Fault:
    """One planned fault.  ``at`` is seconds after the run starts (the earliest it may fire)."""

    at: float
    kind: str
    hold: float
    node: str | None = None  # kill: the victim; partition "node": the node cut off
    peer: str | None = None  # partition "link": the other end of the cut pair
    variant: str | None = None  # partition: one of PARTITION_VARIANTS
    mode: str | None = None  # partition: one of CUT_MODES
    shard: int = 0  # leader faults: which data shard's leader (index into the map, modulo its size)

    def to_json(self) -> dict[str, Any]:
        """The fault as a JSON object (None fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_faults(text: str) -> list[str]:
    """``"kill,pause"`` as a list of fault kinds; ValueError naming an unknown one."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
    return list(dict.fromkeys(kinds))


def schedule(faults: Sequence[str], duration: float, rng: random.Random,
             nodes: Sequence[str] = ("n1", "n2", "n3"), warmup: float = 2.0) -> list[Fault]:
    """A fault plan for a run of ``duration`` seconds, drawn from ``rng``.

    Kinds are drawn from a shuffled bag refilled when empty, so every requested kind comes up once
    before any repeats.  The first fault starts after ``warmup``; every fault, with its recovery
    time, ends by ``duration``; faults never overlap.  Unknown kinds raise ValueError.
    """
    kinds = parse_faults(",".join(faults))
    if len(nodes) < 2:
        raise ValueError("faults need at least two nodes")
    plan: list[Fault] = []
    bag: list[str] = []
    t = warmup
    while kinds:
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        kind = bag.pop()
        hold = round(rng.uniform(*HOLD[kind]), 3)
        if t + hold + RECOVERY[kind] > duration:
            break
        plan.append(_draw(kind, round(t, 3), hold, rng, nodes))
        t += hold + RECOVERY[kind] + rng.uniform(*QUIET)
    return plan


def _draw(kind: str, at: float, hold: float, rng: random.Random, nodes: Sequence[str]) -> Fault:
    shard = rng.randrange(1 << 16)
    if kind == "kill":
        return Fault(at, kind, hold, node=rng.choice(nodes))
    if kind == "partition":
        variant = rng.choice(PARTITION_VARIANTS)
        mode = rng.choice(CUT_MODES)
        if variant == "leader":
            return Fault(at, kind, hold, variant=variant, mode=mode, shard=shard)
        a, b = rng.sample(list(nodes), 2)
        return Fault(at, kind, hold, node=a, peer=b if variant == "link" else None, variant=variant, mode=mode)
    return Fault(at, kind, hold, shard=shard)


# --- carrying out the plan ------------------------------------------------------------------------


class ClusterControl(Protocol):
    """What the nemesis needs from the cluster under test (the runner's LabCluster provides it)."""

    node_ids: list[str]

    def leader(self, shard: int) -> str | None:
        """The node that leads data shard ``shard`` (index modulo the shard count) now, or None."""

    def signal(self, node: str, sig: int) -> int | None:
        """Send ``sig`` to ``node``'s process (for KILL: and wait until it is gone); its PID or None."""

    def kill_all(self) -> list[int]:
        """kill -9 every node at once; the PIDs killed."""

    def restart(self, node: str) -> None:
        """Start ``node`` again (waits until it answers)."""

    def restart_all(self) -> None:
        """Start every node that is not running (waits until the cluster is ready)."""

    def cut(self, a: str, b: str, mode: str) -> None:
        """Cut both directions between ``a`` and ``b``."""

    def heal_links(self) -> None:
        """Heal every cut link."""

    def reshape(self, kind: str, pick: int) -> dict[str, Any] | None:
        """Split (``kind`` "split") or stripe ("stripe") the ``pick``-th range shard of the current
        map (modulo their number) at its leader; the node's reply, or None if none could."""

    def move(self, pick: int) -> dict[str, Any] | None:
        """Take a follower's replica away from the ``pick``-th fully replicated shard of the
        current map (modulo their number), through its leader: ``{"shard", "removed"}``, or None
        if no shard took the change."""

    def repaired(self, shard: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the cluster's mover to give ``shard`` its full replica set
        back (a learner, a snapshot, a promotion); whether it did."""


class Nemesis:
    """Runs a plan against a cluster on its own thread, logging each event as a JSON line."""

    def __init__(self, cluster: ClusterControl, plan: Sequence[Fault], log_path: str, t0: float,
                 end: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.plan = list(plan)
        self.t0 = t0
        self.end = end  # monotonic time by which every fault must be healed
        self.clock = clock
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self._log = open(log_path, "a")  # noqa: SIM115 -- closed by join()
        self._thread = threading.Thread(target=self._run, name="lab-nemesis", daemon=True)

    def start(self) -> None:
        """Start carrying out the plan."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the plan to finish (or be abandoned after :attr:`stop`), then close the log."""
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._log.close()

    def event(self, fault: Fault | None, event: str, **detail: Any) -> None:
        """Record one nemesis event with its monotonic time."""
        rec = {"time": self.clock(), "event": event, **({"fault": fault.kind} if fault else {}), **detail}
        self.events.append(rec)
        if not self._log.closed:
            self._log.write(json.dumps(rec, default=str) + "\n")
            self._log.flush()

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, seconds))

    def _run(self) -> None:
        for i, fault in enumerate(self.plan):
            self._sleep(self.t0 + fault.at - self.clock())
            if self.stop.is_set():
                break
            if self.clock() + fault.hold + RECOVERY[fault.kind] > self.end:
                self.event(fault, "skip", reason="the run ends before this fault could heal", index=i)
                continue
            try:
                self._apply(fault, i)
            except Exception as exc:  # keep going: the runner heals everything at the end anyway
                self.event(fault, "error", error=repr(exc), index=i)

    def _apply(self, fault: Fault, index: int) -> None:
        c = self.cluster
        if fault.kind in ("kill", "leader-kill"):
            node = fault.node if fault.kind == "kill" else c.leader(fault.shard)
            if node is None:
                self.event(fault, "skip", reason="no leader found", index=index)
                return
            pid = c.signal(node, signal.SIGKILL)
            self.event(fault, "start", nodes=[node], pid=pid, index=index, plan=fault.to_json())
            self._sleep(fault.hold)
            c.restart(node)
            self.event(fault, "heal", nodes=[node], index=index)
        elif fault.kind == "pause":
            node = c.leader(fault.shard)
            if node is None:
                self.event(fault, "skip", reason="no leader found", index=index)
                return
            pid = c.signal(node, signal.SIGSTOP)
            self.event(fault, "start", nodes=[node], pid=pid, index=index, plan=fault.to_json())
            try:
                self._sleep(fault.hold)
            finally:
                c.signal(node, signal.SIGCONT)
            self.event(fault, "heal", nodes=[node], index=index)
        elif fault.kind == "partition":
            if fault.variant == "leader":
                node = c.leader(fault.shard)
                if node is None:
                    self.event(fault, "skip", reason="no leader found", index=index)
                    return
                pairs = [(node, other) for other in c.node_ids if other != node]
            elif fault.variant == "node":
                assert fault.node is not None
                pairs = [(fault.node, other) for other in c.node_ids if other != fault.node]
            else:
                assert fault.node is not None and fault.peer is not None
                pairs = [(fault.node, fault.peer)]
            for a, b in pairs:
                c.cut(a, b, fault.mode or "reset")
            self.event(fault, "start", links=[list(p) for p in pairs], mode=fault.mode, variant=fault.variant,
                       index=index, plan=fault.to_json())
            try:
                self._sleep(fault.hold)
            finally:
                c.heal_links()
            self.event(fault, "heal", index=index)
        elif fault.kind in ("split", "stripe"):
            # permanent: nothing to heal. The clients' writes and reads cross the new boundary.
            reply = c.reshape(fault.kind, fault.shard)
            if reply is None:
                self.event(fault, "skip", reason="no shard could be changed", index=index)
                return
            self.event(fault, "start", shards=[s["id"] for s in reply["shards"]], index=index,
                       plan=fault.to_json())
            self.event(fault, "heal", index=index)
        elif fault.kind == "move":
            # a membership change and its repair, while the clients run: nothing to heal by hand
            done = c.move(fault.shard)
            if done is None:
                self.event(fault, "skip", reason="no shard took the change", index=index)
                return
            self.event(fault, "start", shards=[done["shard"]], nodes=[done["removed"]], index=index,
                       plan=fault.to_json())
            self.event(fault, "heal", index=index, repaired=c.repaired(done["shard"], timeout=30.0))
        elif fault.kind == "restart-all":
            pids = c.kill_all()
            self.event(fault, "start", nodes=list(c.node_ids), pids=pids, index=index, plan=fault.to_json())
            self._sleep(fault.hold)
            c.restart_all()
            self.event(fault, "heal", nodes=list(c.node_ids), index=index)
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
