import json
from pathlib import Path

import pytest

from hostcore.config import load_client_config, load_config
from hostcore.errors import ConfigError
from hostcore.native.nkeys import KeyKind, KeyPair


def test_defaults_generate_keys_and_platform_labels(tmp_path: Path) -> None:
    cfg = load_config([], {}, config_file=tmp_path / "none.json")
    assert cfg.host_key.kind is KeyKind.SERVER and cfg.cluster_adhoc
    assert cfg.cluster_issuers == (cfg.cluster_key.public_key,)
    assert cfg.lattice_prefix == "default" and cfg.rpc_timeout_s == 2.0 and not cfg.allow_file_load
    assert {"hostcore.os", "hostcore.arch", "hostcore.osfamily"} <= set(cfg.labels)
    assert cfg.nats_url == ""


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "host_config.json"
    path.write_text(json.dumps({"lattice_prefix": "fromfile", "rpc_timeout_ms": 500}))
    cluster = KeyPair.generate(KeyKind.CLUSTER)
    other = KeyPair.generate(KeyKind.CLUSTER).public_key
    env = {"WASMCLOUD_LATTICE_PREFIX": "fromenv", "WASMCLOUD_CLUSTER_SEED": cluster.seed,
           "WASMCLOUD_CLUSTER_ISSUERS": other, "HOST_REGION": "eu", "WASMCLOUD_ALLOW_FILE_LOAD": "true"}
    cfg = load_config(["--lattice", "fromflag", "-l", "tier=gold"], env, config_file=path)
    assert cfg.lattice_prefix == "fromflag" and cfg.rpc_timeout_s == 0.5
    assert cfg.cluster_issuers == (cluster.public_key, other) and not cfg.cluster_adhoc
    assert cfg.labels["region"] == "eu" and cfg.labels["tier"] == "gold" and cfg.allow_file_load
    assert load_config([], env, config_file=path).lattice_prefix == "fromenv"


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WASMCLOUD_RPC_TIMEOUT_MS.*'soon'"):
        load_config([], {"WASMCLOUD_RPC_TIMEOUT_MS": "soon"}, config_file=tmp_path / "x")
    with pytest.raises(ConfigError, match="WASMCLOUD_ALLOW_FILE_LOAD"):
        load_config([], {"WASMCLOUD_ALLOW_FILE_LOAD": "perhaps"}, config_file=tmp_path / "x")


def test_invalid_seed_gives_a_fresh_key(tmp_path: Path) -> None:
    cfg = load_config([], {"WASMCLOUD_HOST_SEED": "SNnonsense"}, config_file=tmp_path / "x")
    assert cfg.host_key.kind is KeyKind.SERVER


def test_client_config() -> None:
    cfg = load_client_config(environ={"WASMCLOUD_CTL_PORT": "4333"})
    assert cfg.nats_url == "nats://127.0.0.1:4333" and cfg.lattice_prefix == "default" and cfg.timeout_s == 2.0
    assert load_client_config(nats_url="nats://x:1", environ={}).nats_url == "nats://x:1"
