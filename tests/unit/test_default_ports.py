"""The ports a new local cluster prefers, and when it gives them up (no sockets: ``is_free`` is a set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.cluster import launcher
from raftkv.errors import InvalidArgument

pytestmark = pytest.mark.timeout(30)


def test_the_default_layout_is_the_readmes() -> None:
    assert launcher.default_ports(3) == [7401, 7402, 7403, 7501, 7502, 7503]
    assert launcher.default_ports(1) == [7401, 7501]
    # client ports must not run into the peer ports: a bigger cluster has no default layout
    assert launcher.default_ports(100) is not None
    assert launcher.default_ports(101) is None
    assert launcher.default_ports(0) is None


def test_all_free_means_the_wanted_ports() -> None:
    wanted = [7401, 7402, 7403, 7501, 7502, 7503]
    assert launcher.choose_ports(wanted, lambda p: True) == (wanted, [])


def test_any_taken_means_none_and_names_every_taken_one() -> None:
    wanted = [7401, 7402, 7403, 7501, 7502, 7503]
    taken = {7402, 7503}
    assert launcher.choose_ports(wanted, lambda p: p not in taken) == (None, [7402, 7503])
    assert launcher.choose_ports(wanted, lambda p: False) == (None, wanted)


def test_every_port_is_asked_about_once() -> None:
    asked: list[int] = []

    def is_free(port: int) -> bool:
        asked.append(port)
        return port != 7401  # the first one taken: the others are still asked, for the message

    assert launcher.choose_ports([7401, 7501], is_free) == (None, [7401])
    assert asked == [7401, 7501]


@pytest.mark.parametrize("wanted", [[7401, 7401], [0, 7501], [7401, 65536], [7401, "7501"]])
def test_malformed_wishes_are_refused_before_anything_is_probed(wanted: list) -> None:
    def is_free(port: int) -> bool:
        raise AssertionError("probed")

    with pytest.raises(InvalidArgument):
        launcher.choose_ports(wanted, is_free)


def test_one_claim_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a file lock, not a socket: two launchers must not both find the ports free before either binds them
    monkeypatch.setattr(launcher._PortClaim, "PATH", str(tmp_path / "claim.lock"))
    first, second = launcher._PortClaim(), launcher._PortClaim()
    assert first.acquire(timeout=5.0) and first.held
    assert not second.acquire(timeout=0.0) and not second.held
    first.release()
    first.release()  # idempotent
    assert second.acquire(timeout=5.0)
    second.release()


def test_shell_and_cluster_commands_share_the_default_data_dir() -> None:
    from shell.cli import DEFAULT_DATA_DIR

    assert launcher.DEFAULT_DATA_DIR == DEFAULT_DATA_DIR == "./raftkv-data"


def test_messages_shorten_runs_of_ports() -> None:
    assert launcher._port_runs([7401, 7402, 7403, 7501, 7502, 7503]) == "7401-7403, 7501-7503"
    assert launcher._port_runs([7402, 7501, 7502]) == "7402, 7501, 7502"
