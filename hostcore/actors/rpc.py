"""Serving one inbound invocation inside an ActorModule (protocol.md §4.7), and the guest's
outbound host calls that the instance answers itself (§4.10 step 1, §6.5 built-ins).

Pure logic over bytes: no NATS, no Thespian, so it is unit-tested with fakes.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from typing import Protocol

import msgpack

from hostcore.errors import (
    CallAliasNotFound,
    GuestError,
    HostCallError,
    HostcoreError,
    InvocationError,
    MissingCapability,
    MissingCapabilityClaim,
)
from hostcore.native.claims import ActorClaims
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    success_wire,
)

log = logging.getLogger(__name__)

__all__ = ["BuiltinHostCalls", "GuestRuntime", "InvocationHandler", "LOGGING", "NUMBERGEN"]

LOGGING = "wasmcloud:builtin:logging"
NUMBERGEN = "wasmcloud:builtin:numbergen"
_U32_MAX = 4294967295


ResultSink = Callable[[bool, WasmCloudEntity, WasmCloudEntity, str, int], None]


class GuestRuntime(Protocol):
    def call(self, operation: str, payload: bytes) -> bytes: ...


class InvocationHandler:
    """Turns Invocation bytes into InvocationResponse bytes for one instance. Never raises: every
    failure becomes the response's `error` (a dropped request would hang the caller)."""

    def __init__(self, *, claims: ActorClaims, runtime: GuestRuntime, validator: InvocationValidator,
                 instance_id: str, on_result: ResultSink | None = None) -> None:
        self.claims = claims
        self.runtime = runtime
        self.validator = validator
        self.instance_id = instance_id
        self.on_result = on_result

    def handle(self, data: bytes) -> bytes:
        """Decode, check and run one invocation (no chunking, no policy): the fast path."""
        checked = self.check(data)
        return checked if isinstance(checked, bytes) else self.execute(checked)

    def check(self, data: bytes) -> Invocation | bytes:
        """protocol.md §4.7 steps 3–5: the invocation, or the failure response bytes."""
        inv: Invocation | None = None
        try:
            inv = Invocation.from_wire(data)
            self.validator.validate(inv)
            self._check_capability(inv)
            return inv
        except Exception as err:  # noqa: BLE001 -- every failure is an answer (§4.7)
            return self.failure(inv, err)

    def execute(self, inv: Invocation) -> bytes:
        """protocol.md §4.7 steps 8–9 on a checked (and de-chunked) invocation."""
        try:
            msg = self.runtime.call(inv.operation, inv.msg)
        except Exception as err:  # noqa: BLE001
            return self.failure(inv, err)
        if self.on_result is not None:
            self.on_result(True, inv.origin, inv.target, inv.operation, len(inv.msg))
        return success_wire(inv.id, msg, self.instance_id)

    def failure(self, inv: Invocation | None, err: BaseException) -> bytes:
        """The failure response for `err`: documented errors carry their wire text; anything
        else is logged with its traceback and the caller gets a generic error."""
        if isinstance(err, (InvocationError, GuestError)):
            log.debug("invocation failed", extra={"actor_key": self.claims.public_key, "error": err.wire})
            error = err.wire
        elif isinstance(err, HostcoreError):
            log.warning("invocation failed", extra={"actor_key": self.claims.public_key, "error": err.wire})
            error = err.wire
        else:
            log.error("invocation crashed", exc_info=err, extra={"actor_key": self.claims.public_key})
            error = "Internal host error"
        if inv is not None and self.on_result is not None:
            self.on_result(False, inv.origin, inv.target, inv.operation, len(inv.msg))
        return InvocationResponse.failure(inv.id if inv else "", error, self.instance_id).to_wire()

    def _check_capability(self, inv: Invocation) -> None:
        # protocol.md §4.7 step 5: actor-to-actor calls carry no contract/link and are allowed;
        # a provider's call needs the target actor to claim the provider's contract.
        origin = inv.origin
        if not origin.contract_id and not origin.link_name:
            return
        if not self.claims.has_cap(origin.contract_id):
            raise MissingCapability(inv.operation)


class BuiltinHostCalls:
    """The host calls an instance answers in-process: `wasmcloud:builtin:logging` and
    `wasmcloud:builtin:numbergen` (protocol.md §6.5), each only with its capability claim.

    `forward` serves every other namespace (links, actors, call aliases: protocol.md §4.10).
    """

    def __init__(self, claims: ActorClaims, *, lattice_prefix: str,
                 forward: Callable[[str, str, str, bytes], bytes] | None = None,
                 rng: random.Random | None = None) -> None:
        self.claims = claims
        self.lattice_prefix = lattice_prefix
        self.forward = forward
        self.rng = rng or random.SystemRandom()
        self.guest_log = logging.getLogger("hostcore.guest")

    def __call__(self, binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
        if namespace in (LOGGING, NUMBERGEN):
            if not self.claims.has_cap(namespace):
                raise MissingCapabilityClaim(namespace)
            return self._logging(payload) if namespace == LOGGING else self._numbergen(operation, payload)
        if self.forward is None:
            raise CallAliasNotFound(namespace, self.lattice_prefix)
        return self.forward(binding, namespace, operation, payload)

    def _logging(self, payload: bytes) -> bytes:
        try:
            entry = msgpack.unpackb(payload, raw=False)
            level, text = str(entry.get("level", "")), str(entry.get("text", ""))
        except Exception:  # noqa: BLE001 -- a guest's bad payload is its error, not ours
            raise HostCallError("Failed to deserialize log entry") from None
        levelno = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO}.get(level, logging.DEBUG)
        self.guest_log.log(levelno, "[%s] %s", self.claims.public_key, text,
                           extra={"actor_key": self.claims.public_key})
        return b""

    def _numbergen(self, operation: str, payload: bytes) -> bytes:
        if operation == "NumberGen.GenerateGuid":
            return msgpack.packb(str(uuid.uuid4()))
        if operation == "NumberGen.Random32":
            return msgpack.packb(self.rng.randint(0, _U32_MAX))
        if operation == "NumberGen.RandomInRange":
            try:
                bounds = msgpack.unpackb(payload, raw=False)
                low, high = max(int(bounds["min"]), 0), min(int(bounds["max"]), _U32_MAX)
            except Exception:  # noqa: BLE001
                raise HostCallError("Failed to deserialize range request") from None
            if low > high:
                raise HostCallError(f"Invalid range: min {low} > max {high}")
            return msgpack.packb(self.rng.randint(low, high))
        raise HostCallError(f"Unknown operation {operation} for {NUMBERGEN}")
