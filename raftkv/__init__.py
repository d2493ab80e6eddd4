"""raftkv: a durable, Raft-replicated, range-sharded key-value store for uint64 keys.

>>> from raftkv import Client                      # doctest: +SKIP
>>> with Client("127.0.0.1:7401") as db:
...     db.put(42, b"reading")
...     db.get(42)
b'reading'
"""

from . import errors
from .client.aio import AsyncClient
from .client.sync import Client
from .errors import InvalidArgument, InvalidKey, InvalidValue, NotLeader, RaftKVError, Timeout, Unavailable

__all__ = ["Client", "AsyncClient", "errors", "RaftKVError", "InvalidArgument", "InvalidKey", "InvalidValue",
           "Unavailable", "NotLeader", "Timeout"]
