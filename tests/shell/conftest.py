"""Fixtures for the shell's end-to-end tests: a real local cluster and a way to run ``raftkv``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from raftkv.cluster import launcher

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """The environment for ``raftkv`` subprocesses: no history file, the repo importable."""
    env = {**os.environ, "RAFTKV_HISTORY": "", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_cluster(request: pytest.FixtureRequest, data_dir: Path) -> launcher.ClusterInfo:
    """Start a real cluster in ``data_dir``, stopped when the requesting scope ends."""
    request.addfinalizer(lambda: launcher.stop(data_dir) if data_dir.exists() else None)
    return launcher.start(data_dir, wait=60)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> launcher.ClusterInfo:
    """A 3-node cluster shared by one test module."""
    return start_cluster(request, tmp_path_factory.mktemp("shell") / "c")


RunCli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run ``python -m raftkv ARGS`` in a scratch directory; returns the completed process (text)."""

    def run(*args: str, input: str | None = None, timeout: float = 100) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raftkv", *args], input=input, capture_output=True,
                              text=True, timeout=timeout, cwd=tmp_path, env=cli_env(),
                              stdin=None if input is not None else subprocess.DEVNULL)

    return run
