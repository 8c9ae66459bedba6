"""Compiling in a child process gives what compiling in the NativeWorker gave: the same cache
file, the same errors with the same texts; the NativeWorker spawns no child for a module whose
.cwasm it already knows."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fixture_actor

from hostcore.actors.compiler import CompileChildFailed, compile_in_child
from hostcore.actors.native_worker import NativeWorker
from hostcore.errors import HostcoreError, ModuleCompileFailed, NotWasm
from hostcore.native.wasm import compile_to_cache, load_module, new_engine

BAD_MODULES = (b"(module)", b"\0asm\x01\0\0\0garbage")


def test_the_child_writes_the_file_compile_to_cache_names(tmp_path: Path) -> None:
    data = fixture_actor("echo.wasm").read_bytes()
    path = compile_in_child(data, tmp_path / "cache")
    engine = new_engine()
    assert compile_to_cache(engine, data, tmp_path / "cache") == path  # found, not compiled again
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    load_module(engine, path)  # loads into an engine on the host's Config


@pytest.mark.parametrize("module", BAD_MODULES)
def test_the_child_fails_as_compile_to_cache_does(module: bytes, tmp_path: Path) -> None:
    with pytest.raises(HostcoreError) as in_process:
        compile_to_cache(new_engine(), module, tmp_path)
    with pytest.raises(HostcoreError) as in_child:
        compile_in_child(module, tmp_path)
    assert type(in_child.value) is type(in_process.value)
    assert in_child.value.wire == in_process.value.wire
    assert isinstance(in_child.value, (NotWasm, ModuleCompileFailed))
    assert list(tmp_path.iterdir()) == []


def test_a_failure_that_is_not_the_modules_keeps_its_text(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError) as in_process:
        compile_to_cache(new_engine(), fixture_actor("echo.wasm").read_bytes(), blocker / "cache")
    with pytest.raises(CompileChildFailed) as in_child:
        compile_in_child(fixture_actor("echo.wasm").read_bytes(), blocker / "cache")
    assert str(in_child.value) == str(in_process.value)


def test_the_native_worker_compiles_a_module_once_while_its_cwasm_exists(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting(module: bytes, cache_dir: Path) -> Path:
        calls.append(module)
        return compile_in_child(module, cache_dir)

    monkeypatch.setattr("hostcore.actors.native_worker.compile_in_child", counting)
    worker = NativeWorker()
    worker.compiled, worker.cache_dir = {}, tmp_path
    data = fixture_actor("echo.wasm").read_bytes()
    path = worker._compile(data)
    assert worker._compile(data) == path and len(calls) == 1
    path.unlink()  # someone emptied the cache: compiled again
    assert worker._compile(data) == path and path.exists() and len(calls) == 2
