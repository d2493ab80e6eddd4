"""docker-compose.yml in a real container engine: the cluster a user gets from `docker compose up`.

Skipped, saying why, unless an engine is found (``tests/cluster/engine.py``: docker with a daemon,
or podman set up as that module describes, with the Dockerfile's base image present).  Where one is,
the project's compose file runs as it is, but for its published host ports: fixed ports (7401..)
may be taken on a shared machine, so a copy of the file publishes on free ports and advertises
those (the only lines that change), under a project name of its own.  Then:

* a client on the host, given ONE published port, writes and reads every shard and reaches each
  node at its published port (the nodes advertise it; the service names do not resolve here);
* a client inside the compose network (run in a container) reaches every node by service name;
* the image's healthcheck command passes in each container (podman runs no healthchecks itself);
* a container killed with SIGKILL: writes go on through the host client;
* ``down`` (volumes kept), then ``up``: every acknowledged write is still there.

Whatever happens, the project is taken down with its volumes (``down -v``), and a podman API
service this test started is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.client.aio import AsyncClient
from raftkv.cluster import launcher

from ..helpers import keys_in_each_shard, wait_until
from . import engine as engines
from .test_compose import SERVICES, host_port, parse_compose

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BUILD_SECONDS = 600.0  # the image build installs the package from PyPI inside the engine
STEP_SECONDS = 180.0  # any other compose command


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> engines.Engine:
    scratch = tmp_path_factory.mktemp("engine")
    got = engines.find_engine(scratch)
    if isinstance(got, str):
        pytest.skip(got)
    return got


def published_copy(text: str, host_ports: dict[int, int], root: Path) -> str:
    """The compose file with each published host port moved to ``host_ports[port]`` (in ``ports``,
    still on 127.0.0.1 only, and in the advertised ``127.0.0.1:port``) and the build context made
    absolute."""
    out = text.replace("build: .", f"build: {json.dumps(str(root))}")
    for old, new in host_ports.items():
        out = out.replace(f'"127.0.0.1:{old}:7400"', f'"127.0.0.1:{new}:7400"')
        out = out.replace(f'"127.0.0.1:{old}"', f'"127.0.0.1:{new}"')
    return out


class Compose:
    """One compose project in the engine: its commands, and what they printed (for failures)."""

    def __init__(self, eng: engines.Engine, file: Path, project: str) -> None:
        self.engine = eng
        self.base = [*eng.compose, "-f", str(file), "-p", project]
        self.transcript: list[str] = []

    def run(self, *args: str, timeout: float = STEP_SECONDS, check: bool = True) -> str:
        argv = [*self.base, *args]
        try:
            out = subprocess.run(argv, env=self.engine.env, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            self.transcript.append(f"$ {' '.join(args)}: timed out after {timeout} s")
            raise AssertionError(f"compose {' '.join(args)} timed out; transcript: {self.tail()}") from exc
        text = (out.stdout + out.stderr).strip()
        self.transcript.append(f"$ {' '.join(args)} -> {out.returncode}\n{text[-2000:]}")
        if check and out.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({out.returncode}): {text[-3000:]}")
        return out.stdout.strip()

    def container(self, service: str) -> str:
        cid = self.run("ps", "-q", service).splitlines()
        assert len(cid) == 1, f"one container for {service}: {cid}"
        return cid[0]

    def exec(self, service: str, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``argv`` in the service's container (the engine's own exec: compose 1.x on podman's API
        cannot attach)."""
        return subprocess.run([*self.engine.exec_prefix, self.container(service), *argv], env=self.engine.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def tail(self) -> str:
        return "\n".join(self.transcript[-6:])


@contextlib.contextmanager
def api_service(eng: engines.Engine) -> Iterator[None]:
    """podman's Docker-compatible API, for compose, while the block runs (nothing for docker)."""
    if eng.service is None:
        yield
        return
    assert eng.socket is not None
    with contextlib.suppress(FileNotFoundError):
        eng.socket.unlink()
    proc = subprocess.Popen(eng.service, env=eng.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: eng.socket.exists() or proc.poll() is not None, 30.0, "podman's API socket")
        assert proc.poll() is None, f"podman system service exited with {proc.returncode}"
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


async def host_session(seed: str, writes: dict[int, bytes], reads: list[int]) -> dict[str, Any]:
    """A host client given one seed: write ``writes``, read ``reads``, and where it reached each node."""
    async with AsyncClient(seed, timeout=30) as db:
        for k, v in writes.items():
            await db.put(k, v)
        values = {k: await db.get(k) for k in reads}
        addresses = db.node_addresses()
        statuses = {}
        for nid, a in addresses.items():
            with contextlib.suppress(Exception):  # a node that is down says nothing
                statuses[nid] = (await db.node_status(a))["node"]
    return {"values": values, "addresses": addresses, "statuses": statuses}


def ready(seed: str) -> dict[str, Any] | None:
    """A host session that wrote nothing and reached every node, or None (not yet)."""
    got = asyncio.run(host_session(seed, {}, []))
    return got if len(got["statuses"]) == len(SERVICES) else None


IN_NETWORK = """
import json
from raftkv import Client
with Client("n2:7400", timeout=30) as db:
    db.put(424242, b"inside")
    print(json.dumps({"value": db.get(424242).decode()}))
"""

IN_NETWORK_ADDRESSES = """
import asyncio, json
from raftkv import AsyncClient
async def main():
    async with AsyncClient("n3:7400", timeout=30) as db:
        await db.get(1)
        print(json.dumps(db.node_addresses()))
asyncio.run(main())
"""


def take_down(compose: Compose, failure: BaseException | None = None) -> str:
    """``down -v`` the project, and say which containers are left (``ps -q``); the transcript is
    printed either way, for a failure's report.  After a ``failure`` of the test, a cleanup that
    fails too (a timed-out ``down -v``) raises one error naming both: it must not hide the first."""
    try:
        compose.run("down", "-v", "--remove-orphans", check=False, timeout=STEP_SECONDS)
        return compose.run("ps", "-q", check=False)
    except AssertionError as cleanup:
        if failure is None:
            raise
        raise AssertionError(f"{failure!r}\n(and then the cleanup failed: {cleanup})") from failure
    finally:
        print("\n".join(compose.transcript), file=sys.stderr)


def test_compose_cluster_in_a_real_engine(found: engines.Engine, tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    services = parse_compose(text)["services"]
    fixed = [host_port(services[s]) for s in SERVICES]
    host_ports = dict(zip(fixed, launcher.free_ports(len(fixed)), strict=True))
    file = tmp_path / "docker-compose.yml"
    file.write_text(published_copy(text, host_ports, ROOT))
    # tests use loopback only: every port of the copy is published on 127.0.0.1
    assert [parse_compose(file.read_text())["services"][s]["ports"] for s in SERVICES] == [
        [f"127.0.0.1:{host_ports[p]}:7400"] for p in fixed]
    published = {s: f"127.0.0.1:{host_ports[p]}" for s, p in zip(SERVICES, fixed, strict=True)}
    project = f"raftkvtest{uuid.uuid4().hex[:8]}"
    keys = keys_in_each_shard()  # two in each initial shard

    with api_service(found):
        compose = Compose(found, file, project)
        try:
            compose.run("build", timeout=BUILD_SECONDS)
            compose.run("up", "-d")
            try:
                first = wait_until(lambda: ready(published["n1"]), 180.0, "the host client to reach every node")
            except AssertionError as exc:
                logs = compose.run("logs", "--tail=30", check=False)
                raise AssertionError(f"{exc}\nlogs:\n{logs[-6000:]}") from None
            # a host client with ONE published seed reaches each node at its published port
            assert first["addresses"] == published
            assert first["statuses"] == {s: s for s in SERVICES}
            data = {k: f"v{k}".encode() for k in keys}
            got = asyncio.run(host_session(published["n1"], data, keys))
            assert got["values"] == data

            # inside the compose network, the service names work
            out = compose.exec("n1", "python", "-c", IN_NETWORK)
            assert out.returncode == 0, out.stderr[-3000:]
            assert json.loads(out.stdout) == {"value": "inside"}
            out = compose.exec("n1", "python", "-c", IN_NETWORK_ADDRESSES)
            assert out.returncode == 0, out.stderr[-3000:]
            assert json.loads(out.stdout) == {s: f"{s}:7400" for s in SERVICES}

            # the image's healthcheck command, as the engine would run it
            for s in SERVICES:
                check = services[s]["healthcheck"]["test"]
                assert check[0] == "CMD"
                out = compose.exec(s, *check[1:])
                assert out.returncode == 0, f"{s} healthcheck: {out.stderr[-2000:]}"

            # kill -9 a container: writes go on (through another node's published port)
            compose.run("kill", "-s", "SIGKILL", "n2")
            more = {k + 1: f"after-kill-{k}".encode() for k in keys}
            got = asyncio.run(host_session(published["n3"], more, list(more)))
            assert got["values"] == more
            data.update(more)
            compose.run("up", "-d", "n2")  # back (its restart policy may have done it already)

            # down (volumes kept) and up: nothing acknowledged is lost
            compose.run("down")
            compose.run("up", "-d")
            wait_until(lambda: ready(published["n2"]), 180.0, "the cluster back after down/up")
            got = asyncio.run(host_session(published["n2"], {}, list(data)))
            assert got["values"] == data
        except BaseException as failure:
            take_down(compose, failure)  # its own failure names this one too
            raise
        else:
            leftover = take_down(compose)
        assert not leftover.strip(), f"containers left after down -v: {leftover}"
        assert not re.search(project, subprocess.run(
            [found.exec_prefix[0], "volume", "ls", "-q"], env=found.env, capture_output=True, text=True,
            timeout=60).stdout), "volumes left after down -v"
