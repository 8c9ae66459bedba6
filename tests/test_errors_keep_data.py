"""Typed errors keep what they were built from (`OciError.ref`, `UnlinkedActor.actor_id`, …), so
callers branch on data and types, never on the text."""

from __future__ import annotations

import inspect

import pytest

from hostcore import errors

SAMPLES = {"str": "x", "int": 3, "float": 1.5, "tuple[str, ...]": ("a", "b"), "str | None": "x"}

CLASSES = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.HostcoreError)
           and "__init__" in vars(cls) and cls is not errors.HostcoreError]


def test_there_are_errors_with_data() -> None:
    assert len(CLASSES) > 30


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_constructor_arguments_are_attributes(cls: type[errors.HostcoreError]) -> None:
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    args = {p.name: SAMPLES.get(str(p.annotation), "x") for p in params}
    err = cls(**args)
    for name, value in args.items():
        if name == "wire":
            assert err.wire == value
        else:
            assert getattr(err, name) == value, f"{cls.__name__}.{name}"
    assert err.wire and str(err)


def test_the_new_host_call_errors_keep_the_documented_texts() -> None:
    assert errors.MissingCapabilityClaim("wasmcloud:keyvalue").wire == \
        "Invocation not authorized: missing capability claim for wasmcloud:keyvalue"
    alias = errors.CallAliasNotFound("wasmcloud/foo", "default")
    assert alias.wire == "Call alias not found: wasmcloud/foo on default" and isinstance(alias, errors.HostCallError)
    assert errors.LiveUpdateStaleRevision(1, 2).wire == \
        "Unable to perform live update: new revision 1 is not greater than the running revision 2"
