"""docker-compose.yml and the Dockerfile cannot rot: their node commands must run a working cluster.

There is no Docker engine here, so each compose service's command is run as a local process, with
the service hostnames rewritten to 127.0.0.1, the shared in-container ports rewritten to distinct
free ports, and /data to a per-service tmp dir.  PyYAML is not a dependency: the compose file keeps
a deliberately simple shape (see its header), read by the strict little parser below.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raftkv.cli import build_parser
from raftkv.client.rpc import call
from raftkv.cluster.launcher import wait_ready
from raftkv.errors import Unavailable
from raftkv.server.config import NodeAddress, format_hostport, format_nodes, parse_nodes

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["n1", "n2", "n3"]
CLIENT_PORT, PEER_PORT = 7400, 7500  # inside the containers


def parse_compose(text: str) -> dict[str, Any]:
    """The subset of YAML docker-compose.yml is written in; anything else is an error, not a guess.

    Top-level keys at column 0; under ``services:`` a name at indent 2 and its ``key: value`` lines at
    indent 4, a value being JSON (flow lists/maps) or a plain scalar; under ``volumes:`` bare names.
    """
    doc: dict[str, Any] = {}
    section: str | None = None
    service: dict[str, Any] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"docker-compose.yml:{lineno}: {raw!r}"
        if m := re.fullmatch(r"([a-z_]+):", line):
            section = m[1]
            doc[section] = {}
        elif m := re.fullmatch(r" {2}([A-Za-z0-9_.-]+):", line):
            assert section in ("services", "volumes"), where
            doc[section][m[1]] = {} if section == "services" else None
            service = doc[section][m[1]]
        elif m := re.fullmatch(r" {4}([a-z_]+): (.+)", line):
            assert section == "services" and service is not None, where
            value = m[2]
            assert m[1] not in service, f"duplicate key: {where}"
            if value[0] in "[{\"":
                try:
                    service[m[1]] = json.loads(value)
                except ValueError as exc:
                    pytest.fail(f"not JSON ({exc}): {where}")
            else:
                assert re.fullmatch(r"[A-Za-z0-9_./:-]+", value), f"unexpected scalar: {where}"
                service[m[1]] = value
        else:
            pytest.fail(f"outside the supported YAML subset: {where}")
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_compose((ROOT / "docker-compose.yml").read_text())


def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} once in {argv}"
    return argv[argv.index(name) + 1]


def test_compose_declares_three_persistent_published_nodes(compose: dict[str, Any]) -> None:
    assert set(compose) == {"services", "volumes"}
    assert list(compose["services"]) == SERVICES
    node_specs = set()
    for i, name in enumerate(SERVICES, 1):
        svc = compose["services"][name]
        argv = svc["command"]
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert argv[0] == "node"
        assert flag(argv, "--id") == name
        assert flag(argv, "--data-dir") == "/data"
        assert flag(argv, "--bind") == "0.0.0.0"
        nodes = parse_nodes(flag(argv, "--nodes"))
        # every service is reachable by its name, on the ports the image exposes and compose publishes
        assert nodes == [NodeAddress(s, (s, CLIENT_PORT), (s, PEER_PORT)) for s in SERVICES]
        node_specs.add(flag(argv, "--nodes"))
        assert svc["ports"] == [f"740{i}:{CLIENT_PORT}"]
        assert svc["volumes"] == [f"{name}-data:/data"]
        assert svc["restart"] == "unless-stopped"
        assert svc["build"] == "."
        # the real CLI accepts the command (flags renamed in raftkv/cli.py would break compose)
        args = build_parser().parse_args(argv)
        assert (args.command, args.id, args.bind) == ("node", name, "0.0.0.0")
    assert len(node_specs) == 1, "all services must agree on the node list"
    assert set(compose["volumes"]) == {f"{s}-data" for s in SERVICES}


def test_dockerfile_builds_the_raftkv_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert re.search(r"^RUN pip install ", text, re.M)
    assert re.search(r'^ENTRYPOINT \["raftkv"\]\s*$', text, re.M)
    assert re.search(rf"^EXPOSE {CLIENT_PORT} {PEER_PORT}\s*$", text, re.M)


def localize(argv: list[str], ports: dict[tuple[str, int], int], data_dir: Path) -> list[str]:
    """A compose command as it can run here: hosts -> 127.0.0.1, ports -> ``ports``, /data -> ``data_dir``."""
    out = list(argv)
    out[out.index("--data-dir") + 1] = str(data_dir)
    out[out.index("--bind") + 1] = "127.0.0.1"
    nodes = [NodeAddress(n.id, ("127.0.0.1", ports[n.client]), ("127.0.0.1", ports[n.peer]))
             for n in parse_nodes(flag(argv, "--nodes"))]
    out[out.index("--nodes") + 1] = format_nodes(nodes)
    return out


def test_compose_commands_run_a_working_cluster(compose: dict[str, Any], tmp_path: Path,
                                                ports: Callable[[int], list[int]],
                                                spawn: Callable[..., Any]) -> None:
    services = compose["services"]
    # in compose every node has its own network namespace; here they share one, so each
    # (service, in-container port) pair gets its own free port
    endpoints = sorted({addr for n in parse_nodes(flag(services["n1"]["command"], "--nodes"))
                        for addr in (n.client, n.peer)})
    mapping = dict(zip(endpoints, ports(len(endpoints)), strict=True))
    client_addrs = {name: format_hostport(("127.0.0.1", mapping[(name, CLIENT_PORT)])) for name in services}

    procs = {}
    for name, svc in services.items():
        data_dir = tmp_path / name  # the service's named volume
        data_dir.mkdir()
        argv = localize(svc["command"], mapping, data_dir)
        procs[name] = spawn([sys.executable, "-m", "raftkv", *argv], log=tmp_path / f"{name}.log")

    try:
        leaders = wait_ready(list(client_addrs.values()), timeout=60.0)
    except Unavailable:
        logs = {name: (tmp_path / f"{name}.log").read_text()[-2000:] for name in services}
        exits = {name: p.poll() for name, p in procs.items()}
        pytest.fail(f"compose cluster not ready; exit codes {exits}; logs {logs}")
    assert set(leaders.values()) <= set(SERVICES)

    for name, addr in client_addrs.items():
        reply = call(addr, "map", timeout=5.0)
        assert reply["node"] == name
        assert reply["nodes"] == client_addrs
        shard_map = reply["map"]
        assert len(shard_map["shards"]) == 8  # compose relies on the default --shards
        assert set(reply["leaders"]) == {s["id"] for s in shard_map["shards"]} | {"meta"}
        assert set(leaders) == set(reply["leaders"])
    for name, proc in procs.items():
        assert proc.poll() is None, f"{name} exited"
