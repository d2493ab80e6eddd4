"""A client connection's request slots: bounded by count and by the bytes the requests hold.

These drive the bookkeeping of ``_ClientConnection`` over a real loopback connection; the node
admits every request through it (``Node._admit``), and the reader waits while it waits.
"""

from __future__ import annotations

import asyncio

import pytest

from raftkv.server.node import ClientLimits, _ClientConnection, _ConnectionClosing

pytestmark = pytest.mark.timeout(30)

MiB = 1 << 20


async def _turns(n: int = 20) -> None:
    """Let the event loop run whatever is ready, a few times over."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _with_connection(limits: ClientLimits, body) -> None:
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client_writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer = await accepted
        await body(_ClientConnection(writer, limits))
        writer.close()
    finally:
        client_writer.close()
        server.close()
        await server.wait_closed()


def test_requests_wait_for_bytes_and_take_what_is_freed() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(MiB)
        await conn.take_slot(MiB)
        third = asyncio.ensure_future(conn.take_slot(2 * MiB))  # 4 MiB > 3 MiB: waits
        await _turns()
        assert not third.done()
        assert (conn.inflight_count, conn.request_bytes) == (2, 2 * MiB)
        conn.free_slot(MiB)  # 3 MiB now fit
        await _turns()
        assert third.done() and third.exception() is None
        assert (conn.inflight_count, conn.request_bytes) == (2, 3 * MiB)
        conn.free_slot(MiB)
        conn.free_slot(2 * MiB)
        assert (conn.inflight_count, conn.request_bytes) == (0, 0)

    asyncio.run(_with_connection(ClientLimits(max_request_bytes=3 * MiB), body))


def test_a_request_over_the_byte_budget_is_taken_alone() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(100)
        big = asyncio.ensure_future(conn.take_slot(5 * MiB))
        await _turns()
        assert not big.done()  # not beside another request
        conn.free_slot(100)
        await _turns()
        assert big.done() and big.exception() is None  # but alone, or it could never be answered
        assert conn.request_bytes == 5 * MiB

    asyncio.run(_with_connection(ClientLimits(max_request_bytes=MiB), body))


def test_the_count_bounds_small_requests() -> None:
    async def body(conn: _ClientConnection) -> None:
        for _ in range(4):
            await conn.take_slot(10)
        fifth = asyncio.ensure_future(conn.take_slot(10))
        await _turns()
        assert not fifth.done()
        conn.free_slot(10)
        await _turns()
        assert fifth.done() and conn.inflight_count == 4

    asyncio.run(_with_connection(ClientLimits(max_inflight=4), body))


def test_closing_wakes_a_waiter_and_returns_its_slot() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(MiB)
        waiter = asyncio.ensure_future(conn.take_slot(MiB))
        await _turns()
        assert not waiter.done()
        conn.close()
        await _turns()
        assert waiter.done() and isinstance(waiter.exception(), _ConnectionClosing)
        assert (conn.inflight_count, conn.request_bytes) == (1, MiB)  # only the request it holds
        conn.free_slot(MiB)
        await asyncio.wait_for(conn.inflight.acquire(), 1)  # every count slot came back
        assert conn.inflight._value == 1

    asyncio.run(_with_connection(ClientLimits(max_inflight=2, max_request_bytes=MiB), body))


def test_a_waiter_cancelled_gives_its_count_slot_back() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(MiB)
        waiter = asyncio.ensure_future(conn.take_slot(MiB))
        await _turns()
        waiter.cancel()
        await _turns()
        assert waiter.cancelled()
        assert (conn.inflight_count, conn.request_bytes) == (1, MiB)
        assert conn.inflight._value == 1  # of 2: only the request it holds took one

    asyncio.run(_with_connection(ClientLimits(max_inflight=2, max_request_bytes=MiB), body))
