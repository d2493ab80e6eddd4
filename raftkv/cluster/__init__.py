"""Run a whole raftkv cluster on one machine: ``raftkv cluster start|status|stop``.

The library API lives in :mod:`raftkv.cluster.launcher`; the commands in
:mod:`raftkv.cluster.cli`.
"""

from __future__ import annotations

from .launcher import (
    ClusterInfo,
    addresses,
    kill_node,
    load,
    start,
    start_node,
    status,
    stop,
    wait_ready,
)

__all__ = ["ClusterInfo", "addresses", "kill_node", "load", "start", "start_node", "status", "stop",
           "wait_ready"]
