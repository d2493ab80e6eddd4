"""docker-compose.yml and the Dockerfile cannot rot: their node commands must run a working cluster.

There is no Docker engine here, so each compose service's command is run as a local process, with
the service hostnames rewritten to 127.0.0.1, the shared in-container ports rewritten to distinct
free ports, and /data to a per-service tmp dir.  PyYAML is not a dependency: the compose file keeps
a deliberately simple shape (see its header), read by the strict little parser below.

Both kinds of client are played too.  A published port is a forwarder on a free port of
127.0.0.1 (as docker's proxy is), and a node's advertised host address names it.  A client
"inside the compose network" is a child process whose resolver maps the service names to
127.0.0.1 (compose's DNS); the test process itself resolves no service name, as the host cannot.
tests/cluster/test_compose_engine.py runs the same file in a real engine when there is one.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raftkv.cli import build_parser
from raftkv.client.aio import AsyncClient
from raftkv.client.rpc import call
from raftkv.client.sync import Client
from raftkv.cluster.launcher import wait_ready
from raftkv.errors import Unavailable
from raftkv.routing.shardmap import DEFAULT_SHARDS
from raftkv.server.config import NodeAddress, format_hostport, format_nodes, parse_hostport, parse_nodes

from ..helpers import keys_in_each_shard, wait_until
from ..lab.proxy import LinkProxy

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


def host_port(service: dict[str, Any]) -> int:
    """The host port a service publishes its client port on (``"127.0.0.1:HOST:CONTAINER"``)."""
    return int(service["ports"][0].split(":")[-2])


def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} once in {argv}"
    return argv[argv.index(name) + 1]


def flags(argv: list[str], name: str) -> list[str]:
    """Every value of a repeatable flag, in order."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


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
        # on loopback only: the cluster has no secret, token or TLS (docs/operations.md)
        assert svc["ports"] == [f"127.0.0.1:740{i}:{CLIENT_PORT}"]
        # clients inside the compose network reach it by name, clients on the host at its published
        # port: one list per node, in the same order on every node (position = network)
        assert flags(argv, "--advertise-client") == [f"{name}:{CLIENT_PORT}", f"127.0.0.1:740{i}"]
        assert svc["volumes"] == [f"{name}-data:/data"]
        assert svc["restart"] == "unless-stopped"
        assert svc["build"] == "."
        # the real CLI accepts the command (flags renamed in raftkv/cli.py would break compose)
        args = build_parser().parse_args(argv)
        assert (args.command, args.id, args.bind) == ("node", name, "0.0.0.0")
        assert args.advertise_client == flags(argv, "--advertise-client")
    assert len(node_specs) == 1, "all services must agree on the node list"
    assert set(compose["volumes"]) == {f"{s}-data" for s in SERVICES}


def test_dockerfile_builds_the_raftkv_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert re.search(r"^RUN pip install ", text, re.M)
    assert re.search(r'^ENTRYPOINT \["raftkv"\]\s*$', text, re.M)
    assert re.search(rf"^EXPOSE {CLIENT_PORT} {PEER_PORT}\s*$", text, re.M)


def localize(argv: list[str], ports: dict[tuple[str, int], int], data_dir: Path,
             published: dict[int, int] | None = None) -> list[str]:
    """A compose command as it can run here: hosts -> 127.0.0.1, ports -> ``ports``, /data -> ``data_dir``.

    Advertised client addresses keep their host: a service name keeps its name with its port
    mapped by ``ports`` (only a client that resolves it as compose does can use it), and
    ``127.0.0.1:<published port>`` becomes ``127.0.0.1:<published[port]>``, the forwarder
    standing in for that published port.
    """
    out = list(argv)
    out[out.index("--data-dir") + 1] = str(data_dir)
    out[out.index("--bind") + 1] = "127.0.0.1"
    nodes = [NodeAddress(n.id, ("127.0.0.1", ports[n.client]), ("127.0.0.1", ports[n.peer]))
             for n in parse_nodes(flag(argv, "--nodes"))]
    out[out.index("--nodes") + 1] = format_nodes(nodes)
    for i, a in enumerate(argv):
        if a == "--advertise-client":
            host, port = parse_hostport(argv[i + 1])
            mapped = (published or {})[port] if host == "127.0.0.1" else ports[(host, port)]
            out[i + 1] = format_hostport((host, mapped))
    return out


# What runs "inside the compose network": the service names resolve to 127.0.0.1, as compose's DNS
# resolves them to the containers; everything else resolves as usual.
IN_NETWORK_CLIENT = """
import json, socket, sys
names, real = set(sys.argv[2].split(",")), socket.getaddrinfo
def compose_dns(host, *args, **kw):
    return real("127.0.0.1" if host in names else host, *args, **kw)
socket.getaddrinfo = compose_dns
from raftkv import AsyncClient
import asyncio
async def main():
    async with AsyncClient(sys.argv[1], timeout=20) as db:
        await db.put(777, b"from inside")
        assert await db.get(777) == b"from inside"
        statuses = {nid: (await db.node_status(a))["node"] for nid, a in db.node_addresses().items()}
        print(json.dumps({"addresses": db.node_addresses(), "statuses": statuses}))
asyncio.run(main())
"""


async def host_client_session(seed: str, keys: list[int]) -> dict[str, Any]:
    """What a client on the host, given one published seed, can do: write and read ``keys`` (spread
    over every shard) and ask every node for its status at the address it chose."""
    async with AsyncClient(seed, timeout=20) as db:
        for k in keys:
            await db.put(k, f"v{k}".encode())
        values = {k: await db.get(k) for k in keys}
        addresses = db.node_addresses()
        statuses = {nid: (await db.node_status(a))["node"] for nid, a in addresses.items()}
    return {"values": values, "addresses": addresses, "statuses": statuses}


def test_compose_commands_run_a_working_cluster(compose: dict[str, Any], tmp_path: Path,
                                                ports: Callable[[int], list[int]],
                                                spawn: Callable[..., Any], request: pytest.FixtureRequest) -> None:
    services = compose["services"]
    # in compose every node has its own network namespace; here they share one, so each
    # (service, in-container port) pair gets its own free port
    endpoints = sorted({addr for n in parse_nodes(flag(services["n1"]["command"], "--nodes"))
                        for addr in (n.client, n.peer)})
    mapping = dict(zip(endpoints, ports(len(endpoints)), strict=True))
    client_addrs = {name: format_hostport(("127.0.0.1", mapping[(name, CLIENT_PORT)])) for name in services}
    # each service's published host port -> a free port, and a forwarder there to its client port
    published = {host_port(svc): mapping[(name, CLIENT_PORT)] for name, svc in services.items()}
    host_ports = dict(zip(published, ports(len(published)), strict=True))
    forwarders = {hp: LinkProxy(("127.0.0.1", target), port=host_ports[hp]) for hp, target in published.items()}
    request.addfinalizer(lambda: [f.close() for f in forwarders.values()])

    procs = {}
    for name, svc in services.items():
        data_dir = tmp_path / name  # the service's named volume
        data_dir.mkdir()
        argv = localize(svc["command"], mapping, data_dir, host_ports)
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
        assert len(shard_map["shards"]) == DEFAULT_SHARDS  # compose relies on the default --shards
        assert set(reply["leaders"]) == {s["id"] for s in shard_map["shards"]} | {"meta"}
        assert set(leaders) == set(reply["leaders"])

    # every node's record comes to carry what it advertises (its heartbeats bring it to the meta leader)
    published_addrs = {name: f"127.0.0.1:{host_ports[host_port(svc)]}" for name, svc in services.items()}
    in_network = {name: f"{name}:{mapping[(name, CLIENT_PORT)]}" for name in services}
    advertised = {name: [in_network[name], published_addrs[name]] for name in services}
    wait_until(lambda: all(call(a, "map", timeout=5.0).get("clients") == advertised for a in client_addrs.values()),
               60.0, "every node to serve every node's advertised client addresses")

    # a client on the host, given ONE published port, reaches every node through its published port
    # (the service names do not resolve here, as on a real docker host; where one happens to, the
    # client must still prefer the published ports)
    keys = keys_in_each_shard()  # compose starts the default shards
    seen = asyncio.run(host_client_session(published_addrs["n1"], keys))
    assert seen["values"] == {k: f"v{k}".encode() for k in keys}
    assert seen["addresses"] == published_addrs
    assert seen["statuses"] == {name: name for name in SERVICES}  # each address leads to its own node
    assert all(f.connections > 0 for f in forwarders.values())

    # a client inside the compose network, given one service name, uses the service names
    out = subprocess.run([sys.executable, "-c", IN_NETWORK_CLIENT, in_network["n2"], ",".join(SERVICES)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    inside = json.loads(out.stdout)
    assert inside == {"addresses": in_network, "statuses": {name: name for name in SERVICES}}
    with Client(published_addrs["n3"]) as db:
        assert db.get(777) == b"from inside"  # one cluster, whichever way it is reached
    for name, proc in procs.items():
        assert proc.poll() is None, f"{name} exited"


@pytest.mark.timeout(30)
def test_a_cleanup_that_fails_after_the_engine_test_failed_names_both_failures() -> None:
    """The engine test's cleanup (``down -v``) timing out after the test failed must not hide why
    it failed: the error raised names both (no engine needed: a stand-in whose commands time out)."""
    from .test_compose_engine import take_down

    class TimingOut:
        transcript = ["$ down -v --remove-orphans: timed out after 300 s"]

        def run(self, *args: str, **kw: object) -> str:
            raise AssertionError(f"compose {' '.join(args)} timed out")

    original = AssertionError("the cluster lost a write")
    with pytest.raises(AssertionError) as caught:
        take_down(TimingOut(), original)  # type: ignore[arg-type]
    assert "the cluster lost a write" in str(caught.value)
    assert "compose down -v --remove-orphans timed out" in str(caught.value)
    assert caught.value.__cause__ is original
    # without an earlier failure the cleanup's own is raised as it is
    with pytest.raises(AssertionError, match="^compose down -v --remove-orphans timed out$"):
        take_down(TimingOut())  # type: ignore[arg-type]
