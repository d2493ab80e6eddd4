"""The pure parts of client-port security: tokens, credentials, loopback checks, launcher settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv import errors
from raftkv.client import rpc
from raftkv.cluster import launcher
from raftkv.errors import InvalidArgument
from raftkv.server.config import (
    Credentials,
    NodeAddress,
    NodeConfig,
    check_token,
    is_loopback,
    read_token_file,
)


def test_token_file_is_read_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret-token\n")
    assert read_token_file(path) == "s3cret-token"


@pytest.mark.parametrize("content", ["", "\n\n", "two\nlines"], ids=["empty", "blank", "control-char"])
def test_unusable_token_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(InvalidArgument):
        read_token_file(path)


def test_missing_token_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="nope"):
        read_token_file(tmp_path / "nope")


@pytest.mark.parametrize("token", [None, 5, "", "x" * 5000, "a\x00b"])
def test_check_token_refuses(token: object) -> None:
    with pytest.raises(InvalidArgument):
        check_token(token)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("10.1.2.3", False), ("::", False), ("db.example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_credentials() -> None:
    assert Credentials().hello() is None and Credentials().ssl_context() is None
    assert Credentials(token="t").hello() == {"op": "hello", "token": "t"}
    assert Credentials(tls_ca=None, tls=True).ssl_context() is not None  # the system's CAs
    assert Credentials(tls_ca="/some/ca.pem").tls  # a CA means TLS
    with pytest.raises(InvalidArgument):
        Credentials(token="")


def test_credentials_with_an_unreadable_ca_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="CA file"):
        Credentials(tls_ca=str(tmp_path / "missing.pem")).ssl_context()


def _config(**kw: object) -> NodeConfig:
    return NodeConfig("n1", "/nonexistent", [NodeAddress("n1", ("127.0.0.1", 1), ("127.0.0.1", 2))], **kw)


def test_node_config_security_options() -> None:
    assert _config().credentials() == Credentials()
    creds = _config(tls_cert="c.pem", tls_key="k.pem", tls_ca="ca.pem", client_token="t").credentials()
    assert creds == Credentials(token="t", tls=True, tls_ca="ca.pem")
    with pytest.raises(InvalidArgument, match="go together"):
        _config(tls_cert="c.pem")
    with pytest.raises(InvalidArgument, match="--tls-ca needs"):
        _config(tls_ca="ca.pem")
    with pytest.raises(InvalidArgument):
        _config(client_token="")


def test_unauthenticated_crosses_the_wire() -> None:
    exc = errors.from_wire(errors.to_wire(errors.Unauthenticated("wrong client token")))
    assert isinstance(exc, errors.Unauthenticated) and exc.code == "unauthenticated"
    assert not exc.retryable and not isinstance(exc, errors.Unavailable)


def test_launcher_security_settings(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem", "token"):
        (tmp_path / name).write_text("x")
    checked = launcher.check_security({"tls_cert": str(tmp_path / "c.pem"), "tls_key": str(tmp_path / "k.pem"),
                                       "client_token_file": str(tmp_path / "token")})
    assert checked["tls_cert"] == str(tmp_path / "c.pem")
    with pytest.raises(InvalidArgument, match="unknown"):
        launcher.check_security({"tls_certificate": str(tmp_path / "c.pem")})
    with pytest.raises(InvalidArgument, match="no such file"):
        launcher.check_security({"client_token_file": str(tmp_path / "missing")})
    with pytest.raises(InvalidArgument, match="go together"):
        launcher.check_security({"tls_cert": str(tmp_path / "c.pem")})


def test_a_local_cluster_with_fewer_cores_than_nodes_does_not_stripe_tails() -> None:
    settings, why = launcher.first_settings(3, 2, None)
    assert settings == {"stripe_writes_per_s": 0} and "3 nodes share 2 cores" in why
    assert launcher.first_settings(6, 1, {"split_bytes": 1 << 20}) == (
        {"split_bytes": 1 << 20, "stripe_writes_per_s": 0}, "6 nodes share 1 core here: hot tails will not be "
        "striped (stripe_writes_per_s 0), since stripes would only share the same cores; "
        "--stripe-writes-per-s N turns it on")
    # the caller's value stands, without a word; enough cores: nothing added
    assert launcher.first_settings(3, 2, {"stripe_writes_per_s": 1000}) == ({"stripe_writes_per_s": 1000}, None)
    assert launcher.first_settings(3, 3, None) == ({}, None)
    assert launcher.first_settings(3, 16, {"dead_after": 9}) == ({"dead_after": 9}, None)
    assert launcher.usable_cores() >= 1


@pytest.fixture
def clean_rpc_credentials() -> Iterator[None]:
    saved = dict(rpc._BY_ADDRESS), rpc._DEFAULT
    yield
    rpc._BY_ADDRESS.clear()
    rpc._BY_ADDRESS.update(saved[0])
    rpc.set_default_credentials(saved[1])


def test_rpc_credentials_by_address_then_default(clean_rpc_credentials: None) -> None:
    mine, default = Credentials(token="mine"), Credentials(token="default")
    rpc.remember_credentials(["127.0.0.1:9"], mine)
    rpc.set_default_credentials(default)
    assert rpc.credentials_for("127.0.0.1:9") == mine
    assert rpc.credentials_for("127.0.0.1:10") == default
