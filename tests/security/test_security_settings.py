"""Security settings: OTP's NATS connection variables, secrets kept out of repr and of provider
environments, and refusals of exposed-but-unauthenticated setups."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

import pytest

from hostcore.config import add_ctl_flags, load_client_config, load_config, load_worker_config
from hostcore.errors import ConfigError
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsconn import NatsEndpoint, read_creds, wait_for_endpoints
from hostcore.natsjwt import format_creds
from hostcore.procutil import free_port
from hostcore.providers.module import provider_env

USER = KeyPair.generate(KeyKind.USER)


def cfg(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return load_config([], env, config_file=tmp_path / "none.json")


def test_nothing_set_means_the_embedded_server(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert c.nats_url == "" and c.rpc.servers == c.ctl.servers == c.prov_rpc.servers == ()
    embedded = c.with_nats_url("nats://127.0.0.1:4999")
    assert {embedded.rpc.url, embedded.ctl.url, embedded.prov_rpc.url} == {"nats://127.0.0.1:4999"}


def test_otp_variables_give_each_connection_its_server_and_credentials(tmp_path: Path) -> None:
    c = cfg(tmp_path, WASMCLOUD_RPC_HOST="10.0.0.1", WASMCLOUD_RPC_PORT="4333", WASMCLOUD_RPC_SEED=USER.seed,
            WASMCLOUD_CTL_HOST="10.0.0.2", WASMCLOUD_CTL_TLS="1", WASMCLOUD_CTL_JWT="e.y.j", WASMCLOUD_CTL_SEED=USER.seed)
    assert c.rpc.servers == ("nats://10.0.0.1:4333",) and c.rpc.seed == USER.seed and not c.rpc.tls
    assert c.ctl.servers == ("tls://10.0.0.2:4222",) and c.ctl.tls and c.ctl.jwt == "e.y.j"
    assert c.prov_rpc.servers == ("nats://127.0.0.1:4222",)  # OTP's default once anything is set
    assert c.nats_url == "tls://10.0.0.2:4222"  # not the embedded server
    kwargs = c.rpc.connect_kwargs()
    assert kwargs["servers"] == ["nats://10.0.0.1:4333"] and kwargs["nkeys_seed_str"] == USER.seed
    ctl = c.ctl.connect_kwargs()
    assert ctl["user_jwt_cb"]() == b"e.y.j" and ctl["tls"] is not None


def test_nats_url_shortcut_and_url_credentials_are_kept_out_of_display(tmp_path: Path) -> None:
    c = cfg(tmp_path, WASMCLOUD_NATS_URL="nats://alice:s3cret-pw@nats.example:4222")
    for ep in (c.rpc, c.ctl, c.prov_rpc):
        assert ep.servers == ("nats://nats.example:4222",) and (ep.user, ep.password) == ("alice", "s3cret-pw")
    assert c.nats_url == "nats://nats.example:4222"
    token = NatsEndpoint.from_url("ctl", "nats://tok3n-value@h:1")
    assert token.token == "tok3n-value" and token.connect_kwargs()["token"] == "tok3n-value"
    assert "s3cret-pw" not in repr(c) and "tok3n-value" not in repr(token)


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    secret = "convention-secret-0123456789"
    c = cfg(tmp_path, WASMCLOUD_RPC_SEED=USER.seed, WASMCLOUD_RPC_JWT="jwt.jwt.jwt", WASMCLOUD_RPC_HOST="h",
            HOSTCORE_CONVENTION_SECRET=secret, HOSTCORE_DASHBOARD_TOKEN="dash-token-xyz",
            WASMCLOUD_CLUSTER_SEED=KeyPair.generate(KeyKind.CLUSTER).seed)
    text = repr(c)
    for value in (USER.seed, "jwt.jwt.jwt", secret, "dash-token-xyz", c.cluster_key.seed, c.host_key.seed):
        assert value not in text
    client = load_client_config(environ={"WASMCLOUD_CTL_SEED": USER.seed, "WASMCLOUD_CLUSTER_SEED": c.cluster_key.seed})
    assert USER.seed not in repr(client) and c.cluster_key.seed not in repr(client)


def test_creds_file_is_read_and_applies_to_roles_without_a_seed(tmp_path: Path) -> None:
    creds = tmp_path / "u.creds"
    creds.write_text(format_creds("head.body.sig", USER.seed))
    assert read_creds(creds) == ("head.body.sig", USER.seed)
    c = cfg(tmp_path, WASMCLOUD_NATS_URL="nats://h:1", HOSTCORE_NATS_CREDS=str(creds),
            WASMCLOUD_PROV_RPC_SEED=USER.seed, WASMCLOUD_PROV_RPC_HOST="h")
    assert c.rpc.creds_file == creds and c.ctl.creds_file == creds and c.prov_rpc.creds_file is None
    assert c.rpc.connect_kwargs()["user_jwt_cb"]() == b"head.body.sig"
    (tmp_path / "bad.creds").write_text("not creds")
    with pytest.raises(ConfigError, match="not a NATS credentials file"):
        cfg(tmp_path, HOSTCORE_NATS_CREDS=str(tmp_path / "bad.creds"), WASMCLOUD_NATS_URL="nats://h:1").rpc.connect_kwargs()
    with pytest.raises(ConfigError, match="no such file"):
        cfg(tmp_path, HOSTCORE_NATS_CA=str(tmp_path / "missing.pem"))


def test_bad_connection_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WASMCLOUD_RPC_PORT"):
        cfg(tmp_path, WASMCLOUD_RPC_PORT="http")
    with pytest.raises(ConfigError, match="WASMCLOUD_CTL_JWT"):
        cfg(tmp_path, WASMCLOUD_CTL_JWT="a.b.c")
    with pytest.raises(ConfigError, match="rpc: the NATS seed is not a valid nkey seed"):
        cfg(tmp_path, WASMCLOUD_RPC_HOST="h", WASMCLOUD_RPC_SEED="SUnope").rpc.connect_kwargs()


def test_exposed_convention_needs_a_secret_or_an_explicit_opt_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOSTCORE_CONVENTION_SECRET"):
        cfg(tmp_path, HOSTCORE_CONVENTION_BIND="10.0.0.5")
    assert cfg(tmp_path, HOSTCORE_CONVENTION_BIND="10.0.0.5", HOSTCORE_CONVENTION_SECRET="x" * 32).network.bind == "10.0.0.5"
    assert cfg(tmp_path, HOSTCORE_CONVENTION_BIND="0.0.0.0", HOSTCORE_CONVENTION_INSECURE="true").network.allow_insecure
    with pytest.raises(ConfigError, match="at least 16"):
        cfg(tmp_path, HOSTCORE_CONVENTION_SECRET="short")
    for bad in ("my-host", "::1"):
        with pytest.raises(ConfigError, match="expected an IPv4 address"):
            cfg(tmp_path, HOSTCORE_CONVENTION_BIND=bad)
    assert cfg(tmp_path).network.bind == "127.0.0.1"


def test_worker_across_machines_needs_a_reachable_bind_address() -> None:
    with pytest.raises(ConfigError, match="cannot reach a worker listening on 127.0.0.1"):
        load_worker_config(["--join", "10.0.0.5:1900"], {})
    with pytest.raises(ConfigError, match="HOSTCORE_CONVENTION_SECRET"):
        load_worker_config(["--join", "10.0.0.5:1900", "--convention-bind", "10.0.0.6"], {})
    worker = load_worker_config(["--join", "10.0.0.5:1900", "--convention-bind", "10.0.0.6"],
                                {"HOSTCORE_CONVENTION_SECRET": "s" * 20})
    assert worker.network.bind == "10.0.0.6" and "s" * 20 not in repr(worker)
    assert load_worker_config(["--join", "127.0.0.1:1900"], {}).network.loopback


def test_dashboard_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOSTCORE_DASHBOARD_TOKEN"):
        cfg(tmp_path, WASMCLOUD_DASHBOARD_HOST="0.0.0.0")
    assert cfg(tmp_path, WASMCLOUD_DASHBOARD_HOST="0.0.0.0", HOSTCORE_DASHBOARD_TOKEN="t").dashboard_host == "0.0.0.0"
    assert cfg(tmp_path, WASMCLOUD_DASHBOARD_HOST="0.0.0.0", WASMCLOUD_DASHBOARD_PORT="0").dashboard_port == 0


def test_providers_do_not_inherit_hostcore_secrets() -> None:
    env = provider_env({"PATH": "/bin", "HOSTCORE_TEST_MARK": "m", "HOSTCORE_CONVENTION_SECRET": "x" * 20,
                        "HOSTCORE_DASHBOARD_TOKEN": "t", "WASMCLOUD_RPC_SEED": USER.seed,
                        "WASMCLOUD_HOST_SEED": "SN…", "WASMCLOUD_CLUSTER_SEED": "SC…"})
    assert env == {"PATH": "/bin", "HOSTCORE_TEST_MARK": "m"}


def test_cli_flags_build_the_control_connection(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    add_ctl_flags(p)
    flags = p.parse_args(["--ctl-host", "10.9.9.9", "--ctl-port", "4300", "--ctl-seed", USER.seed, "--ctl-tls"])
    c = load_client_config(environ={"WASMCLOUD_CTL_HOST": "ignored"}, flags=flags)
    assert c.ctl.servers == ("tls://10.9.9.9:4300",) and c.ctl.seed == USER.seed and c.nats_url == "tls://10.9.9.9:4300"
    env_only = load_client_config(environ={"WASMCLOUD_CTL_HOST": "10.1.1.1", "WASMCLOUD_CTL_PORT": "4444"})
    assert env_only.ctl.servers == ("nats://10.1.1.1:4444",)
    assert load_client_config(nats_url="nats://a:1", environ={"WASMCLOUD_CTL_HOST": "b"}).ctl.servers == ("nats://a:1",)


def test_unreachable_server_is_reported_with_its_reason() -> None:
    stop = threading.Event()
    messages: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.getMessage()} {record.__dict__.get('connection')} {record.__dict__.get('error')}")
            stop.set()

    logger = logging.getLogger("hostcore.natsconn")
    handler = Grab()
    logger.addHandler(handler)
    try:
        assert wait_for_endpoints([NatsEndpoint.from_url("rpc", f"nats://127.0.0.1:{free_port()}")], stop) is False
    finally:
        logger.removeHandler(handler)
    assert len(messages) == 1 and messages[0].startswith("waiting for NATS: connection failed, retrying rpc ")
    assert "Connect call failed" in messages[0] or "refused" in messages[0]
