"""Fixtures for cluster tests: fresh cluster directories and process cleanup that survives failures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from raftkv.cluster import launcher

from ..helpers import signal_ours


def kill_processes_mentioning(path: Path) -> list[int]:
    """SIGKILL every process whose command line mentions ``path``; return their PIDs.

    Test directories are unique tmp paths, so this only ever hits processes a test started,
    including ones whose PID file is gone or was never written.
    """
    # the separator keeps .../test_a0 from matching .../test_a01
    victims = signal_ours(psutil.pids(), os.path.realpath(path) + os.sep)
    psutil.wait_procs([p for p in map(_process, victims) if p is not None], timeout=10)
    return victims


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def cleanup_cluster(data_dir: Path) -> None:
    """Stop the launcher's cluster in ``data_dir`` and kill anything left; never raises."""
    if data_dir.exists():
        with contextlib.suppress(Exception):
            launcher.stop(data_dir, timeout=5.0)
        kill_processes_mentioning(data_dir)


@pytest.fixture
def ports() -> Callable[[int], list[int]]:
    """``ports(n)``: n distinct free ports on 127.0.0.1."""
    return launcher.free_ports


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A not-yet-existing cluster directory, whose processes are all killed at teardown."""
    data_dir = tmp_path / "cluster"
    try:
        yield data_dir
    finally:
        cleanup_cluster(data_dir)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """``spawn(argv, log=path)``: a detached child process, SIGTERMed (then SIGKILLed) at teardown."""
    procs: list[subprocess.Popen] = []

    def run(argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        procs.append(proc)
        return proc

    try:
        yield run
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        kill_processes_mentioning(tmp_path)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterInfo]:
    """One running 3-node cluster for a module's read-only tests (a start costs seconds)."""
    data_dir = tmp_path_factory.mktemp("shared") / "cluster"
    try:
        yield launcher.start(data_dir, nodes=3, wait=60.0)
    finally:
        cleanup_cluster(data_dir)
