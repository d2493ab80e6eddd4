"""A container engine for the compose test (tests/cluster/test_compose_engine.py): found, or made.

:func:`find_engine` looks, quickly, for an engine that can run docker-compose.yml:

* **docker** with a daemon that answers ``docker info``, and ``docker compose`` or ``docker-compose``;
* **podman** (with ``docker-compose`` 1.x talking to ``podman system service``, which the test starts
  itself and stops by PID), configured by a private ``CONTAINERS_CONF`` file that this module
  writes, so that the system's configuration stays as it is.  This is the recipe of the shared
  note on container engines: ``runc`` (crun fails on hybrid cgroups), ``cgroupfs``, file events,
  and no default ulimits (setting RLIMIT_NOFILE is not permitted in these sandboxes).

It answers with an :class:`Engine` or with the reason there is none, which the test skips with.
An engine is only usable with the Dockerfile's base image, ``python:3.11-slim``: docker pulls it,
but where no registry of images can be reached (as here) it must already be there.

``python -m tests.cluster.engine base-image`` makes a stand-in for it from Debian's own packages,
as root: ``debootstrap`` a minimal bookworm with python3, import it into podman, and build on it a
small image that puts ``python``/``pip`` on PATH, lets pip install (Debian marks its Python
"externally managed") and trusts the host's CA bundle (pip must verify its index).  It is tagged
``docker.io/library/python:3.11-slim`` locally, so the project's Dockerfile builds unchanged.
Debian bookworm's python3 is 3.11, as the real image's is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BASE_IMAGE = "docker.io/library/python:3.11-slim"
STANDIN_ROOT_IMAGE = "localhost/debian-py311:bookworm"
CONTAINERS_CONF = """\
# written by tests/cluster/engine.py: podman as it runs in these sandboxes
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
PROBE_SECONDS = 20.0


@dataclass
class Engine:
    """How to run compose: ``compose`` is the argv prefix, ``env`` the environment to run it in.

    ``service`` is set for podman: the argv of the API service that must run while compose does
    (the caller starts it and stops it), and ``socket`` its path.
    """

    kind: str
    compose: list[str]
    env: dict[str, str]
    exec_prefix: list[str]  # `docker exec` / `podman exec`, for what compose 1.x cannot do
    service: list[str] | None = None
    socket: Path | None = None
    notes: list[str] = field(default_factory=list)


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = PROBE_SECONDS) -> tuple[int, str]:
    """``argv``'s exit status and output; (127, why) if it cannot run or outlasts ``timeout``."""
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return out.returncode, (out.stdout + out.stderr).strip()


def podman_env(scratch: Path) -> dict[str, str]:
    """The environment podman runs in: the private configuration file, written into ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    conf = scratch / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def _docker_engine() -> Engine | str:
    if shutil.which("docker") is None:
        return "no docker command"
    code, out = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=10)
    if code != 0:
        return f"docker has no daemon ({out.splitlines()[-1] if out else code})"
    env = dict(os.environ)
    if _run(["docker", "compose", "version"], timeout=10)[0] == 0:
        compose = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        compose = ["docker-compose"]
    else:
        return "docker has no compose (neither `docker compose` nor docker-compose)"
    return Engine("docker", compose, env, ["docker", "exec"])


def _podman_engine(scratch: Path) -> Engine | str:
    if shutil.which("podman") is None:
        return "no podman command"
    if shutil.which("docker-compose") is None:
        return "podman without docker-compose"
    env = podman_env(scratch)
    code, out = _run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=env)
    if code != 0:
        return f"podman does not work here: {out.splitlines()[-1] if out else code}"
    if _run(["podman", "image", "exists", BASE_IMAGE], env=env)[0] != 0:
        return (f"podman has no {BASE_IMAGE} image and no registry of images can be assumed "
                "(make a stand-in: python -m tests.cluster.engine base-image)")
    sock = scratch / "podman.sock"
    # compose 1.x builds through the API, not a docker CLI (which would look for buildx)
    env.update({"DOCKER_HOST": f"unix://{sock}", "COMPOSE_DOCKER_CLI_BUILD": "0", "DOCKER_BUILDKIT": "0"})
    return Engine("podman", ["docker-compose"], env, ["podman", "exec"],
                  service=["podman", "system", "service", "--time=0", f"unix://{sock}"], socket=sock)


def find_engine(scratch: Path) -> Engine | str:
    """An engine that can run the compose file, or why there is none (both kinds' reasons)."""
    docker = _docker_engine()
    if isinstance(docker, Engine):
        return docker
    podman = _podman_engine(scratch)
    if isinstance(podman, Engine):
        return podman
    return f"no container engine: {docker}; {podman}"


STANDIN_DOCKERFILE = f"""\
FROM {STANDIN_ROOT_IMAGE}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \\
    && ln -sf /usr/bin/python3 /usr/local/bin/python \\
    && ln -sf /usr/bin/pip3 /usr/local/bin/pip
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
"""


def make_base_image(scratch: Path) -> int:
    """Build the stand-in for ``python:3.11-slim`` into podman (see the module docstring)."""
    env = podman_env(scratch)
    if _run(["podman", "image", "exists", STANDIN_ROOT_IMAGE], env=env)[0] != 0:
        with tempfile.TemporaryDirectory(dir=scratch) as root:
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip",
                            "bookworm", root], check=True)
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["podman", "import", "-", STANDIN_ROOT_IMAGE], stdin=tar.stdout, env=env, check=True)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise SystemExit("tar of the debootstrapped root failed")
    context = scratch / "standin"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(STANDIN_DOCKERFILE)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context / "ca-certificates.crt")
    subprocess.run(["podman", "build", "-t", BASE_IMAGE, str(context)], env=env, check=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``find`` says which engine the test would use; ``base-image`` makes the podman stand-in."""
    p = argparse.ArgumentParser(prog="python -m tests.cluster.engine")
    p.add_argument("what", choices=("find", "base-image"))
    p.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "raftkv-engine"),
                   help="where podman's private configuration (and the stand-in's build) go")
    args = p.parse_args(argv)
    scratch = Path(args.scratch)
    if args.what == "base-image":
        return make_base_image(scratch)
    found = find_engine(scratch)
    print(found if isinstance(found, str) else f"{found.kind}: {' '.join(found.compose)}")
    return 0 if isinstance(found, Engine) else 1


if __name__ == "__main__":
    sys.exit(main())
