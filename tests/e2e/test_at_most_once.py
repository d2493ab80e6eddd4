"""At-most-once writes over the real wire: a retried request (same session number) changes nothing."""

import pytest

from raftkv import Client
from raftkv.client import rpc
from raftkv.errors import InvalidArgument, OutcomeUnknown

pytestmark = pytest.mark.timeout(120)


def _send_to_leader(cluster, shard_id: str, op: str, **fields):
    """One request at the shard's leader, as a client's attempt (and its retry) would send it."""
    address = cluster.address(cluster.leader_of(shard_id))
    return rpc.call(address, op, timeout=10.0, shard=shard_id, **fields)


def test_a_retried_put_or_delete_is_applied_once(cluster):
    session_id = b"e2e-session-0001"
    with Client(cluster.seeds) as db:
        shard = db.shard_map().shard_for_key(77).id
        first = {"pairs": [[77, b"old"]], "session": [session_id, 1, 1]}
        assert _send_to_leader(cluster, shard, "put", **first) == 1
        db.put(77, b"new")  # acknowledged after the first attempt, before its retry
        assert _send_to_leader(cluster, shard, "put", **first) == 1  # the retry: same reply ...
        assert db.get(77) == b"new"  # ... and no effect

        delete = {"keys": [77], "session": [session_id, 2, 1]}
        assert _send_to_leader(cluster, shard, "delete", **delete) == 1
        db.put(77, b"after the delete")
        assert _send_to_leader(cluster, shard, "delete", **delete) == 1
        assert db.get(77) == b"after the delete"


def test_a_write_older_than_its_session_remembers_has_an_unknown_outcome(cluster):
    """A copy below the client's low-water mark, never seen: not applied, and not called a failure
    either (an earlier copy might have been applied and forgotten), nor retried."""
    session_id = b"e2e-session-0003"
    with Client(cluster.seeds) as db:
        shard = db.shard_map().shard_for_key(88).id
        _send_to_leader(cluster, shard, "put", pairs=[[88, b"current"]], session=[session_id, 9, 9])
        with pytest.raises(OutcomeUnknown):
            _send_to_leader(cluster, shard, "put", pairs=[[88, b"late copy"]], session=[session_id, 4, 4])
        assert db.get(88) == b"current"


def test_malformed_sessions_are_refused_at_the_door(cluster):
    with Client(cluster.seeds) as db:
        shard = db.shard_map().shard_for_key(5).id
        for bad in ([b"e2e-session-0002", 0, 0], [b"id", 1, 1], [b"e2e-session-0002", 1, 2], "x",
                    [b"e2e-session-0002", 2**63, 1]):
            with pytest.raises(InvalidArgument, match="session"):
                _send_to_leader(cluster, shard, "put", pairs=[[5, b"v"]], session=bad)
        assert db.get(5) is None
