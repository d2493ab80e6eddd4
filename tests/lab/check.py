"""Linearizability checker for fault-lab histories.

``python -m tests.lab.check HISTORY.jsonl [--json]`` exits 0 if the history is linearizable, 1 if
not (printing the shortest window of operations that admits no order, and its key), 2 if the file
cannot be read or a line is malformed.

A history line is ``{"process", "op", "key", "value", "call", "ret", "ok"}`` (unknown fields are
ignored, lines may come in any order).  ``ok: false`` means the op had no effect; ``ok: null`` or
``ret: null`` means the outcome is unknown: the op may take effect at any time after its call, or
never.  Each key is a register, initially missing; keys are checked independently (linearizability
is compositional).  The search is Wing & Gong's with Lowe's memoisation, run iteratively over a
Porcupine-style linked list of call/return events.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["HistoryError", "Verdict", "check_history", "check_file", "main"]

INF = math.inf
PUT, GET, DELETE = 0, 1, 2
_KINDS = {"put": PUT, "get": GET, "delete": DELETE}
_FIELDS = ("process", "op", "key", "value", "call", "ret", "ok")


class HistoryError(ValueError):
    """A history record is malformed (missing field, wrong type, duplicate written value...)."""


class _Unknown:
    """The model state before a window whose earlier history is not replayed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Any = _Unknown()


@dataclass
class Verdict:
    """The checker's answer.

    ``key`` and ``window`` are set only when the history is not linearizable: ``window`` holds the
    original records (ordered by call) of the shortest window found that admits no order.
    ``ops_checked`` counts the records that took part (every record except ``ok: false`` ones).
    """

    linearizable: bool
    key: int | None = None
    window: list[dict[str, Any]] = field(default_factory=list)
    ops_checked: int = 0
    keys: int = 0


@dataclass(slots=True)
class _Op:
    kind: int
    value: str | None
    call: float
    ret: float  # INF when the outcome is unknown
    rec: dict[str, Any]
    where: str


# --- input -------------------------------------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_time(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse(rec: object, where: str) -> _Op | None:
    """Validate one record; None for an ``ok: false`` op, which certainly had no effect."""
    if not isinstance(rec, dict):
        raise HistoryError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for name in _FIELDS:
        if name not in rec:
            raise HistoryError(f"{where}: missing field {name!r}")
    op, value, call, ret, ok = rec["op"], rec["value"], rec["call"], rec["ret"], rec["ok"]
    if not _is_int(rec["process"]):
        raise HistoryError(f"{where}: 'process' must be an integer, got {rec['process']!r}")
    if op not in _KINDS:
        raise HistoryError(f"{where}: 'op' must be one of put, get, delete, got {op!r}")
    if not _is_int(rec["key"]):
        raise HistoryError(f"{where}: 'key' must be an integer, got {rec['key']!r}")
    if value is not None and not isinstance(value, str):
        raise HistoryError(f"{where}: 'value' must be a string or null, got {value!r}")
    if op == "put" and value is None:
        raise HistoryError(f"{where}: a put needs a string 'value'")
    if not _is_time(call):
        raise HistoryError(f"{where}: 'call' must be a finite number, got {call!r}")
    if ret is not None and not _is_time(ret):
        raise HistoryError(f"{where}: 'ret' must be a finite number or null, got {ret!r}")
    if ret is not None and ret < call:
        raise HistoryError(f"{where}: 'ret' ({ret!r}) is before 'call' ({call!r})")
    if ok is not None and not isinstance(ok, bool):
        raise HistoryError(f"{where}: 'ok' must be true, false or null, got {ok!r}")
    if ok is False:
        return None
    known = ok is True and ret is not None
    # a delete's value means nothing: it is ignored rather than refused
    return _Op(_KINDS[op], value if op != "delete" else None, float(call), float(ret) if known else INF, rec, where)


def _by_key(records: Iterable[tuple[str, object]]) -> tuple[dict[int, list[_Op]], int, dict[int, set[str]]]:
    """Parse and group records per key, each key's ops ordered by call; also the op count and the
    values of each key's failed puts."""
    keys: dict[int, list[_Op]] = {}
    failed: dict[int, set[str]] = {}
    written: dict[tuple[int, str], str] = {}
    count = 0
    for where, rec in records:
        op = _parse(rec, where)
        if op is None:
            assert isinstance(rec, dict)
            keys.setdefault(rec["key"], [])
            if rec["op"] == "put":
                failed.setdefault(rec["key"], set()).add(rec["value"])
            continue
        key: int = op.rec["key"]
        if op.kind == PUT:
            assert op.value is not None
            first = written.get((key, op.value))
            if first is not None:
                # the search tells writes apart by value: a repeated value would make it unsound
                raise HistoryError(f"{where}: value {op.value!r} was already written to key {key} ({first})")
            written[(key, op.value)] = where
        keys.setdefault(key, []).append(op)
        count += 1
    for ops in keys.values():
        ops.sort(key=lambda o: o.call)  # stable: ties keep input order
    return keys, count, failed


# --- the search ----------------------------------------------------------------------------------------


def _prepare(ops: Iterable[tuple[int, str | None, float, float]]
             ) -> tuple[list[tuple[int, str | None, float, float]], list[float]]:
    """Reduce a key's ops to required ops ``(kind, value, call, ret)`` and optional deletes' calls.

    Every rule here keeps the answer exact (given that no get can observe a written value except
    through its one put, see ``_search``):
    - a get with an unknown outcome returned nothing we know, so it constrains nothing: dropped;
    - a put with an unknown outcome whose value no completed get observed is dropped: "it never took
      effect" is always a legal choice, and since nothing read its value, no get needs it;
    - a put whose value a completed get observed must precede that get in any linearization, so it
      must take effect before the earliest such get returns: its return becomes that time (for an
      unknown outcome this also makes it required, which it is: the get needs it);
    - what remains with an unknown outcome are deletes: they keep return +inf and stay optional.
    """
    ops = list(ops)
    seen: dict[str, float] = {}
    for kind, value, _call, ret in ops:
        if kind == GET and value is not None and ret != INF and ret < seen.get(value, INF):
            seen[value] = ret
    required: list[tuple[int, str | None, float, float]] = []
    optional: list[float] = []
    for kind, value, call, ret in ops:
        if kind == PUT:
            assert value is not None
            if value in seen:
                required.append((kind, value, call, min(ret, seen[value])))
            elif ret != INF:
                required.append((kind, value, call, ret))
        elif ret != INF:
            required.append((kind, value, call, ret))
        elif kind == DELETE:
            optional.append(call)
    optional.sort()
    return required, optional


def _search(required: list[tuple[int, str | None, float, float]], optional: list[float],
            init: Any = None, unknown_ok: Callable[[str | None], bool] | None = None) -> float | None:
    """None if the ops admit a linearization from state ``init``, else how far the search got: the
    latest return time it reached with every op returning earlier linearized.

    ``required`` ops must all be linearized; ``optional`` (the call times of deletes with an unknown
    outcome) may be linearized at any point after their call, or never.  With ``init`` UNKNOWN, a
    get may observe the initial state as a value ``v`` when ``unknown_ok(v)`` allows it (None always
    may be observed).  Written values must be unique: a get of a value written here never reads it
    from the initial state (``unknown_ok`` must refuse such values).

    Wing & Gong's search over a doubly linked list of call and return events ordered by time, calls
    before returns at equal times (so touching ops count as concurrent).  From a state, the ops
    that may go next are those whose call comes before the first remaining return: the list is
    walked from its head, each candidate tried; taking one unlinks its events and restarts from
    the head; reaching a return means every candidate failed, so the last choice is undone.  Lowe's
    memoisation: a (set of linearized ops, state) pair already explored is never explored again.
    Two reductions keep failing searches (which must explore everything) affordable: a get that
    reads the current value is taken without trying alternatives, and unknown-outcome deletes are
    counted, not told apart (see the comments below).
    """
    n = len(required)
    if n == 0:
        return None
    events = sorted([(call, 0, i) for i, (_k, _v, call, _r) in enumerate(required)]
                    + [(ret, 1, i) for i, (_k, _v, _c, ret) in enumerate(required)])
    m = len(events)
    head = m
    end = -1
    ev_ret = [e[1] == 1 for e in events]
    ev_op = [e[2] for e in events]
    ev_time = [e[0] for e in events]
    nxt = list(range(1, m + 1)) + [0]
    nxt[m - 1] = end
    prv = list(range(-1, m))
    prv[0] = head
    call_node = [0] * n
    ret_node = [0] * n
    for node, (_t, is_ret, i) in enumerate(events):
        if is_ret:
            ret_node[i] = node
        else:
            call_node[i] = node
    kinds = [r[0] for r in required]
    values = [r[1] for r in required]
    n_opt = len(optional)
    ok_unknown = unknown_ok or (lambda v: False)

    state = init
    lin = 0  # bit i set: required op i is linearized
    low = 0  # every op below this index is linearized: keeps memo keys short
    used = 0  # optional deletes linearized: always the earliest-called ones (see below)
    remaining = n
    stack: list[tuple[int, Any, int, int, bool]] = []
    # (set, state) -> fewest optional deletes used when it was explored: every visit failed (else
    # the search would have ended), and a visit having used as many or more is no better off, since
    # the deletes it has left are a subset of those the explored visit had
    memo: dict[tuple[int, int, Any], int] = {}

    def lift(i: int) -> None:
        c, r = call_node[i], ret_node[i]
        nxt[prv[c]] = nxt[c]
        prv[nxt[c]] = prv[c]  # a call is always followed by its own return
        nxt[prv[r]] = nxt[r]
        if nxt[r] != end:
            prv[nxt[r]] = prv[r]

    def unlift(i: int) -> None:
        c, r = call_node[i], ret_node[i]
        nxt[prv[r]] = r  # restore in the reverse order of removal
        if nxt[r] != end:
            prv[nxt[r]] = r
        nxt[prv[c]] = c
        prv[nxt[c]] = c

    fail = -2  # as a node: this state is known to fail, undo the last choice
    node = nxt[head]
    fresh = True  # a state not scanned yet
    opt_tried = False
    reach = 0
    while True:
        if fresh:
            fresh = False
            # A get that may go next and reads the current value is taken at once, with no other
            # choice tried: given any linearization from here, moving that get to the front keeps
            # it legal (everything that must precede the get is already linearized, and a read
            # changes nothing).  So this state fails exactly when that choice does.
            x = nxt[head]
            while x != end and not ev_ret[x]:
                i = ev_op[x]
                if kinds[i] == GET and values[i] == state and state is not UNKNOWN:
                    break
                x = nxt[x]
            else:
                x = end
            if x != end:
                nlin = lin | (1 << i)
                nlow = (~nlin & (nlin + 1)).bit_length() - 1 if i == low else low
                memo_key = (nlow, nlin >> nlow, state)
                if memo.get(memo_key, n_opt + 1) <= used:
                    node = fail
                else:
                    memo[memo_key] = used
                    stack.append((i, state, low, x, True))
                    lin, low = nlin, nlow
                    remaining -= 1
                    if remaining == 0:
                        return None
                    lift(i)
                    node = nxt[head]
                    fresh = True
                    continue
        if node >= 0 and not ev_ret[node]:
            i = ev_op[node]
            kind = kinds[i]
            if kind == GET:
                v = values[i]
                if state is UNKNOWN:
                    good = v is None or ok_unknown(v)
                    new = v
                else:
                    good = state == v
                    new = state
            else:
                good = True
                new = values[i]  # None for a delete
            if good:
                nlin = lin | (1 << i)
                nlow = (~nlin & (nlin + 1)).bit_length() - 1 if i == low else low
                memo_key = (nlow, nlin >> nlow, new)
                if memo.get(memo_key, n_opt + 1) > used:
                    memo[memo_key] = used
                    stack.append((i, state, low, node, False))
                    state, lin, low = new, nlin, nlow
                    remaining -= 1
                    if remaining == 0:
                        return None
                    lift(i)
                    node = nxt[head]
                    fresh = True
                    opt_tried = False
                    continue
            node = nxt[node]
            continue
        if node != fail:
            # Every required candidate failed from here: the first return is as far as it got.
            if node > reach:
                reach = node
            # Optional deletes are tried last because they are rarely needed; only the
            # earliest-called unused one, because they are interchangeable (same effect, no return
            # bound): swapping which one is used when never changes legality; and never when the
            # key is already missing, where it would only use up an option.
            if (not opt_tried and used < n_opt and state is not None
                    and (node == end or optional[used] <= ev_time[node])):
                memo_key = (low, lin >> low, None)
                if memo.get(memo_key, n_opt + 1) > used + 1:
                    memo[memo_key] = used + 1
                    stack.append((-1, state, low, node, False))
                    state = None
                    used += 1
                    node = nxt[head]
                    fresh = True
                    opt_tried = False
                    continue
        if not stack:
            return ev_time[reach]
        i, state, low, back, forced = stack.pop()
        if i < 0:
            used -= 1
            node = back
            opt_tried = True
            continue
        unlift(i)
        lin ^= 1 << i
        remaining += 1
        node = fail if forced else nxt[back]
        opt_tried = False


def _linearizable(ops: Iterable[tuple[int, str | None, float, float]], init: Any = None,
                  candidates: Collection[str] | None = None, excluded: Collection[str] = ()) -> bool:
    """True if one key's ``(kind, value, call, ret)`` ops admit a linearization from ``init``."""
    return _reach(ops, init, candidates, excluded) is None


def _reach(ops: Iterable[tuple[int, str | None, float, float]], init: Any = None,
           candidates: Collection[str] | None = None, excluded: Collection[str] = ()) -> float | None:
    """Check one key's ``(kind, value, call, ret)`` ops from ``init``: None if linearizable, else
    the return time where the failure shows (see _search).

    With ``init`` UNKNOWN, the initial state is missing or any value not written by these ops nor
    in ``excluded``; ``candidates``, if given, further limits those values.
    """
    ops = list(ops)
    required, optional = _prepare(ops)
    unknown_ok = None
    if init is UNKNOWN:
        # A value written here cannot also be the initial state: values are unique per put, so a
        # state holding it before the window means its put ran before the window.  Such a put is in
        # the window only as an op overlapping its start, and then linearizing it first gives the
        # same state; this is what lets _prepare order a put before every get of its value.
        written = {v for kind, v, _c, _r in ops if kind == PUT} | set(excluded)
        if candidates is None:
            def unknown_ok(v: str | None) -> bool:
                return v not in written
        else:
            allowed = set(candidates)

            def unknown_ok(v: str | None) -> bool:
                return v in allowed and v not in written
    return _search(required, optional, init, unknown_ok)


# --- shrinking a failure to a window --------------------------------------------------------------------


def _cut(ops: list[_Op], events: list[tuple[float, int, int]], k: int) -> list[tuple[int, str | None, float, float]]:
    """The history as seen after its first ``k`` events: ops not yet returned have unknown outcomes."""
    done = set()
    called = 0
    for _t, is_ret, i in events[:k]:
        if is_ret:
            done.add(i)
        else:
            called += 1
    return [(o.kind, o.value, o.call, o.ret if i in done else INF) for i, o in enumerate(ops[:called])]


def _shrink(ops: list[_Op], reach: float) -> list[_Op]:
    """The shortest window found of a failing key's ops (ordered by call) that admits no order.

    First the earliest cut of time that already fails.  The history observed up to any time, with
    ops still running at that time counted as unknown outcomes, is linearizable whenever the whole
    is (cut a linearization at that time), so failing is monotone in the cut.  The failed search of
    the whole gives that cut as ``reach``: a linearization of the history cut just before ``reach``
    is a path the search could take, ending with every op returned by then linearized, so it would
    have got past ``reach``; and the path it took to ``reach`` is a linearization of that cut.  Then
    the latest start ``i`` such that ops ``i..j`` of that cut still fail when checked from an
    unknown state.  Ops called before ``i`` that do not finish before op ``i`` is called could be
    linearized inside the window, so they stay in it with unknown outcomes; the initial state may
    be missing or any value written before ``i``.  Any linearization of the whole then restricts to
    one of the window (the ops before the window's first one set that state), so a failing window
    proves the history fails.
    """
    events = sorted([(o.call, 0, i) for i, o in enumerate(ops)]
                    + [(o.ret, 1, i) for i, o in enumerate(ops) if o.ret != INF])

    def fails(k: int) -> bool:
        return not _linearizable(_cut(ops, events, k))

    # the cut at lo passes, at hi fails; several returns at the time ``reach`` are bisected
    lo = bisect.bisect_left(events, (reach, 1, -1))
    hi = max(bisect.bisect_right(events, (reach, 1, len(ops))), lo + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    cut = _cut(ops, events, hi)
    j = len(cut) - 1
    position = {}
    for pos, (_t, is_ret, i) in enumerate(events):
        position[(i, is_ret)] = pos

    def window(i: int) -> list[int]:
        start = position[(i, 0)]
        early = [e for e in range(i) if cut[e][3] == INF or position[(e, 1)] > start]
        # Of those, leave out what the check would ignore anyway (as _prepare does): gets, and puts
        # whose value no completed get of the window observed.  Each delete left is optional and
        # available throughout the window, so they are interchangeable; and one can matter only
        # while the key holds a value, so more than (puts + 1) of them never help.
        observed = {cut[g][1] for g in range(i, j + 1) if cut[g][0] == GET and cut[g][3] != INF}
        puts = [e for e in early if cut[e][0] == PUT and cut[e][1] in observed]
        deletes = [e for e in early if cut[e][0] == DELETE]
        room = len(puts) + sum(cut[e][0] == PUT for e in range(i, j + 1)) + 1
        return sorted(puts + deletes[-room:]) + list(range(i, j + 1))

    def window_fails(i: int) -> bool:
        idx = window(i)
        early = set(idx[: len(idx) - (j - i + 1)])
        checked = [(k, v, c, INF if e in early else r) for e in idx for (k, v, c, r) in [cut[e]]]
        before = {ops[e].value for e in range(i) if ops[e].kind == PUT}
        return not _linearizable(checked, UNKNOWN, before)

    # the latest failing start: one by one while windows are small, then doubling the step (start 0
    # always fails: it is the failing cut itself, from the empty state), then bisecting the gap
    lo, hi = 0, j + 1  # start lo fails, start hi passes (or is past the end)
    i, step = j, 1
    while i > 0:
        if window_fails(i):
            lo = i
            break
        hi = i
        if j - i >= 64:
            step *= 2
        i = max(0, i - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if window_fails(mid):
            lo = mid
        else:
            hi = mid
    if lo == 0 and hi > 1 and not window_fails(0):
        return ops  # cannot happen if the reasoning above holds; the whole key is still a fair answer
    return [ops[e] for e in window(lo)]


# --- entry points -----------------------------------------------------------------------------------------


def _check(records: Iterable[tuple[str, object]], initial_unknown: bool = False,
           initial_candidates: Collection[str] | None = None) -> Verdict:
    per_key, count, failed = _by_key(records)
    init = UNKNOWN if initial_unknown else None
    for key in sorted(per_key):
        ops = per_key[key]
        reach = _reach(((o.kind, o.value, o.call, o.ret) for o in ops), init, initial_candidates,
                       failed.get(key, ()))
        if reach is None:
            continue
        # windows are found from the known initial state; with an unknown one, report the key's ops
        window = _shrink(ops, reach) if init is None else ops
        return Verdict(False, key, [o.rec for o in window], count, len(per_key))
    return Verdict(True, None, [], count, len(per_key))


def check_history(ops: Iterable[dict[str, Any]], *, initial_unknown: bool = False,
                  initial_candidates: Collection[str] | None = None) -> Verdict:
    """Check a history given as records; raises HistoryError on a malformed one.

    With ``initial_unknown``, each key starts missing or holding any value its history does not
    write, even in a failed put (``initial_candidates``, if given, limits those values).
    """
    return _check(((f"op {n}", rec) for n, rec in enumerate(ops)), initial_unknown, initial_candidates)


def _read_lines(path: str) -> Iterator[tuple[str, object]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HistoryError(f"line {n}: not JSON ({exc.msg})") from None
            yield f"line {n}", rec


def check_file(path: str) -> Verdict:
    """Check a JSON-lines history file; raises OSError or HistoryError if it cannot be read."""
    try:
        return _check(_read_lines(path))
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{path}: not UTF-8 text ({exc.reason})") from None


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0 linearizable, 1 not, 2 unreadable input."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab.check",
                                     description="Check a fault-lab history for linearizability.")
    parser.add_argument("history", help="a JSON-lines history file")
    parser.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    args = parser.parse_args(argv)
    try:
        verdict = check_file(args.history)
    except (OSError, HistoryError) as exc:
        print(f"check: {args.history}: {exc}" if isinstance(exc, HistoryError) else f"check: {exc}",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(verdict)))
    elif verdict.linearizable:
        print(f"linearizable: {verdict.ops_checked} ops on {verdict.keys} keys")
    else:
        for rec in verdict.window:
            print(json.dumps(rec))
        print(f"NOT linearizable: key {verdict.key}: no order of these {len(verdict.window)} ops is legal "
              f"(the key's state before them: missing or any value written earlier); "
              f"{verdict.ops_checked} ops on {verdict.keys} keys")
    return 0 if verdict.linearizable else 1


if __name__ == "__main__":
    sys.exit(main())
