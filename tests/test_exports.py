"""Every module's public names (`__all__`) import, and every public module declares them."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import hostcore

MODULES = sorted(m.name for m in pkgutil.walk_packages(hostcore.__path__, "hostcore."))


def test_the_package_has_modules() -> None:
    assert len(MODULES) > 30


@pytest.mark.parametrize("name", MODULES)
def test_public_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("_") or isinstance(getattr(module, "__path__", None), list):
        return  # private modules, __main__ and package __init__ files
    assert hasattr(module, "__all__"), f"{name} does not declare __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
