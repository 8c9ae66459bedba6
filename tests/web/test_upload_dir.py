"""The one exception to WASMCLOUD_ALLOW_FILE_LOAD=false: a module directly in the host's
`uploads/` (where its dashboard stores uploaded actors) loads; every other file is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostcore.config import HostConfig
from hostcore.errors import FileLoadDisabled
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.actors.native_worker import read_file_ref
from hostcore.web import DashboardSettings


def config(data_dir: Path, *, allow_file_load: bool = False) -> HostConfig:
    cluster_key = KeyPair.generate(KeyKind.CLUSTER)
    return HostConfig(host_key=KeyPair.generate(KeyKind.SERVER), cluster_key=cluster_key,
                      cluster_issuers=(cluster_key.public_key,), cluster_adhoc=False, lattice_prefix="default",
                      friendly_name="test-host-1", labels={}, nats_url="", data_dir=data_dir,
                      allow_file_load=allow_file_load)


def test_only_files_directly_in_uploads_load_without_file_loading(tmp_path: Path) -> None:
    cfg = config(tmp_path / "data")
    uploads = cfg.uploads_dir
    (uploads / "sub").mkdir(parents=True)
    inside = uploads / "M123-abc.wasm"
    inside.write_bytes(b"\0asm")
    outside = tmp_path / "echo.wasm"
    outside.write_bytes(b"\0asm-outside")
    (uploads / "sub" / "deeper.wasm").write_bytes(b"x")
    (uploads / "link.wasm").symlink_to(outside)

    assert read_file_ref(inside.as_uri(), cfg) == b"\0asm"
    for refused in (outside.as_uri(), f"file://{uploads}/../echo.wasm", (uploads / "sub" / "deeper.wasm").as_uri(),
                    (uploads / "link.wasm").as_uri(), f"file://{tmp_path / 'data'}/uploads"):
        with pytest.raises(FileLoadDisabled):
            read_file_ref(refused, cfg)
    # With file loading on, anything readable loads, as before.
    assert read_file_ref(outside.as_uri(), config(tmp_path / "data", allow_file_load=True)) == b"\0asm-outside"


def test_the_dashboard_of_a_host_stores_uploads_where_that_host_loads_them(tmp_path: Path) -> None:
    cfg = config(tmp_path / "data")
    settings = DashboardSettings.from_host_config(cfg)
    assert settings.upload_dir == cfg.uploads_dir and settings.local_host_id == cfg.host_id
