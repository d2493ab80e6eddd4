"""Shard splits from the outside: ``raftkv cluster split``, ``AsyncClient.split_shard``, and the new
status fields (``cluster status``, ``SHOW SHARDS``).

The first part is pure (rendering, key parsing, the client's retry rules against a stand-in node).
The second runs real clusters.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raftkv import AsyncClient, Client
from raftkv.cli import main
from raftkv.cluster import launcher
from raftkv.cluster.cli import human_bytes, human_count, human_rate, parse_key, render_split, render_status
from raftkv.errors import (
    InvalidArgument,
    InvalidKey,
    NotLeader,
    RaftKVError,
    StaleRoute,
    Timeout,
    Unavailable,
)
from raftkv.routing.shardmap import DEFAULT_SHARDS, Shard, ShardMap, initial_map

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
KEY_SPACE_END = 2**64
SHOW_SHARDS_COLUMNS = ("id", "first_key", "last_key", "replicas", "leader", "generation", "bytes", "keys",
                       "writes_per_s", "stripe")


def raftkv_cli(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAFTKV_HISTORY": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "raftkv", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env, cwd=REPO)


# --- rendering and parsing (pure) ------------------------------------------------------------------


def status_dict(shards: list[dict[str, Any]], epoch: int | None = 7) -> dict[str, Any]:
    return {"nodes": [{"id": "n1", "address": "127.0.0.1:7401", "pid": 11, "up": True},
                      {"id": "n2", "address": "127.0.0.1:7402", "pid": None, "up": False}],
            "shards": shards, "epoch": epoch, "meta": {"leader": "n1"}}


def shard(sid: str, start: int, end: int, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "start": start, "end": end, "replicas": ["n1", "n2", "n3"], "leader": "n1",
            "generation": 1, "stripe": None, "bytes": None, "keys": None, "writes_per_s": None, **extra}


def table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the table under the line starting with ``header``, split on runs of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append([c.strip() for c in line.split("  ") if c.strip()])
    return rows


def test_render_status_shows_generation_load_and_stripes() -> None:
    half = 2**63
    st = status_dict([
        shard("s0000", 0, 100, generation=3, bytes=1536, keys=12_345, writes_per_s=2.5),
        shard("s0004", 100, half, bytes=0, keys=0, writes_per_s=0.0),
        # two stripes of one segment: same bounds, one row each
        shard("s0005", half, KEY_SPACE_END, stripe=[0, 2], bytes=3 * 2**30, keys=4_100_000, writes_per_s=1234.4),
        shard("s0006", half, KEY_SPACE_END, stripe=[1, 2], leader=None),
    ])
    text = render_status(st)
    assert text.splitlines()[0] == "1/2 nodes up, 3/4 shards with a leader, meta leader n1, map epoch 7"
    rows = table_rows(text, "SHARD")
    assert rows[0] == ["SHARD", "RANGE (hex, inclusive)", "STRIPE", "GEN", "REPLICAS", "LEADER", "~KEYS", "~SIZE",
                       "WRITES/S"]
    assert rows[1] == ["s0000", "0x0000000000000000..0x0000000000000063", "-", "3", "n1,n2,n3", "n1", "12.3k",
                       "1.5 KiB", "2.5"]
    assert rows[2] == ["s0004", "0x0000000000000064..0x7fffffffffffffff", "-", "1", "n1,n2,n3", "n1", "0",
                       "0 B", "0.0"]
    assert rows[3] == ["s0005", "0x8000000000000000..0xffffffffffffffff", "0/2", "1", "n1,n2,n3", "n1", "4.1M",
                       "3.0 GiB", "1234"]
    # a shard whose replicas report no figures (yet): dashes, not zeros
    assert rows[4] == ["s0006", "0x8000000000000000..0xffffffffffffffff", "1/2", "1", "n1,n2,n3", "-", "-", "-",
                       "-"]


def test_render_status_numbers_line_up_on_the_right() -> None:
    text = render_status(status_dict([shard("s0000", 0, 2**63, generation=12, keys=5),
                                      shard("s0001", 2**63, KEY_SPACE_END, keys=123_456)]))
    lines = [line for line in text.splitlines() if line.startswith("s000")]
    # right-aligned: the ~KEYS column ends at the same place on every row
    assert lines[0].index("5 ") + 1 == lines[1].index("123.5k") + len("123.5k")


def test_render_status_of_an_older_status_and_of_a_cluster_that_is_down() -> None:
    # a status dict without the new fields still renders (fields missing show as "-")
    old = {"nodes": [{"id": "n1", "address": "127.0.0.1:1", "pid": 5, "up": True}],
           "shards": [{"id": "s0000", "start": 0, "end": KEY_SPACE_END, "replicas": ["n1"], "leader": "n1"}]}
    text = render_status(old)
    assert "epoch" not in text
    assert table_rows(text, "SHARD")[1] == ["s0000", "0x0000000000000000..0xffffffffffffffff", "-", "-", "n1", "n1",
                                             "-", "-", "-"]
    down = status_dict([], epoch=None)
    down["nodes"][0].update(up=False, pid=None)
    assert render_status(down).splitlines()[0] == "0/2 nodes up (shard map unknown: no node answers), meta leader n1"


def test_human_figures() -> None:
    assert [human_bytes(n) for n in (None, 0, 1023, 1024, 10 * 2**20, 2**50 * 3)] == [
        None, "0 B", "1023 B", "1.0 KiB", "10.0 MiB", "3072.0 TiB"]
    assert [human_count(n) for n in (None, 0, 999, 1000, 2_500_000, 7 * 10**9)] == [
        None, "0", "999", "1.0k", "2.5M", "7.0G"]
    assert [human_rate(r) for r in (None, 0.0, 99.94, 100.0, 2500.6)] == [None, "0.0", "99.9", "100", "2501"]


def test_render_split() -> None:
    shards = [shard("s0003", 6 * 2**60, 7 * 2**60, generation=2), shard("s0008", 7 * 2**60, 8 * 2**60)]
    text = render_split(9, shards)
    assert text.splitlines()[0] == ("split s0003 at 8070450532247928832 (0x7000000000000000): s0003 and s0008, "
                                    "shard map epoch 9")
    assert table_rows(text, "SHARD") == [
        ["SHARD", "RANGE (hex, inclusive)", "GEN", "REPLICAS"],
        ["s0003", "0x6000000000000000..0x6fffffffffffffff", "2", "n1,n2,n3"],
        ["s0008", "0x7000000000000000..0x7fffffffffffffff", "1", "n1,n2,n3"],
    ]


@pytest.mark.parametrize(("text", "key"), [
    ("0", 0), ("42", 42), (" 42 ", 42), ("0x2a", 42), ("0X2A", 42), ("18446744073709551615", 2**64 - 1),
    ("0xffffffffffffffff", 2**64 - 1), ("007", 7),
])
def test_parse_key(text: str, key: int) -> None:
    assert parse_key(text) == key


@pytest.mark.parametrize(("text", "fragment"), [
    ("-1", "bad key '-1'"), ("", "bad key ''"), ("1.5", "bad key"), ("0x", "bad key"), ("0xg1", "bad key"),
    ("1e3", "bad key"), ("+5", "bad key"), ("0x-5", "bad key"), ("٣", "bad key"), ("s0003", "bad key"),
    ("18446744073709551616", "outside the key space"), ("0x10000000000000000", "outside the key space"),
])
def test_parse_key_errors(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_key(text)
    assert fragment in e.value.message and "\n" not in e.value.message


# --- the CLI without a cluster ---------------------------------------------------------------------


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["cluster", "split", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_split_errors_are_one_line_with_status_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(capsys, "--connect", "127.0.0.1:1", "--shard", "s0000", "--at", "12", "--timeout", "5")
    assert (code, out) == (1, "")
    assert err.startswith("raftkv: cannot reach the cluster at 127.0.0.1:1: ") and err.count("\n") == 1
    code, _, err = run_main(capsys, "--connect", "127.0.0.1:1", "--shard", "s0000", "--at", "-3")
    assert code == 1 and err.startswith("raftkv: bad key '-3'") and err.count("\n") == 1
    code, _, err = run_main(capsys, "--connect", "nowhere", "--shard", "s0000")
    assert code == 1 and err == "raftkv: bad address 'nowhere': expected host:port\n"
    code, _, err = run_main(capsys, "--data-dir", str(tmp_path / "none"), "--shard", "s0000")
    assert code == 1 and "no cluster in" in err and err.count("\n") == 1
    code, _, err = run_main(capsys, "--connect", "127.0.0.1:1", "--shard", "s0000", "--timeout", "0")
    assert code == 1 and "--timeout must be positive" in err

    # a cluster directory whose nodes are not running: said at once, with the way out
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "cluster.json").write_text(json.dumps(
        {"version": 1, "nodes": [{"id": "n1", "client": "127.0.0.1:1", "peer": "127.0.0.1:2"}],
         "shards": 1, "replication": 1}))
    code, _, err = run_main(capsys, "--data-dir", str(tmp_path / "stopped"), "--shard", "s0000")
    assert code == 1 and "no node of the cluster in" in err and "raftkv cluster start" in err


def test_cli_split_needs_exactly_one_of_data_dir_and_connect(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--shard", "s0000"], ["--data-dir", "d", "--connect", "127.0.0.1:1", "--shard", "s0000"]):
        with pytest.raises(SystemExit) as e:
            main(["cluster", "split", *args])
        assert e.value.code == 2
    assert "--data-dir" in capsys.readouterr().err


# --- AsyncClient.split_shard against a stand-in node ------------------------------------------------


MAP = initial_map(["n1", "n2", "n3"], 4)
STEP = 2**64 // 4
ADDRESSES = {"n1": "127.0.0.1:1", "n2": "127.0.0.1:2", "n3": "127.0.0.1:3"}


def split_reply(smap: ShardMap, left: str, right: str) -> dict[str, Any]:
    return {"epoch": smap.epoch, "shards": [smap.shard_by_id(left).to_dict(), smap.shard_by_id(right).to_dict()]}


class FakeCluster:
    """The map the cluster holds and a handler answering each request: what a client sees of nodes."""

    def __init__(self, smap: ShardMap) -> None:
        self.map = smap
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (node id, request)
        self.map_fetches = 0
        self.answer: Any = None  # (node id, request) -> reply; may raise

    def node_of(self, address: str) -> str:
        return next(n for n, a in ADDRESSES.items() if a == address)


class FakeConnection:
    def __init__(self, cluster: FakeCluster, address: str) -> None:
        self.cluster, self.address, self.closed = cluster, address, False

    async def request(self, msg: dict[str, Any], timeout: float) -> Any:
        node = self.cluster.node_of(self.address)
        self.cluster.requests.append((node, msg))
        return self.cluster.answer(node, msg)

    async def close(self) -> None:
        self.closed = True


def fake_client(cluster: FakeCluster, timeout: float = 3.0) -> AsyncClient:
    client = AsyncClient("127.0.0.1:1", timeout=timeout, attempt_timeout=1.0)

    async def fetch_map(deadline: float) -> None:
        cluster.map_fetches += 1
        if client._map is None or cluster.map.epoch >= client._map.epoch:
            client._map = cluster.map
        client._nodes.update(ADDRESSES)

    async def conn(address: str, deadline: float) -> FakeConnection:
        return FakeConnection(cluster, address)

    client._fetch_map = fetch_map  # type: ignore[method-assign]
    client._conn = conn  # type: ignore[method-assign]
    return client


def split_at(cluster: FakeCluster, at: int) -> ShardMap:
    return cluster.map.split("s0001", at, "s0004")


def test_split_shard_goes_to_the_leader_and_updates_the_cached_map() -> None:
    cluster = FakeCluster(MAP)
    after = MAP.split("s0001", STEP + 100, "s0004")

    def answer(node: str, msg: dict[str, Any]) -> Any:
        assert msg["op"] == "split"
        if node != "n2":
            raise NotLeader("not me", leader="n2")
        cluster.map = after
        return split_reply(after, "s0001", "s0004")

    cluster.answer = answer

    async def go() -> None:
        client = fake_client(cluster)
        reply = await client.split_shard("s0001", STEP + 100)
        assert reply == split_reply(after, "s0001", "s0004")
        sent = [(node, {k: v for k, v in msg.items() if k != "timeout"}) for node, msg in cluster.requests]
        assert sent[-1] == ("n2", {"op": "split", "shard": "s0001", "at": STEP + 100})
        # the redirect was followed, and a resend after it re-read the map first (unchanged then)
        assert [node for node, _ in cluster.requests].count("n2") == 1
        smap = await client.shard_map()
        assert smap.epoch == after.epoch and smap.shard_for_key(STEP + 100).id == "s0004"
        assert smap.shard_by_id("s0001").generation == 2

    asyncio.run(go())


def test_split_shard_without_at_sends_none() -> None:
    cluster = FakeCluster(MAP)
    after = MAP.split("s0002", 2 * STEP + 7, "s0004")
    cluster.answer = lambda node, msg: split_reply(after, "s0002", "s0004")

    async def go() -> None:
        client = fake_client(cluster)
        client._leaders["s0002"] = "n3"
        assert (await client.split_shard("s0002"))["epoch"] == after.epoch
        assert cluster.requests[0][0] == "n3" and cluster.requests[0][1]["at"] is None

    asyncio.run(go())


def test_split_shard_refuses_what_it_can_before_sending() -> None:
    striped = ShardMap(2, (MAP.shards[0], Shard("s0008", STEP, KEY_SPACE_END, ("n1", "n2", "n3"), 1, (0, 2)),
                           Shard("s0009", STEP, KEY_SPACE_END, ("n1", "n2", "n3"), 1, (1, 2))))
    cluster = FakeCluster(striped)
    cluster.answer = lambda node, msg: pytest.fail("nothing may be sent")

    async def go() -> None:
        client = fake_client(cluster)
        with pytest.raises(InvalidArgument, match=r"no shard 's0099' in the shard map; the shards are "
                                                  r"s0000, s0008, s0009"):
            await client.split_shard("s0099", 5)
        assert cluster.map_fetches == 2  # the cached map was re-read before saying so
        with pytest.raises(InvalidArgument, match="stripe 1 of 2"):
            await client.split_shard("s0009")
        for bad in (-1, 2**64, True, 1.0, "5"):
            with pytest.raises(InvalidKey):
                await client.split_shard("s0000", bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="non-empty string"):
            await client.split_shard("")

    asyncio.run(go())


def test_cluster_errors_from_the_node_are_raised_as_they_are() -> None:
    cluster = FakeCluster(MAP)

    def answer(node: str, msg: dict[str, Any]) -> Any:
        raise InvalidArgument("split key 5 is not strictly inside shard s0001")

    cluster.answer = answer

    async def go() -> None:
        with pytest.raises(InvalidArgument, match="not strictly inside"):
            await fake_client(cluster).split_shard("s0001", 5)
        assert len(cluster.requests) == 1  # a caller mistake is not retried

    asyncio.run(go())


def test_a_lost_reply_is_not_resent_when_the_map_shows_the_split() -> None:
    cluster = FakeCluster(MAP)
    after = MAP.split("s0001", STEP + 100, "s0004")

    def answer(node: str, msg: dict[str, Any]) -> Any:
        cluster.map = after  # the split happened ...
        raise Timeout("no answer in time")  # ... but its reply was lost

    cluster.answer = answer

    async def go() -> None:
        client = fake_client(cluster)
        reply = await client.split_shard("s0001", STEP + 100)
        assert reply == split_reply(after, "s0001", "s0004")
        assert len(cluster.requests) == 1  # never sent twice

    asyncio.run(go())


def test_a_lost_reply_is_resent_when_the_map_shows_no_change() -> None:
    cluster = FakeCluster(MAP)
    after = MAP.split("s0001", STEP + 100, "s0004")
    failures = [Unavailable("connection to 127.0.0.1:1 closed")]

    def answer(node: str, msg: dict[str, Any]) -> Any:
        if failures:
            raise failures.pop()
        cluster.map = after
        return split_reply(after, "s0001", "s0004")

    cluster.answer = answer

    async def go() -> None:
        client = fake_client(cluster)
        await client.shard_map()
        fetches = cluster.map_fetches
        assert (await client.split_shard("s0001", STEP + 100))["epoch"] == after.epoch
        assert len(cluster.requests) == 2 and cluster.map_fetches > fetches

    asyncio.run(go())


def test_a_refusal_is_resent_even_if_the_shard_changed_meanwhile() -> None:
    # StaleRoute says the node did nothing: a split of the shard seen afterwards (here by its
    # leader's own policy) is not ours, so the request goes again, to the shard as it is now
    cluster = FakeCluster(MAP)
    auto = MAP.split("s0001", STEP + 500, "s0004")
    ours = auto.split("s0001", STEP + 100, "s0005")

    def answer(node: str, msg: dict[str, Any]) -> Any:
        if cluster.map is MAP:
            cluster.map = auto
            raise StaleRoute("shard s0001 changed")
        cluster.map = ours
        return split_reply(ours, "s0001", "s0005")

    cluster.answer = answer

    async def go() -> None:
        reply = await fake_client(cluster).split_shard("s0001")
        assert reply == split_reply(ours, "s0001", "s0005") and len(cluster.requests) == 2

    asyncio.run(go())


def test_a_lost_reply_and_some_other_change_is_an_error_not_a_second_split() -> None:
    cluster = FakeCluster(MAP)
    other = MAP.split("s0001", STEP + 500, "s0004")  # not the key we asked for

    def answer(node: str, msg: dict[str, Any]) -> Any:
        cluster.map = other
        raise Timeout("no answer in time")

    cluster.answer = answer

    async def go() -> None:
        with pytest.raises(RaftKVError, match="changed while the split request was in flight") as e:
            await fake_client(cluster).split_shard("s0001", STEP + 100)
        assert not isinstance(e.value, Unavailable) and len(cluster.requests) == 1

    asyncio.run(go())


def test_an_unreachable_leader_ends_in_unavailable() -> None:
    cluster = FakeCluster(MAP)

    def answer(node: str, msg: dict[str, Any]) -> Any:
        raise Unavailable(f"cannot connect to {ADDRESSES[node]}")

    cluster.answer = answer

    async def go() -> None:
        with pytest.raises(Unavailable, match="could not serve the request"):
            await fake_client(cluster, timeout=0.5).split_shard("s0001", STEP + 100)
        assert {node for node, _ in cluster.requests} == set(MAP.shard_by_id("s0001").replicas)

    asyncio.run(go())


def test_sync_client_split_shard() -> None:
    cluster = FakeCluster(MAP)
    after = MAP.split("s0000", 5, "s0004")
    cluster.answer = lambda node, msg: split_reply(after, "s0000", "s0004")
    db = Client("127.0.0.1:1")
    fake = fake_client(cluster)
    db._aio = fake
    try:
        assert db.split_shard("s0000", 5) == split_reply(after, "s0000", "s0004")
    finally:
        db.close()


# --- a real cluster: what works before nodes can split ---------------------------------------------


def test_status_json_and_table_have_the_new_fields(shared_cluster: launcher.ClusterInfo) -> None:
    out = raftkv_cli("cluster", "status", "--data-dir", shared_cluster.data_dir, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    with Client(shared_cluster.seeds) as db:
        smap = db.shard_map()
    assert st["epoch"] == smap.epoch
    assert [(s["id"], s["generation"], s["stripe"]) for s in st["shards"]] == [
        (s.id, s.generation, None) for s in smap.shards]
    for s in st["shards"]:
        # None until the nodes report them; then numbers
        assert s["bytes"] is None or type(s["bytes"]) is int
        assert s["keys"] is None or type(s["keys"]) is int
        assert s["writes_per_s"] is None or type(s["writes_per_s"]) is float

    out = raftkv_cli("cluster", "status", "--data-dir", shared_cluster.data_dir)
    assert out.returncode == 0, out.stderr
    assert f"map epoch {smap.epoch}" in out.stdout.splitlines()[0]
    rows = table_rows(out.stdout, "SHARD")
    assert rows[0][:4] == ["SHARD", "RANGE (hex, inclusive)", "STRIPE", "GEN"]
    assert [r[0] for r in rows[1:]] == [s.id for s in smap.shards]
    assert all(r[2:4] == ["-", "1"] for r in rows[1:])


def test_show_shards_has_the_new_columns(shared_cluster: launcher.ClusterInfo) -> None:
    with Client(shared_cluster.seeds) as db:
        res = db.query("SHOW SHARDS")
        rows = list(res)
        smap = db.shard_map()
    assert res.columns == SHOW_SHARDS_COLUMNS
    assert [r[:4] for r in rows] == [(s.id, s.start, s.end - 1, ",".join(s.replicas)) for s in smap.shards]
    for r in rows:
        assert r[5] == 1 and r[9] is None
        assert all(v is None or type(v) is int for v in r[6:8]) and (r[8] is None or type(r[8]) is float)


def test_show_shards_in_the_shell(shared_cluster: launcher.ClusterInfo) -> None:
    out = raftkv_cli("shell", "--connect", shared_cluster.seeds, "--format", "csv", "-e", "SHOW SHARDS;")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ",".join(SHOW_SHARDS_COLUMNS) and len(lines) == 1 + DEFAULT_SHARDS


def test_cli_split_of_an_unknown_shard(shared_cluster: launcher.ClusterInfo) -> None:
    out = raftkv_cli("cluster", "split", "--data-dir", shared_cluster.data_dir, "--shard", "s0099")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("raftkv: cannot split s0099: no shard 's0099' in the shard map; the shards are "
                                 "s0000, s0001,") and out.stderr.count("\n") == 1
    out = raftkv_cli("cluster", "split", "--connect", shared_cluster.seeds, "--shard", "nope", "--at", "0x10")
    assert out.returncode == 1 and "no shard 'nope'" in out.stderr
    out = raftkv_cli("shell", "--connect", shared_cluster.seeds, "-e", "SPLIT SHARD s0099 AT 5;")
    assert out.returncode == 1 and "no shard 's0099'" in out.stderr


def test_shell_split_syntax_errors_show_where(shared_cluster: launcher.ClusterInfo) -> None:
    out = raftkv_cli("shell", "--connect", shared_cluster.seeds, "--no-timing", "-e", "SPLIT SHARD s0001 AT 'x';")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "ERROR: line 1, column 22: the split key must be a constant number such as 42, 0x2a or "
        "TIMESTAMP '2026-11-21', not 'x'",
        "  SPLIT SHARD s0001 AT 'x'",
        "                       ^",
    ]


# --- a real cluster: splits ------------------------------------------------------------------------


def test_cli_split_at_a_key_and_near_the_median(cluster_dir: Path) -> None:
    info = launcher.start(cluster_dir, nodes=3, shards=4, wait=60.0)
    quarter = 2**62
    with Client(info.seeds) as db:
        db.put_many([(quarter + i * 1000, b"x" * 100) for i in range(2000)])  # keys in s0001
        epoch = db.shard_map().epoch

    at = quarter + 500_000
    out = raftkv_cli("cluster", "split", "--data-dir", str(cluster_dir), "--shard", "s0001", "--at", hex(at))
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"split s0001 at {at} ({at:#018x}): s0001 and ")
    new_id = first.split(" and ")[1].split(",")[0]
    assert "shard map epoch" in first
    rows = table_rows(out.stdout, "SHARD")
    assert [r[0] for r in rows[1:]] == ["s0001", new_id]
    assert rows[1][1] == f"{quarter:#018x}..{at - 1:#018x}" and rows[1][2] == "2"
    assert rows[2][1] == f"{at:#018x}..{2 * quarter - 1:#018x}" and rows[2][2] == "1"

    st = launcher.status(cluster_dir)
    assert st["epoch"] > epoch and len(st["shards"]) == 5
    by_id = {s["id"]: s for s in st["shards"]}
    assert (by_id["s0001"]["end"], by_id["s0001"]["generation"]) == (at, 2)
    assert (by_id[new_id]["start"], by_id[new_id]["end"], by_id[new_id]["generation"]) == (at, 2 * quarter, 1)
    wait_until(lambda: all(s["leader"] for s in launcher.status(cluster_dir)["shards"]), 30, "leaders for all")

    # without --at, through --connect, as JSON: the node picks a key near the median of what is left
    out = raftkv_cli("cluster", "split", "--connect", info.seeds, "--shard", new_id, "--json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    left, right = reply["shards"]
    assert left["id"] == new_id and left["start"] == at and right["end"] == 2 * quarter
    assert at < right["start"] < 2 * quarter and reply["epoch"] > st["epoch"]
    with Client(info.seeds) as db:
        # every row is still there, whichever shard now holds it
        assert len(db.range_query(quarter, 2 * quarter - 1)) == 2000

    # errors from the node: a key not strictly inside the shard (now [quarter, at)), a shard too
    # small to split; (the same split again, at == its end, is a retry the node answers as done)
    for key in (at + 10, quarter, quarter - 1):
        out = raftkv_cli("cluster", "split", "--data-dir", str(cluster_dir), "--shard", "s0001", "--at", str(key))
        assert out.returncode == 1 and out.stderr.startswith("raftkv: cannot split s0001: "), out.stderr
        assert out.stderr.count("\n") == 1
    out = raftkv_cli("cluster", "split", "--data-dir", str(cluster_dir), "--shard", "s0003")
    assert out.returncode == 1 and out.stderr.startswith("raftkv: cannot split s0003: ")


def test_shell_split_then_show_shards(cluster_dir: Path) -> None:
    info = launcher.start(cluster_dir, nodes=3, shards=2, wait=60.0)
    at = 2**62
    out = raftkv_cli("shell", "--connect", info.seeds, "--format", "csv", "-e",
                     f"PUT {at - 1} 'a'; PUT {at} 'b'; SPLIT SHARD s0000 AT {at}; SHOW SHARDS;")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "id,first_key,last_key,replicas,generation,epoch"
    left, right = lines[1].split(","), lines[2].split(",")
    assert (left[0], left[1], left[2]) == ("s0000", "0", str(at - 1))
    assert (right[1], right[2]) == (str(at), str(2**63 - 1))
    assert lines[3] == ",".join(SHOW_SHARDS_COLUMNS)
    shards = [line.split(",") for line in lines[4:]]
    assert [s[0] for s in shards] == ["s0000", right[0], "s0001"]
    assert [s[1] for s in shards] == ["0", str(at), str(2**63)]
    with Client(info.seeds) as db:
        assert (db.get(at - 1), db.get(at)) == (b"a", b"b")
        res = db.query("SHOW SHARDS")
        rows = {r[0]: r for r in res}
        assert rows["s0000"][5] == 2 and rows[right[0]][5] == 1
