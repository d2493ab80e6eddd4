"""The client against a real cluster losing nodes, and the shell against nothing at all.

Once the client knows the cluster, a node that refuses is tried around and retried within the
deadline (never a fast failure); without a quorum, the error names the shard left without a
leader and the nodes that do not answer.  The shell says it is connecting while it waits and
reports a refused seed in one line.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.cluster.launcher import free_ports
from raftkv.errors import Unavailable

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
KEY = 12_345


def test_a_refused_node_is_tried_around_and_no_quorum_names_shard_and_nodes(make_cluster) -> None:
    cluster = make_cluster(shards=2)
    ids = [n.id for n in cluster.info.nodes]
    with Client(cluster.seeds) as db, Client(cluster.seeds, timeout=2.0) as short:
        db.put(KEY, b"before")
        assert short.get(KEY) == b"before"  # both clients know the cluster now
        shard = db.shard_map().shard_for_key(KEY).id
        first = cluster.leader_of(shard)

        # The leader goes: the clients' next attempts at it are refused.  A known cluster is not
        # given up on for that: the other replicas are tried until one leads.
        cluster.kill(first)
        db.put(KEY, b"after one kill")
        assert db.get(KEY) == b"after one kill"
        survivor = next(n for n in ids if n != first and n != cluster.leader_of(shard, exclude=first))
        # and a new client skips a dead seed
        with Client(f"{cluster.address(first)},{cluster.address(survivor)}") as fresh:
            assert fresh.get(KEY) == b"after one kill"

        # The new leader goes too: no quorum.  The survivor, a follower, cannot be elected.
        for node in ids:
            if node not in (first, survivor):
                cluster.kill(node)
        with pytest.raises(Unavailable) as caught:
            short.put(KEY, b"no quorum")
        named = ", ".join(f"{n} ({cluster.address(n)})" for n in ids if n != survivor)
        assert caught.value.message == f"shard {shard} has no leader within 2.0 s; nodes not answering: {named}"
        assert caught.value.details["leaderless"] == [shard]

        # Every node gone: still no fast failure for a client that knows the cluster; it gives up
        # at the deadline and names all three.
        cluster.kill(survivor)
        named = ", ".join(f"{n} ({cluster.address(n)})" for n in ids)
        with pytest.raises(Unavailable) as caught:
            short.get(KEY)
        assert caught.value.message == f"shard {shard} has no leader within 2.0 s; nodes not answering: {named}"
    # whereas a client that never knew the cluster fails at once, naming every seed
    with pytest.raises(Unavailable) as caught:
        with Client(cluster.seeds):
            pass
    assert caught.value.message == "cannot reach any seed: " + "; ".join(
        f"{cluster.address(n)} refused the connection" for n in ids)


# --- the shell ------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


def test_the_shell_says_connecting_then_reports_a_refused_seed_in_one_line() -> None:
    port = free_ports(1)[0]
    seeds = f"127.0.0.1:{port}"
    env = {**os.environ, "RAFTKV_HISTORY": "", "PYTHONUNBUFFERED": "1", "TERM": "xterm",
           "PROMPT_TOOLKIT_NO_CPR": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "raftkv", "shell", "--connect", seeds], stdin=slave,
                            stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = ""
    try:
        seen = _read_until(master, "raftkv> ", seen)
        text = _ANSI.sub("", seen)
        assert f"connecting to {seeds} ..." in text, text
        error = (f"ERROR: cannot connect to {seeds}: cannot reach any seed: "
                 f"{seeds} refused the connection")
        assert error + "\r\n" in text, text
        # the connecting line was erased before the error went out
        assert seen.index("\r\x1b[2K") < seen.index("ERROR:")
        os.write(master, b"\x04")  # Ctrl-D at the prompt: quit
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


def _read_until(fd: int, marker: str, seen: str, timeout: float = 30.0) -> str:
    """``seen`` plus what ``fd`` says until ``marker`` appears in it (ANSI codes removed)."""
    deadline = time.monotonic() + timeout
    while marker not in _ANSI.sub("", seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} on the terminal after {timeout}s; tail: {seen[-800:]!r}")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 1 << 16).decode("utf-8", "replace")
            except OSError:  # EIO: the child closed the terminal
                break
    return seen
