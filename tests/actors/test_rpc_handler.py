"""InvocationHandler and BuiltinHostCalls (hostcore/actors/rpc.py) without NATS or Thespian:
real signed invocations (hostcore.native.invocation), the real echo and randogenlogger fixture
actors in a real wasmtime runtime, and the built-ins on their own."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import wasmtime
from conftest import LOOPING_WAT, fixture_actor, signed_wat_actor

from hostcore.actors.rpc import LOGGING, NUMBERGEN, BuiltinHostCalls, InvocationHandler
from hostcore.errors import HostCallError, RpcTimeout
from hostcore.native.claims import ActorClaims, extract_claims
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    new_invocation,
)
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.native.epoch import EpochTicker
from hostcore.native.wasm import ActorRuntime, new_engine

CLUSTER = KeyPair.generate(KeyKind.CLUSTER)
HTTP = WasmCloudEntity("VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE", "wasmcloud:httpserver", "default")
HTTP_REQUEST = msgpack.packb({"method": "GET", "path": "/p", "queryString": "", "header": {}, "body": b"hi"})
INSTANCE = "instance-1"
LATTICE = "unit"

Result = tuple[bool, WasmCloudEntity, WasmCloudEntity, str, int]


@pytest.fixture(scope="module")
def engine() -> Iterator[wasmtime.Engine]:
    eng = new_engine()
    with EpochTicker(eng):
        yield eng


_MODULES: dict[bytes, wasmtime.Module] = {}


def _compiled(engine: wasmtime.Engine, module: bytes) -> wasmtime.Module:
    """Compile each module once per test run (compiling the echo fixture takes most of a second)."""
    if module not in _MODULES:
        _MODULES[module] = wasmtime.Module(engine, module)
    return _MODULES[module]


class Actor:
    """A fixture actor in a real runtime behind an InvocationHandler that records its results."""

    def __init__(self, engine: wasmtime.Engine, module: bytes, *, call_timeout_s: float = 2.0) -> None:
        self.claims = extract_claims(module)
        self.results: list[Result] = []
        self.runtime = ActorRuntime(engine, _compiled(engine, module),
                                    host_call=BuiltinHostCalls(self.claims, lattice_prefix=LATTICE),
                                    console_log=lambda text: None, call_timeout_s=call_timeout_s,
                                    max_memory_bytes=64 << 20)
        self.handler = InvocationHandler(claims=self.claims, runtime=self.runtime,
                                         validator=InvocationValidator([CLUSTER.public_key]),
                                         instance_id=INSTANCE, on_result=lambda *r: self.results.append(r))

    @property
    def entity(self) -> WasmCloudEntity:
        return WasmCloudEntity(self.claims.public_key)

    def invocation(self, operation: str, msg: bytes, *, origin: WasmCloudEntity = HTTP,
                   signer: KeyPair = CLUSTER) -> Invocation:
        return new_invocation(signer, origin, self.entity, operation, msg)

    def serve(self, data: bytes) -> InvocationResponse:
        """check then execute, as the instance does (the checked invocation, or the failure bytes)."""
        checked = self.handler.check(data)
        return InvocationResponse.from_wire(checked if isinstance(checked, bytes) else self.handler.execute(checked))


@pytest.fixture
def echo(engine: wasmtime.Engine) -> Iterator[Actor]:
    actor = Actor(engine, fixture_actor("echo.wasm").read_bytes())
    yield actor
    actor.runtime.close()


# --- InvocationHandler -----------------------------------------------------------------------------


def test_a_provider_call_is_checked_executed_and_answered(echo: Actor) -> None:
    inv = echo.invocation("HttpServer.HandleRequest", HTTP_REQUEST)
    checked = echo.handler.check(inv.to_wire())
    assert isinstance(checked, Invocation) and checked.id == inv.id and checked.msg == HTTP_REQUEST
    assert echo.results == []  # nothing to report before it ran
    resp = InvocationResponse.from_wire(echo.handler.execute(checked))
    assert (resp.invocation_id, resp.error, resp.instance_id) == (inv.id, None, INSTANCE)
    reply = msgpack.unpackb(resp.msg)
    assert reply["statusCode"] == 200 and json.loads(reply["body"])["path"] == "/p"
    assert echo.results == [(True, HTTP, echo.entity, "HttpServer.HandleRequest", len(HTTP_REQUEST))]


def test_an_actor_to_actor_call_needs_no_capability_claim(echo: Actor) -> None:
    caller = WasmCloudEntity(KeyPair.generate(KeyKind.MODULE).public_key)  # no contract, no link name
    resp = echo.serve(echo.invocation("HttpServer.HandleRequest", HTTP_REQUEST, origin=caller).to_wire())
    assert resp.error is None
    assert echo.results[0][:2] == (True, caller)


def test_a_provider_whose_contract_the_actor_does_not_claim_is_refused(echo: Actor) -> None:
    kv = WasmCloudEntity("VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE", "wasmcloud:keyvalue", "default")
    inv = echo.invocation("KeyValue.Get", b"\x80", origin=kv)
    resp = echo.serve(inv.to_wire())
    assert (resp.invocation_id, resp.instance_id) == (inv.id, INSTANCE)
    assert resp.error == 'Actor is missing the capability claim for "KeyValue.Get"'
    assert echo.results == [(False, kv, echo.entity, "KeyValue.Get", 1)]


def test_an_invocation_signed_by_an_untrusted_cluster_is_refused(echo: Actor) -> None:
    inv = echo.invocation("HttpServer.HandleRequest", HTTP_REQUEST, signer=KeyPair.generate(KeyKind.CLUSTER))
    resp = echo.serve(inv.to_wire())
    assert resp.invocation_id == inv.id
    assert resp.error == "Issuer of this invocation is not among the list of valid issuers"
    assert [r[0] for r in echo.results] == [False]


def test_a_tampered_payload_is_refused_by_its_hash(echo: Actor) -> None:
    inv = echo.invocation("HttpServer.HandleRequest", HTTP_REQUEST)
    forged = dataclasses.replace(inv, msg=HTTP_REQUEST + b"!")
    resp = echo.serve(forged.to_wire())
    assert resp.error is not None and resp.error.startswith("Invocation hash does not match signed claims hash")


@pytest.mark.parametrize(("data", "error"), [
    (b"\xc1 not msgpack", "Failed to deserialize msgpack invocation"),
    (msgpack.packb({"operation": "x"}), "Failed to deserialize invocation"),
])
def test_undecodable_bytes_get_an_error_response_without_an_id(echo: Actor, data: bytes, error: str) -> None:
    resp = echo.serve(data)
    assert (resp.invocation_id, resp.error, resp.instance_id) == ("", error, INSTANCE)
    assert echo.results == []  # no origin or target to report


def test_a_guest_error_is_the_response_error(echo: Actor) -> None:
    inv = echo.invocation("Foo.Bar", b"")
    resp = echo.serve(inv.to_wire())
    assert resp.error == "Guest call failed for method Foo.Bar: method not handled Foo.Bar - unknown method"
    assert echo.results == [(False, HTTP, echo.entity, "Foo.Bar", 0)]


def test_failure_keeps_documented_texts_and_hides_crashes(echo: Actor, caplog: pytest.LogCaptureFixture) -> None:
    inv = echo.invocation("HttpServer.HandleRequest", HTTP_REQUEST)
    caplog.set_level(logging.DEBUG, logger="hostcore.actors.rpc")

    documented = InvocationResponse.from_wire(echo.handler.failure(inv, RpcTimeout()))
    assert documented.error == RpcTimeout().wire
    crashed = InvocationResponse.from_wire(echo.handler.failure(inv, KeyError("secret detail")))
    assert crashed.error == "Internal host error"
    assert "secret detail" not in crashed.error
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [("WARNING", "invocation failed"), ("ERROR", "invocation crashed")]
    assert caplog.records[1].exc_info is not None  # the crash is logged with its traceback
    assert [r[0] for r in echo.results] == [False, False]


def test_a_guest_past_its_time_limit_fails_the_call_and_the_next_one_runs(engine: wasmtime.Engine) -> None:
    module, _ = signed_wat_actor(LOOPING_WAT, "looper")
    actor = Actor(engine, module, call_timeout_s=0.2)
    try:
        caller = WasmCloudEntity(KeyPair.generate(KeyKind.MODULE).public_key)
        spun = actor.serve(actor.invocation("Loop", b"L", origin=caller).to_wire())
        assert spun.error == "Guest call exceeded its time limit of 0.2 s"
        echoed = actor.serve(actor.invocation("Echo", b"back", origin=caller).to_wire())
        assert (echoed.error, echoed.msg) == (None, b"back")
    finally:
        actor.runtime.close()


def test_the_guest_uses_the_builtins_through_a_real_invocation(engine: wasmtime.Engine,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.guest")
    actor = Actor(engine, fixture_actor("randogenlogger_s.wasm").read_bytes())
    try:
        resp = actor.serve(actor.invocation("HttpServer.HandleRequest", HTTP_REQUEST).to_wire())
    finally:
        actor.runtime.close()
    assert resp.error is None
    reply = msgpack.unpackb(resp.msg)
    assert (reply["statusCode"], reply["body"]) == (200, b"I did it")
    guest = [r for r in caplog.records if r.name == "hostcore.guest"]
    assert [r.levelname for r in guest] == ["DEBUG", "INFO", "WARNING", "ERROR", "INFO"]
    assert all(r.getMessage().startswith(f"[{actor.claims.public_key}] ") for r in guest)


# --- BuiltinHostCalls ------------------------------------------------------------------------------


def claims_with(*caps: str) -> ActorClaims:
    module, _ = signed_wat_actor(LOOPING_WAT, "builtins", caps=list(caps))
    return extract_claims(module)


@pytest.fixture(scope="module")
def both() -> ActorClaims:
    return claims_with(LOGGING, NUMBERGEN)


def builtins(claims: ActorClaims, **kw: Any) -> BuiltinHostCalls:
    return BuiltinHostCalls(claims, lattice_prefix=LATTICE, **kw)


@pytest.mark.parametrize(("level", "levelname"), [
    ("error", "ERROR"), ("warn", "WARNING"), ("info", "INFO"), ("debug", "DEBUG"), ("trace", "DEBUG"), ("", "DEBUG")])
def test_logging_maps_the_guest_level(both: ActorClaims, caplog: pytest.LogCaptureFixture,
                                      level: str, levelname: str) -> None:
    caplog.set_level(logging.DEBUG, logger="hostcore.guest")
    entry = msgpack.packb({"level": level, "text": "hello from the guest"})
    assert builtins(both)("default", LOGGING, "Logging.WriteLog", entry) == b""
    [record] = caplog.records
    assert (record.name, record.levelname) == ("hostcore.guest", levelname)
    assert record.getMessage() == f"[{both.public_key}] hello from the guest"
    assert record.actor_key == both.public_key  # type: ignore[attr-defined]


def test_logging_rejects_an_undecodable_entry(both: ActorClaims) -> None:
    with pytest.raises(HostCallError) as err:
        builtins(both)("default", LOGGING, "Logging.WriteLog", b"\xc1")
    assert err.value.wire == "Failed to deserialize log entry"


@pytest.mark.parametrize("namespace", [LOGGING, NUMBERGEN])
def test_each_builtin_needs_its_capability_claim(namespace: str) -> None:
    other = LOGGING if namespace == NUMBERGEN else NUMBERGEN
    calls = builtins(claims_with(other))
    with pytest.raises(HostCallError) as err:
        calls("default", namespace, "NumberGen.Random32", msgpack.packb({"level": "info", "text": "x"}))
    assert err.value.wire == f"Invocation not authorized: missing capability claim for {namespace}"


def test_numbergen_guid_and_random_numbers(both: ActorClaims) -> None:
    calls = builtins(both, rng=random.Random(7))
    expected = random.Random(7)
    guid = msgpack.unpackb(calls("default", NUMBERGEN, "NumberGen.GenerateGuid", b""))
    assert uuid.UUID(guid).version == 4
    assert msgpack.unpackb(calls("", NUMBERGEN, "NumberGen.Random32", b"")) == expected.randint(0, 2**32 - 1)
    in_range = msgpack.unpackb(calls("", NUMBERGEN, "NumberGen.RandomInRange", msgpack.packb({"min": 5, "max": 9})))
    assert in_range == expected.randint(5, 9)
    # bounds are clamped to u32: a negative minimum means 0
    assert msgpack.unpackb(calls("", NUMBERGEN, "NumberGen.RandomInRange", msgpack.packb({"min": -5, "max": 0}))) == 0


@pytest.mark.parametrize(("operation", "payload", "error"), [
    ("NumberGen.RandomInRange", {"min": 9, "max": 5}, "Invalid range: min 9 > max 5"),
    ("NumberGen.RandomInRange", {"min": 1}, "Failed to deserialize range request"),
    ("NumberGen.RandomInRange", "not a map", "Failed to deserialize range request"),
    ("NumberGen.Dice", {}, f"Unknown operation NumberGen.Dice for {NUMBERGEN}"),
])
def test_numbergen_errors(both: ActorClaims, operation: str, payload: Any, error: str) -> None:
    with pytest.raises(HostCallError) as err:
        builtins(both)("default", NUMBERGEN, operation, msgpack.packb(payload))
    assert err.value.wire == error


def test_other_namespaces_go_to_forward_or_are_unknown_aliases(both: ActorClaims) -> None:
    with pytest.raises(HostCallError) as err:
        builtins(both)("default", "tests/callee", "Echo.Echo", b"x")
    assert err.value.wire == f"Call alias not found: tests/callee on {LATTICE}"

    forwarded: list[tuple[str, str, str, bytes]] = []

    def forward(*call: Any) -> bytes:
        forwarded.append(call)
        return b"answer"
    assert builtins(both, forward=forward)("b", "wasmcloud:keyvalue", "KeyValue.Get", b"k") == b"answer"
    assert forwarded == [("b", "wasmcloud:keyvalue", "KeyValue.Get", b"k")]
