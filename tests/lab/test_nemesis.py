"""The fault schedule is a pure function of (faults, duration, rng): tested without a cluster."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from tests.lab.nemesis import (
    CUT_MODES,
    FAULT_KINDS,
    HOLD,
    PARTITION_VARIANTS,
    RECOVERY,
    Fault,
    Nemesis,
    parse_faults,
    schedule,
)

pytestmark = pytest.mark.timeout(30)
NODES = ("n1", "n2", "n3")


def plan(seed: int, faults=FAULT_KINDS, duration: float = 60.0) -> list[Fault]:
    return schedule(list(faults), duration, random.Random(seed), NODES)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    assert plan(7) == plan(7)
    assert plan(7) != plan(8)


@pytest.mark.parametrize("seed", range(30))
def test_faults_fit_the_run_and_never_overlap(seed: int) -> None:
    duration = 45.0
    faults = plan(seed, duration=duration)
    assert faults
    assert faults[0].at >= 2.0  # a warm-up without faults: the history starts with served calls
    for f in faults:
        lo, hi = HOLD[f.kind]
        assert lo <= f.hold <= hi
        assert f.at + f.hold + RECOVERY[f.kind] <= duration
    for a, b in zip(faults, faults[1:], strict=False):
        assert a.at + a.hold + RECOVERY[a.kind] <= b.at


@pytest.mark.parametrize("seed", range(30))
def test_every_requested_kind_comes_up_before_any_repeats(seed: int) -> None:
    faults = plan(seed, duration=200.0)
    first = [f.kind for f in faults[:len(FAULT_KINDS)]]
    assert sorted(first) == sorted(FAULT_KINDS)


def test_only_requested_kinds() -> None:
    for seed in range(20):
        assert {f.kind for f in plan(seed, faults=["pause", "kill"])} <= {"pause", "kill"}


@pytest.mark.parametrize("seed", range(30))
def test_targets_are_well_formed(seed: int) -> None:
    for f in plan(seed, duration=300.0):
        if f.kind == "kill":
            assert f.node in NODES
        if f.kind == "partition":
            assert f.variant in PARTITION_VARIANTS and f.mode in CUT_MODES
            if f.variant == "leader":
                assert f.node is None  # decided when it fires: whoever leads then
            else:
                assert f.node in NODES
            if f.variant == "link":
                assert f.peer in NODES and f.peer != f.node
            else:
                assert f.peer is None


def test_partition_plans_cover_every_variant_and_mode() -> None:
    seen = {(f.variant, f.mode) for seed in range(20) for f in plan(seed, faults=["partition"], duration=300.0)}
    assert seen == {(v, m) for v in PARTITION_VARIANTS for m in CUT_MODES}


def test_too_short_a_run_gets_no_faults_and_no_kinds_gets_none() -> None:
    assert plan(1, duration=2.5) == []
    assert plan(1, faults=[], duration=60.0) == []


def test_unknown_kind_refused() -> None:
    with pytest.raises(ValueError, match="flood"):
        plan(1, faults=["kill", "flood"])
    with pytest.raises(ValueError):
        parse_faults("pause,,teleport")
    assert parse_faults(" kill, pause,kill ") == ["kill", "pause"]


def test_fault_json_leaves_out_what_does_not_apply() -> None:
    assert Fault(3.0, "pause", 2.0, shard=4).to_json() == {"at": 3.0, "kind": "pause", "hold": 2.0, "shard": 4}


class FakeCluster:
    """Records what the nemesis asks of it; n2 leads."""

    def __init__(self, leader: str | None = "n2") -> None:
        self.node_ids = list(NODES)
        self.leader_node = leader
        self.calls: list[tuple] = []

    def leader(self, shard: int) -> str | None:
        return self.leader_node

    def signal(self, node: str, sig: int) -> int | None:
        self.calls.append(("signal", node, sig))
        return 100

    def kill_all(self) -> list[int]:
        self.calls.append(("kill_all",))
        return [1, 2, 3]

    def restart(self, node: str) -> None:
        self.calls.append(("restart", node))

    def restart_all(self) -> None:
        self.calls.append(("restart_all",))

    def cut(self, a: str, b: str, mode: str) -> None:
        self.calls.append(("cut", a, b, mode))

    def heal_links(self) -> None:
        self.calls.append(("heal",))

    def reshape(self, kind: str, pick: int) -> dict | None:
        self.calls.append((kind, pick))
        return {"shards": [{"id": "s0000"}, {"id": "s0009"}]}

    def move(self, pick: int) -> dict | None:
        self.calls.append(("move", pick))
        return {"shard": "s0003", "removed": "n1"}

    def repaired(self, shard: str, timeout: float) -> bool:
        self.calls.append(("repaired", shard))
        return True


def carry_out(tmp_path, cluster: FakeCluster, plan: list[Fault]) -> list[dict]:
    t0 = time.monotonic()
    nem = Nemesis(cluster, plan, str(tmp_path / "nemesis.jsonl"), t0, t0 + 100)
    nem.start()
    nem.join(timeout=20)
    lines = [json.loads(x) for x in (tmp_path / "nemesis.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(nem.events))
    return lines


def test_each_fault_is_applied_then_healed_in_order(tmp_path) -> None:
    cluster = FakeCluster()
    plan = [Fault(0.0, "kill", 0.01, node="n3"), Fault(0.0, "leader-kill", 0.01),
            Fault(0.0, "pause", 0.01), Fault(0.0, "partition", 0.01, variant="leader", mode="blackhole"),
            Fault(0.0, "partition", 0.01, node="n1", peer="n3", variant="link", mode="reset"),
            Fault(0.0, "restart-all", 0.01), Fault(0.0, "split", 0.0, shard=7), Fault(0.0, "stripe", 0.0, shard=2),
            Fault(0.0, "move", 0.0, shard=5)]
    events = carry_out(tmp_path, cluster, plan)
    assert cluster.calls == [
        ("signal", "n3", signal.SIGKILL), ("restart", "n3"),
        ("signal", "n2", signal.SIGKILL), ("restart", "n2"),
        ("signal", "n2", signal.SIGSTOP), ("signal", "n2", signal.SIGCONT),
        ("cut", "n2", "n1", "blackhole"), ("cut", "n2", "n3", "blackhole"), ("heal",),
        ("cut", "n1", "n3", "reset"), ("heal",),
        ("kill_all",), ("restart_all",), ("split", 7), ("stripe", 2), ("move", 5), ("repaired", "s0003"),
    ]
    assert [(e["event"], e["fault"]) for e in events] == [
        (ev, f.kind) for f in plan for ev in ("start", "heal")]
    times = [e["time"] for e in events]
    assert times == sorted(times)


def test_leader_faults_are_skipped_without_a_leader_and_late_faults_never_start(tmp_path) -> None:
    cluster = FakeCluster(leader=None)
    plan = [Fault(0.0, "pause", 0.01), Fault(0.0, "partition", 0.01, variant="leader", mode="reset"),
            Fault(0.0, "kill", 500.0, node="n1")]  # would heal after the run's end
    events = carry_out(tmp_path, cluster, plan)
    assert cluster.calls == []
    assert [e["event"] for e in events] == ["skip", "skip", "skip"]
