"""Fuzz the client port of a live 3-node cluster (real processes) with random frames.

Each example opens its own connection and sends one frame -- a bad length, a truncated body,
bytes that are not msgpack, or msgpack of the wrong shape -- then a well-formed ``map`` request
(the sentinel), and half-closes.  Every frame must get a clear reply, or the connection must be
closed after an error frame; nodes must stay up and log no traceback; a client doing puts and gets
meanwhile must see every one succeed.
"""

from __future__ import annotations

import collections
import glob
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv import Client
from raftkv.protocol.codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder
from raftkv.routing.shardmap import META_GROUP

from ..e2e.conftest import RunningCluster

pytestmark = pytest.mark.timeout(900)

SHARDS = 4
OPS = ["map", "get", "put", "delete", "scan", "aggregate", "delete_range", "status", "compact"]
FIELDS = ["shard", "key", "keys", "pairs", "start", "end", "limit", "max_bytes", "reverse", "filter",
          "consistency", "cursor", "timeout", "aggs", "bucket_ns", "session"]
SENTINEL = "sentinel"
# the long run's length: 1,000 frames keeps the suite in its time budget; set
# RAFTKV_FUZZ_EXAMPLES for a longer hunt (3,000 take about 100 s here)
LONG_RUN_EXAMPLES = int(os.environ.get("RAFTKV_FUZZ_EXAMPLES", "1000"))
OUTCOMES: collections.Counter[str] = collections.Counter()  # printed after a run (pytest -s)
FUZZ_SHARDS = [f"s{i}" for i in range(SHARDS - 1)]  # the last shard is the bystander client's alone


class _Fuzzed:
    """A running cluster, plus a bystander client doing puts and gets in a thread."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.errors: list[BaseException] = []
        self.ops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._bystander, daemon=True)

    def _bystander(self) -> None:
        with Client(self.cluster.seeds, timeout=30) as db:
            shard = db.shard_map().shards[-1]
            i = 0
            while not self._stop.is_set():
                key = shard.start + i % 1000
                value = b"bystander-%d" % i
                try:
                    db.put(key, value)
                    got = db.get(key)
                    assert got == value, f"get({key}) returned {got!r:.60}, not {value!r}"
                except BaseException as exc:  # surfaced by the test
                    self.errors.append(exc)
                    return
                self.ops += 1
                i += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[_Fuzzed]:
    cluster = RunningCluster(str(tmp_path_factory.mktemp("fuzz") / "cluster"), shards=SHARDS)
    f = _Fuzzed(cluster)
    try:
        f.start()
        yield f
    finally:
        f.stop()
        cluster.close()


# --- strategies ------------------------------------------------------------------------------------

# Values too big to print: drawn by name. Hypothesis puts a strategy's repr into the message of
# each draw that exceeds max_leaves and keeps those messages, so a multi-MiB constant inside
# sampled_from cost seconds of formatting and about 1.4 MB of the test process per example.
BIG = {"str 70k": "x" * 70_000, "bytes 1MiB": b"\xff" * (1 << 20), "bytes 1MiB+1": b"b" * ((1 << 20) + 1),
       "id 7MiB": "i" * (7 << 20)}


def _by_name(name: str) -> Any:
    return BIG[name]


def _big(*names: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(names).map(_by_name)  # a function: a bound method's repr shows the dict


scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # all msgpack can carry: huge, negative, edge
    st.sampled_from([0, 1, -1, 2**63, 2**64 - 1, 10**9, 2**32]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.binary(max_size=40),
    _big("str 70k", "bytes 1MiB", "bytes 1MiB+1"),
    st.sampled_from(["linearizable", "serializable", *FUZZ_SHARDS, META_GROUP]),
)
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=6),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS + ["id", "op"]), st.text(max_size=8)), kids, max_size=6)),
    max_leaves=25)
ids = st.one_of(values, st.integers(-(2**63), 2**64 - 1), st.text(max_size=80),
                _big("id 7MiB"), st.sampled_from(["i" * 65, "i" * 64]))
keys = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**62), values)
field_values = {
    "shard": st.one_of(*[st.sampled_from(FUZZ_SHARDS)] * 4, st.sampled_from([META_GROUP, "s999"]), values),
    "key": keys, "start": keys, "end": st.one_of(st.none(), keys),
    "keys": st.one_of(st.lists(keys, max_size=8), values),
    "pairs": st.one_of(st.lists(st.lists(st.one_of(keys, st.binary(max_size=20)), max_size=3), max_size=5),
                       st.lists(st.tuples(st.integers(0, 2**62), st.binary(max_size=64)).map(list), max_size=5),
                       values),
    "limit": st.one_of(st.integers(-(2**63), 2**64 - 1), values),
    "max_bytes": st.one_of(st.integers(-(2**63), 2**64 - 1), values),
    "timeout": st.one_of(st.floats(allow_nan=True), st.sampled_from([0.001, 0.5, 1e300, -1, 0]), values),
    "filter": values, "aggs": values, "bucket_ns": values, "cursor": values, "reverse": values,
    "consistency": values, "session": values,
}
ops = st.one_of(*[st.sampled_from(OPS)] * 6, values)  # mostly real ops, so that handlers see the junk
requests = st.fixed_dictionaries({"op": ops}, optional={"id": ids, **{f: field_values[f] for f in FIELDS}}) | \
    st.fixed_dictionaries({}, optional={"id": ids, "op": ops, **{f: field_values[f] for f in FIELDS}})


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _header(n: int) -> bytes:
    return struct.pack(">I", n)


@st.composite
def frames(draw: Any) -> tuple[str, bytes]:
    """(kind, bytes on the wire) of one hostile or careless frame."""
    kind = draw(st.sampled_from(["request"] * 5 + ["value", "garbage", "bad_length", "truncated", "mismatch"]))
    if kind == "request":
        body = _pack(draw(requests))
    elif kind == "value":
        body = _pack(draw(values))
    elif kind == "garbage":
        body = draw(st.binary(max_size=300))
    elif kind == "bad_length":
        return kind, _header(draw(st.integers(DEFAULT_MAX_FRAME + 1, 2**32 - 1))) + draw(st.binary(max_size=64))
    elif kind == "truncated":
        body = _pack(draw(requests))
        if len(body) <= DEFAULT_MAX_FRAME:
            return kind, _header(len(body)) + body[:draw(st.integers(0, len(body) - 1))]
    else:
        body = _pack(draw(requests))
        delta = draw(st.integers(-5, 5).filter(bool))
        return kind, _header(max(0, len(body) + delta)) + body
    if len(body) > DEFAULT_MAX_FRAME:  # rare: too big to be a well-formed frame
        return "bad_length", _header(len(body)) + body[:64]
    return kind, _header(len(body)) + body


# --- the check ------------------------------------------------------------------------------------


def _exchange(addr: str, data: bytes, kind: str) -> list[Any]:
    """Send ``data`` (and the sentinel unless truncated), half-close, return every frame until EOF."""
    host, port = addr.rsplit(":", 1)
    got: list[Any] = []
    with socket.create_connection((host, int(port)), timeout=60) as s:
        try:
            s.sendall(data)
            if kind != "truncated":
                body = _pack({"id": SENTINEL, "op": "map"})
                s.sendall(_header(len(body)) + body)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            # the node refused the frame while we were still sending it; its answer is still readable
        dec = FrameDecoder()
        while True:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            dec.receive_data(chunk)
            while (msg := dec.next_message()) is not NEED_DATA:
                got.append(msg)
    return got


def _is_reply(msg: Any) -> bool:
    if not isinstance(msg, dict) or "id" not in msg or ("ok" in msg) == ("err" in msg):
        return False
    err = msg.get("err")
    return err is None or (isinstance(err, dict) and isinstance(err.get("code"), str)
                           and isinstance(err.get("message"), str))


def _check(fuzzed: _Fuzzed, which: int, kind: str, data: bytes) -> None:
    addr = fuzzed.cluster.info.addresses[which % 3]
    got = _exchange(addr, data, kind)
    assert all(_is_reply(m) for m in got), got
    sentinel = [m for m in got if m["id"] == SENTINEL and "ok" in m]
    errs = sorted({m["err"]["code"] for m in got if "err" in m})
    OUTCOMES[f"{kind}: {'in step' if sentinel else 'closed'} {','.join(errs) or 'ok'}"] += 1
    if kind == "truncated":
        assert got == [], f"a truncated frame was answered: {got!r:.300}"
    elif sentinel:  # the stream stayed in step: our one frame got exactly one reply
        assert kind in ("request", "value", "garbage") and len(got) == 2, f"{kind}: {got!r:.300}"
    else:  # the node hung up: after saying why
        assert got and "err" in got[-1] and got[-1]["id"] is None, f"{kind}: {got!r:.300}"


def _assert_healthy(fuzzed: _Fuzzed) -> None:
    for node, pid in fuzzed.cluster.info.pids.items():
        assert pid is not None and psutil.pid_exists(pid), f"node {node} died"
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, f"node {node} died"
    for log in glob.glob(os.path.join(fuzzed.cluster.root, "*", "node.log")):
        with open(log, errors="replace") as f:
            text = f.read()
        assert "Traceback" not in text, f"{log}:\n{text[text.index('Traceback') - 300:][:3000]}"
    assert fuzzed.errors == [], fuzzed.errors


def _run(fuzzed: _Fuzzed, max_examples: int) -> None:
    @settings(derandomize=True, max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, 2), frame=frames())
    def one(which: int, frame: tuple[str, bytes]) -> None:
        _check(fuzzed, which, *frame)

    ops_before = fuzzed.ops
    OUTCOMES.clear()
    one()
    print("\n".join(f"{n:5d}  {what}" for what, n in OUTCOMES.most_common()))
    _assert_healthy(fuzzed)
    assert fuzzed.ops > ops_before, "the bystander client made no progress"


def test_random_frames_get_clear_answers_and_harm_no_one(fuzzed):
    _run(fuzzed, 200)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_random_frames_long_run(fuzzed):
    _run(fuzzed, LONG_RUN_EXAMPLES)
