"""What the client says when it cannot reach anything: real sockets on 127.0.0.1, no cluster.

Seeds that all refuse or do not resolve fail the first call at once, naming each; a seed that
accepts but never answers is waited for until the deadline, and then named too.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator

import pytest

from raftkv import AsyncClient, Client
from raftkv.client.aio import deadline_error
from raftkv.cluster.launcher import free_ports
from raftkv.errors import Unavailable

pytestmark = pytest.mark.timeout(60)

# "Fast" below is the behaviour under test, so it is asserted, with room to spare on a loaded
# machine: well before the 10 s deadline the client would otherwise wait out.
FAST = 5.0


def first_call_error(seeds: str | list[str], **options: float) -> tuple[Unavailable, float]:
    """The Unavailable the first call of a new Client raises, and how long it took."""
    db = Client(seeds, **options)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            db.get(1)
        return caught.value, time.monotonic() - started
    finally:
        db.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_a_refused_seed_fails_the_first_call_at_once_naming_it() -> None:
    port = free_ports(1)[0]  # free: nothing listens there
    err, took = first_call_error(f"127.0.0.1:{port}")
    assert err.message == f"cannot reach any seed: 127.0.0.1:{port} refused the connection"
    assert err.details["unreachable"] == [f"127.0.0.1:{port}"]
    assert took < FAST


def test_an_unknown_host_fails_at_once_naming_it() -> None:
    err, took = first_call_error("nosuchhost.invalid:7401")  # .invalid never resolves (RFC 6761)
    # a resolver that cannot be asked adds its reason in parentheses
    assert err.message.startswith("cannot reach any seed: cannot resolve nosuchhost.invalid"), err.message
    assert took < FAST


def test_every_seed_is_named_in_the_order_given() -> None:
    a, b = free_ports(2)
    err, took = first_call_error([f"127.0.0.1:{a}", "nosuchhost.invalid:7401", f"127.0.0.1:{b}"])
    assert err.message.startswith(f"cannot reach any seed: 127.0.0.1:{a} refused the connection; "
                                  "cannot resolve nosuchhost.invalid"), err.message
    assert err.message.endswith(f"; 127.0.0.1:{b} refused the connection"), err.message
    assert took < FAST


def test_the_async_client_connect_fails_at_once_and_again_on_the_next_call() -> None:
    port = free_ports(1)[0]

    async def go() -> None:
        db = AsyncClient(f"127.0.0.1:{port}")
        try:
            for call in (db.connect, lambda: db.put(1, b"x")):
                started = time.monotonic()
                with pytest.raises(Unavailable, match=f"^cannot reach any seed: 127.0.0.1:{port} refused"):
                    await call()
                assert time.monotonic() - started < FAST
        finally:
            await db.close()

    asyncio.run(go())


def test_a_seed_that_does_not_answer_is_waited_for_then_named_with_the_others(silent_port: int) -> None:
    refused = free_ports(1)[0]
    # not every seed refuses, so no early failure: the call runs to its (short) deadline
    err, _ = first_call_error(f"127.0.0.1:{silent_port},127.0.0.1:{refused}", timeout=1.0)
    assert err.message.startswith("cannot reach any seed within 1.0 s: "), err.message
    assert f"127.0.0.1:{silent_port} did not answer within" in err.message
    assert err.message.endswith(f"; 127.0.0.1:{refused} refused the connection"), err.message


def test_the_deadline_error_names_leaderless_shards_and_silent_nodes() -> None:
    err = deadline_error(10.0, ["s0003"], ["n2 (127.0.0.1:40002)", "n3 (127.0.0.1:40003)"], None)
    assert err.message == ("shard s0003 has no leader within 10.0 s; "
                           "nodes not answering: n2 (127.0.0.1:40002), n3 (127.0.0.1:40003)")
    assert err.details == {"leaderless": ["s0003"],
                           "not_answering": ["n2 (127.0.0.1:40002)", "n3 (127.0.0.1:40003)"]}

    err = deadline_error(2.5, ["s0001", "s0004"], ["n1 (h:1)"], None)
    assert err.message == "shards s0001, s0004 have no leader within 2.5 s; node not answering: n1 (h:1)"


def test_without_a_leaderless_shard_the_deadline_error_keeps_the_last_error() -> None:
    last = Unavailable("shard s0001: write not acknowledged within 3.0s; its outcome is unknown")
    err = deadline_error(10.0, [], ["n3 (127.0.0.1:40003)"], last)
    assert err.message == ("cluster could not serve the request in 10.0s: shard s0001: write not acknowledged "
                           "within 3.0s; its outcome is unknown; node not answering: n3 (127.0.0.1:40003)")
    assert deadline_error(1.0, [], [], last).message == f"cluster could not serve the request in 1.0s: {last.message}"


def test_only_a_connection_hung_up_on_at_its_first_request_is_asked_whether_it_speaks_tls():
    """A port that hangs up on a connection's first request without a word may be a TLS port, so
    the client dials it once more in TLS to say so; one that hangs up after a request of it timed
    out (a node busy, then going down) is not asked: that would only hold up the failover.  The
    question is a connection of its own, so the listener's accept count tells whether it was asked."""
    from raftkv.client.aio import NodeConnection, _NoAnswer

    async def scenario() -> tuple[int, int]:
        accepted = 0
        requests_to_hang_up_at: dict[int, int] = {}  # connection number -> hang up at its n-th read (1)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            hang_up_at, seen = requests_to_hang_up_at.get(accepted, 1), 0
            try:
                while await reader.read(65536):  # never answers: one read per request here
                    seen += 1
                    if seen >= hang_up_at:
                        break
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            # connection 1: hung up on at its first request: asked (connection 2 is the TLS probe,
            # hung up on at its ClientHello: not TLS, so the request just failed)
            conn = NodeConnection(address)
            await conn.open(5.0)
            with pytest.raises(_NoAnswer, match="closed"):
                await conn.request({"op": "status"}, 10.0)
            after_first = accepted
            # connection 3: its first request times out, the port hangs up at the second: not asked
            requests_to_hang_up_at[3] = 2
            conn = NodeConnection(address)
            await conn.open(5.0)
            with pytest.raises(_NoAnswer, match="did not answer"):
                await conn.request({"op": "status"}, 0.1)
            with pytest.raises(_NoAnswer, match="closed"):
                await conn.request({"op": "status"}, 10.0)
            await conn.close()
            return after_first, accepted
        finally:
            server.close()
            await server.wait_closed()

    after_first, after_second = asyncio.run(scenario())
    assert after_first == 2  # the connection and the probe
    assert after_second == 3  # one more connection, no probe


def test_the_client_leaves_the_random_module_alone(silent_port) -> None:
    """Retries draw their jitter from the client's own generator: an application that seeds the
    random module for a reproducible run gets the same sequence with a client retrying beside it."""
    random.seed(20261201)
    state = random.getstate()
    refused = free_ports(1)[0]
    first_call_error([f"127.0.0.1:{refused}", f"127.0.0.1:{silent_port}"], timeout=1.5, attempt_timeout=0.3)
    assert random.getstate() == state


def test_requests_to_a_silent_node_time_out_each_at_its_own_deadline_and_the_sweep_stops(silent_port) -> None:
    """Deadlines are checked by one sweep per connection, not a timer per request: each request
    still fails no earlier than its own timeout, in deadline order, and once none is outstanding
    the sweep stops rescheduling itself."""
    from raftkv.client.aio import SWEEP_SECONDS, NodeConnection, _NoAnswerInTime

    async def main() -> None:
        conn = NodeConnection(f"127.0.0.1:{silent_port}")
        await conn.open(2.0)  # no hello without a token: the connection is up once the kernel accepts
        try:
            timeouts = [0.3, 0.1, 0.2]
            failed: list[tuple[float, float]] = []
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def one(t: float) -> None:
                with pytest.raises(_NoAnswerInTime, match=f"did not answer within {t:.1f} s"):
                    await conn.request({"op": "get", "key": 1}, t)
                failed.append((t, loop.time() - started))

            await asyncio.gather(*(one(t) for t in timeouts))
            assert [t for t, _ in failed] == sorted(timeouts)
            for t, took in failed:
                assert t <= took < t + FAST
            await asyncio.sleep(3 * SWEEP_SECONDS)
            assert not conn._sweeping and not conn._due
        finally:
            await conn.close()

    asyncio.run(main())
