"""The Python client: :class:`Client` (sync, thread-safe) and :class:`AsyncClient` (asyncio).

Names load on first use (PEP 562): a node process imports ``raftkv.client.rpc`` and must not
pay for the client's event loop machinery on the way.
"""

from __future__ import annotations

from .. import lazy

_WHERE = {
    "AsyncClient": "aio", "AsyncQueryResult": "aio",
    "Client": "sync", "QueryResult": "sync",
    "bind": "params", "literal": "params", "placeholders": "params",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy.exports(__name__, _WHERE, globals())
