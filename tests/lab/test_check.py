"""Tests for the linearizability checker (tests/lab/check.py): hand-made histories, a brute-force
cross-check on small random ones, large generated ones, window shrinking and the command line."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from typing import Any

import pytest

from tests.lab.check import HistoryError, check_history, main

pytestmark = pytest.mark.timeout(60)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def op(process: int, kind: str, key: int, value: str | None, call: float, ret: float | None,
       ok: bool | None = True, **extra: Any) -> dict[str, Any]:
    """One history record."""
    return {"process": process, "op": kind, "key": key, "value": value, "call": call, "ret": ret, "ok": ok,
            **extra}


def seq(key: int, *steps: tuple[str, str | None], process: int = 0, start: float = 0.0) -> list[dict[str, Any]]:
    """Sequential, non-overlapping ops on one key: each step takes 1s and the next starts 1s later."""
    return [op(process, kind, key, value, start + 2 * n, start + 2 * n + 1) for n, (kind, value) in enumerate(steps)]


def linearizable(history: list[dict[str, Any]], **kw: Any) -> bool:
    return check_history(history, **kw).linearizable


# --- generated histories --------------------------------------------------------------------------------


def generate(seed: int, processes: int = 8, ops_per_process: int = 3000, keys: int = 5,
             unknown: float = 0.05, failed: float = 0.01) -> list[dict[str, Any]]:
    """A linearizable history: processes call overlapping ops on shared registers.

    Each op takes effect at a hidden point between its call and its return; gets observe the register
    at that point.  With probability ``unknown`` the outcome is unknown (no return, or a return with
    ``ok`` null): a write then takes effect at some possibly much later time, or never, while its
    process moves on after a timeout.  With probability ``failed`` the op fails and has no effect.
    """
    rng = random.Random(seed)
    effects: list[tuple[float, int, dict[str, Any]]] = []  # (point, tiebreak, record)
    records: list[dict[str, Any]] = []
    for p in range(processes):
        t = rng.random()
        for n in range(ops_per_process):
            kind = rng.choices(("put", "get", "delete"), weights=(4, 5, 1))[0]
            key = rng.randrange(keys)
            call = t
            latency = rng.expovariate(1.0)
            point = call + rng.random() * latency
            ret = point + rng.random() * latency
            rec = op(p, kind, key, f"p{p}-{n}" if kind == "put" else None, call, ret)
            r = rng.random()
            if r < unknown:
                timeout = 3.0
                rec["ok"] = None
                rec["ret"] = None if rng.random() < 0.5 else call + timeout
                if kind == "get":
                    rec["value"] = None
                elif rng.random() < 0.6:
                    effects.append((call + rng.expovariate(0.2), len(effects), rec))  # took effect, maybe late
                t = call + timeout + rng.random()
            elif r < unknown + failed:
                rec["ok"] = False
                if kind == "get":
                    rec["value"] = None
                t = ret + rng.random() * 0.3
            else:
                effects.append((point, len(effects), rec))
                t = ret + rng.random() * 0.3
            records.append(rec)
    state: dict[int, str | None] = {}
    for _point, _n, rec in sorted(effects, key=lambda e: (e[0], e[1])):
        if rec["op"] == "put":
            state[rec["key"]] = rec["value"]
        elif rec["op"] == "delete":
            state[rec["key"]] = None
        else:
            rec["value"] = state.get(rec["key"])
    rng.shuffle(records)
    return records


def stale_read_mutation(history: list[dict[str, Any]], later_than: float = 0.0) -> dict[str, Any]:
    """Make one completed get observe an older value; returns that get.

    The get is chosen so that the old value's put returned before some other completed write was
    called, which itself returned before the get was called: no order can then let the get see it.
    It is the first such get past the fraction ``later_than`` of the gets (by call).
    """
    done = [r for r in history if r["ok"] is True]
    gets = sorted((r for r in done if r["op"] == "get"), key=lambda r: r["call"])
    for g in gets[int(len(gets) * later_than):]:
        writes = [w for w in done if w["key"] == g["key"] and w["op"] != "get" and w["ret"] < g["call"]]
        if not writes:
            continue
        last = max(writes, key=lambda w: w["ret"])
        olds = [w for w in writes if w["op"] == "put" and w["ret"] < last["call"] and w["value"] != g["value"]]
        if olds:
            g["value"] = max(olds, key=lambda w: w["ret"])["value"]
            return g
    raise AssertionError("no get to mutate")


def brute_force(history: list[dict[str, Any]]) -> bool:
    """Linearizability by enumeration, for tiny histories: the reference the checker must agree with."""
    ops = [r for r in history if r["ok"] is not False]
    known = [r for r in ops if r["ok"] is True and r["ret"] is not None]
    unknown_writes = [r for r in ops if r not in known and r["op"] != "get"]

    def end(r: dict[str, Any]) -> float:
        return r["ret"] if r in known else math.inf

    for k in range(len(unknown_writes) + 1):
        for chosen in itertools.combinations(unknown_writes, k):
            for order in itertools.permutations(known + list(chosen)):
                if any(end(a) < b["call"] for x, b in enumerate(order) for a in order[x + 1:]):
                    continue
                state: str | None = None
                for r in order:
                    if r["op"] == "put":
                        state = r["value"]
                    elif r["op"] == "delete":
                        state = None
                    elif r["value"] != state:
                        break
                else:
                    return True
    return False


def random_small(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """A small random single-key history, linearizable or not."""
    history: list[dict[str, Any]] = []
    values: list[str] = []
    for i in range(n):
        kind = rng.choice(("put", "put", "get", "get", "delete"))
        call = rng.randrange(10)
        ret: float | None = call + rng.randrange(4)
        ok: bool | None = True
        r = rng.random()
        if r < 0.2:
            ok, ret = None, rng.choice([None, ret])
        elif r < 0.25:
            ok = False
        value = None
        if kind == "put":
            value = f"v{i}"
            values.append(value)
        history.append(op(i, kind, 7, value, call, ret, ok))
    for r in history:
        if r["op"] == "get":
            r["value"] = rng.choice([None, *values]) if values else None
    return history


# --- known non-linearizable histories ---------------------------------------------------------------------


def test_stale_read_is_rejected():
    h = [op(0, "put", 1, "a", 0, 1), op(1, "put", 1, "b", 2, 3), op(2, "get", 1, "b", 4, 5),
         op(3, "get", 1, "a", 6, 7)]
    v = check_history(h)
    assert not v.linearizable and v.key == 1
    assert h[3] in v.window
    # the same reads overlapping the second put are fine
    h[1]["ret"] = 8
    assert linearizable(h) is False  # b then a still needs a to come back: a is written once
    h[2]["value"] = "a"
    h[3]["value"] = "b"
    assert linearizable(h)


def test_lost_write_is_rejected():
    assert not linearizable(seq(1, ("put", "a"), ("put", "b"), ("get", "a")))
    assert linearizable(seq(1, ("put", "a"), ("put", "b"), ("get", "b")))


def test_reappearing_value_is_rejected():
    h = seq(1, ("put", "v1"), ("put", "v2"), ("get", "v2"), ("get", "v1"))
    assert not linearizable(h)
    assert linearizable(h[:3])


def test_read_of_a_never_written_value_is_rejected():
    assert not linearizable(seq(1, ("put", "a"), ("get", "zzz")))
    assert not linearizable([op(0, "get", 1, "x", 0, 1)])
    assert linearizable([op(0, "get", 1, None, 0, 1)])  # every key starts missing


def test_value_written_to_another_key_is_not_readable():
    h = [op(0, "put", 1, "a", 0, 1), op(0, "get", 2, "a", 2, 3)]
    v = check_history(h)
    assert not v.linearizable and v.key == 2


def test_get_after_delete_seeing_the_old_value_is_rejected():
    assert not linearizable(seq(1, ("put", "a"), ("delete", None), ("get", "a")))
    assert linearizable(seq(1, ("put", "a"), ("delete", None), ("get", None)))


def test_read_of_a_failed_put_is_rejected():
    h = [op(0, "put", 1, "a", 0, 1, ok=False), op(1, "get", 1, "a", 2, 3)]
    assert not linearizable(h)
    h[0]["ok"] = None  # an unknown outcome may have taken effect
    assert linearizable(h)


def test_read_before_the_put_was_called_is_rejected():
    h = [op(0, "get", 1, "a", 0, 1), op(1, "put", 1, "a", 2, None, ok=None)]
    assert not linearizable(h)


# --- known linearizable histories --------------------------------------------------------------------------


@pytest.mark.parametrize("first, second", [(None, "a"), ("a", "a"), (None, None)])
def test_reads_concurrent_with_a_put_may_see_either_value(first, second):
    h = [op(0, "put", 1, "a", 0, 10), op(1, "get", 1, first, 1, 2), op(1, "get", 1, second, 3, 4)]
    assert linearizable(h)


def test_reads_concurrent_with_a_put_cannot_go_back():
    h = [op(0, "put", 1, "a", 0, 10), op(1, "get", 1, "a", 1, 2), op(1, "get", 1, None, 3, 4)]
    assert not linearizable(h)


def test_concurrent_puts_may_take_effect_in_either_order():
    h = [op(0, "put", 1, "a", 0, 5), op(1, "put", 1, "b", 1, 6), op(2, "get", 1, "a", 7, 8)]
    assert linearizable(h)
    h[2]["value"] = "b"
    assert linearizable(h)


@pytest.mark.parametrize("how", ["no return", "return with ok null"])
def test_unknown_put_that_took_effect_late(how):
    h = [op(0, "put", 1, "a", 0, 1), op(1, "put", 1, "b", 2, None if how == "no return" else 3, ok=None),
         op(0, "put", 1, "c", 4, 5), op(0, "get", 1, "c", 6, 7), op(0, "get", 1, "b", 8, 9),
         op(2, "get", 1, "b", 10, 11)]
    assert linearizable(h)
    h[1]["ok"] = False  # the same put certainly without effect: b cannot be read
    assert not linearizable(h)


def test_unknown_put_never_observed():
    h = [op(0, "put", 1, "a", 0, 1), op(1, "put", 1, "b", 2, None, ok=None), op(0, "get", 1, "a", 3, 4),
         op(0, "get", 1, "a", 5, 6)]
    assert linearizable(h)


def test_unknown_put_cannot_take_effect_twice():
    h = [op(1, "put", 1, "b", 0, None, ok=None), op(0, "get", 1, "b", 1, 2), op(0, "put", 1, "c", 3, 4),
         op(0, "get", 1, "b", 5, 6)]
    assert not linearizable(h)


def test_unknown_delete():
    h = [op(0, "put", 1, "a", 0, 1), op(1, "delete", 1, None, 2, None, ok=None), op(0, "get", 1, "a", 3, 4),
         op(0, "get", 1, None, 5, 6)]
    assert linearizable(h)
    h[1]["ok"] = False
    assert not linearizable(h)


def test_each_unknown_delete_takes_effect_at_most_once():
    deletes = [op(9, "delete", 1, None, 0.5, None, ok=None), op(8, "delete", 1, None, 0.6, None, ok=None)]
    reads = seq(1, ("put", "a"), ("get", None), ("put", "b"), ("get", "b"), ("get", None), start=1)
    assert linearizable(deletes + reads)
    assert not linearizable(deletes[:1] + reads)


def test_unknown_get_constrains_nothing():
    h = seq(1, ("put", "a"), ("get", "a")) + [op(1, "get", 1, "nonsense", 0, None, ok=None)]
    assert linearizable(h)


def test_failed_ops_are_ignored():
    h = seq(1, ("put", "a"), ("get", "a")) + [op(1, "delete", 1, None, 1.5, 1.7, ok=False),
                                              op(2, "get", 1, None, 1.5, 1.7, ok=False)]
    assert linearizable(h)


def test_touching_ops_count_as_concurrent():
    h = [op(0, "put", 1, "a", 0, 1), op(1, "get", 1, None, 1, 2)]
    assert linearizable(h)
    h[1]["call"] = 1.0001
    assert not linearizable(h)


def test_keys_are_independent():
    good = seq(1, ("put", "a"), ("get", "a"), ("delete", None), ("get", None)) + seq(2, ("get", None), ("put", "a"))
    v = check_history(good)
    assert v.linearizable and v.keys == 2 and v.ops_checked == 6 and v.key is None and v.window == []
    # as one register this would be a stale read; as two it is fine
    assert linearizable([op(0, "put", 1, "a", 0, 1), op(0, "get", 2, None, 2, 3), op(0, "get", 1, "a", 4, 5)])
    bad = good + seq(3, ("put", "x"), ("put", "y"), ("get", "x"), start=20)
    v = check_history(bad)
    assert not v.linearizable and v.key == 3 and v.keys == 3
    assert {r["key"] for r in v.window} == {3}


def test_line_order_and_extra_fields_do_not_matter():
    h = [op(0, "put", 1, "a", 0, 1, note="x"), op(1, "put", 1, "b", 2, 3, node="n2"),
         op(2, "get", 1, "a", 4, 5)]
    for perm in itertools.permutations(h):
        assert not linearizable(list(perm))
    h[2]["value"] = "b"
    for perm in itertools.permutations(h):
        assert linearizable(list(perm))


def test_initial_state_unknown():
    h = seq(1, ("get", "old"), ("put", "a"), ("get", "a"))
    assert not linearizable(h)
    assert linearizable(h, initial_unknown=True)
    assert not linearizable(h, initial_unknown=True, initial_candidates={"other"})
    # a value written in the history is not an initial state: the write comes later
    assert not linearizable(seq(1, ("get", "a"), ("put", "a")), initial_unknown=True)


def test_agrees_with_brute_force_on_small_random_histories():
    rng = random.Random(1234)
    outcomes = set()
    for _ in range(400):
        h = random_small(rng, rng.randrange(1, 7))
        expected = brute_force(h)
        assert linearizable(h) == expected, h
        outcomes.add(expected)
    assert outcomes == {True, False}


# --- shrinking ----------------------------------------------------------------------------------------------


def test_window_is_short_and_holds_the_culprit():
    steps: list[tuple[str, str | None]] = []
    for n in range(150):
        steps += [("put", f"v{n}"), ("get", f"v{n}")]
    h = seq(4, *steps) + seq(5, ("put", "other"), ("get", "other"))
    culprit = op(1, "get", 4, "v10", 1000, 1001)
    h += [culprit, *seq(4, ("put", "later"), ("get", "later"), start=1002)]
    random.Random(5).shuffle(h)
    v = check_history(h)
    assert not v.linearizable and v.key == 4
    assert culprit in v.window
    assert len(v.window) <= 2
    assert [r["call"] for r in v.window] == sorted(r["call"] for r in v.window)


def test_window_for_a_never_written_value():
    h = seq(4, *[("put", f"v{n}") for n in range(100)], ("get", "ghost"), ("get", "v99"))
    v = check_history(h)
    assert v.window == [h[100]]


def test_window_for_a_read_from_the_future():
    h = seq(4, *[("put", f"v{n}") for n in range(50)], ("get", "soon"), ("put", "soon"))
    v = check_history(h)
    assert v.window == [h[50]]


def test_window_keeps_earlier_ops_still_running_at_its_start():
    # d then e alone admit no order, but the long put a may land between them: it must stay in the
    # window, and the window must reach back to c, which forces a before d
    a = op(0, "put", 1, "x", 0, 10)
    c, d, e = op(1, "get", 1, "x", 1, 2), op(1, "put", 1, "z", 3, 4), op(1, "get", 1, "x", 5, 6)
    assert linearizable([a, d, e])
    v = check_history([a, c, d, e])
    assert v.window == [a, c, d, e]


def test_window_of_concurrent_ops_fails_on_its_own():
    rng = random.Random(7)
    h = generate(7, processes=4, ops_per_process=300, keys=1, unknown=0.05)
    g = stale_read_mutation(h)
    v = check_history(h)
    assert not v.linearizable and g in v.window
    assert len(v.window) < 40
    first = min(r["call"] for r in v.window)
    earlier = {r["value"] for r in h if r["op"] == "put" and r["call"] < first and r["ok"] is not False}
    assert not linearizable(v.window, initial_unknown=True, initial_candidates=earlier)
    rng.shuffle(v.window)
    assert not linearizable(v.window, initial_unknown=True, initial_candidates=earlier)


@pytest.mark.timeout(30)
def test_many_concurrent_writes_are_searched_with_memoisation():
    # 12 overlapping puts have 12! orders; memoised on (set done, value) there are about 12 * 2**12
    h = [op(p, "put", 1, f"v{p}", p * 0.01, 100) for p in range(12)]
    h.append(op(99, "get", 1, "ghost", 101, 102))
    v = check_history(h)
    assert not v.linearizable and v.window[-1] == h[-1]


# --- large generated histories ------------------------------------------------------------------------------


def test_generated_history_is_linearizable():
    h = generate(1, processes=8, ops_per_process=3000, keys=5)
    assert len(h) >= 20000
    assert sum(r["ok"] is None for r in h) > 500
    v = check_history(h)
    assert v.linearizable, v.window
    assert v.keys == 5


@pytest.mark.parametrize("later_than", [0.0, 0.9])
def test_mutated_generated_history_is_rejected(later_than):
    h = generate(2, processes=8, ops_per_process=1000, keys=5)
    assert linearizable(h)
    g = stale_read_mutation(h, later_than)
    v = check_history(h)
    assert not v.linearizable and v.key == g["key"]
    assert g in v.window


def test_mutated_single_key_history_is_rejected():
    # eight processes on one key: the failed search has to explore every interleaving it allows
    h = generate(3, processes=8, ops_per_process=500, keys=1)
    g = stale_read_mutation(h, 0.8)
    v = check_history(h)
    assert not v.linearizable and g in v.window
    assert len(v.window) < 40


# --- input validation and the command line -----------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"call": None}, "'call' must be a finite number"),
    ({"key": "1"}, "'key' must be an integer"),
    ({"key": True}, "'key' must be an integer"),
    ({"process": 1.5}, "'process' must be an integer"),
    ({"op": "cas"}, "'op' must be one of"),
    ({"value": 3}, "'value' must be a string or null"),
    ({"value": None}, "a put needs a string 'value'"),
    ({"ret": "soon"}, "'ret' must be a finite number or null"),
    ({"ret": -1}, "'ret' (-1) is before 'call'"),
    ({"ok": "yes"}, "'ok' must be true, false or null"),
])
def test_malformed_records_are_refused(change, message):
    rec = {**op(0, "put", 1, "a", 0, 1), **change}
    with pytest.raises(HistoryError, match="op 1: " + message.replace("(", r"\(").replace(")", r"\)")):
        check_history([op(0, "get", 1, None, 0, 1), rec])


def test_missing_field_and_repeated_value_are_refused():
    rec = op(0, "put", 1, "a", 0, 1)
    del rec["ok"]
    with pytest.raises(HistoryError, match="op 0: missing field 'ok'"):
        check_history([rec])
    with pytest.raises(HistoryError, match="op 1: value 'a' was already written to key 1 \\(op 0\\)"):
        check_history([op(0, "put", 1, "a", 0, 1), op(0, "put", 1, "a", 2, 3)])
    with pytest.raises(HistoryError, match="expected a JSON object"):
        check_history([[1, 2]])  # type: ignore[list-item]


def write(path: Any, history: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in history))
    return str(path)


def test_main_exit_codes(tmp_path, capsys):
    good = write(tmp_path / "good.jsonl", seq(1, ("put", "a"), ("get", "a")))
    assert main([good]) == 0
    assert "linearizable: 2 ops on 1 keys" in capsys.readouterr().out

    bad_history = seq(1, ("put", "a"), ("put", "b"), ("get", "a"))
    bad = write(tmp_path / "bad.jsonl", bad_history)
    assert main([bad]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "NOT linearizable: key 1" in lines[-1]
    assert [json.loads(line) for line in lines[:-1]] == bad_history[1:]

    assert main([bad, "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["linearizable"] is False and verdict["key"] == 1 and verdict["window"] == bad_history[1:]

    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text(json.dumps(op(0, "put", 1, "a", 0, 1)) + "\n\n{not json\n")
    assert main([str(garbled)]) == 2
    assert "line 3: not JSON" in capsys.readouterr().err
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({**op(0, "put", 1, "a", 0, 1), "key": "one"}) + "\n")
    assert main([str(wrong)]) == 2
    assert "line 1: 'key' must be an integer" in capsys.readouterr().err
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    assert main([str(binary)]) == 2


def test_command_line_in_a_subprocess(tmp_path):
    good = write(tmp_path / "good.jsonl", seq(1, ("put", "a"), ("get", "a")))
    bad = write(tmp_path / "bad.jsonl", seq(1, ("put", "a"), ("delete", None), ("get", "a")))
    codes = []
    for path in (good, bad, str(tmp_path / "missing.jsonl")):
        proc = subprocess.run([sys.executable, "-m", "tests.lab.check", path, "--json"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        codes.append(proc.returncode)
        if proc.returncode < 2:
            assert json.loads(proc.stdout)["linearizable"] is (proc.returncode == 0)
    assert codes == [0, 1, 2]
