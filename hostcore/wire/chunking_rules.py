"""The large-payload rules of protocol.md §4.9: when a payload travels through the lattice's
object store, and how long a call carrying one may take. Each side of the lattice keeps the
rule of the implementation it models, so the three timeout rules differ on purpose."""

from __future__ import annotations

__all__ = [
    "CHUNK_THRESHOLD",
    "LARGE_CALL_THRESHOLD",
    "LARGE_CALL_TIMEOUT_S",
    "OBJECT_STORE_TIMEOUT_S",
    "RESPONSE_CHUNK_THRESHOLD",
    "WASMBUS_RPC_EXTRA_TIMEOUT_S",
    "client_call_timeout",
    "host_call_timeout",
    "provider_call_timeout",
]

CHUNK_THRESHOLD = 700 * 1024  # 716 800 B: OTP chunks outbound requests above this
RESPONSE_CHUNK_THRESHOLD = 900 * 1024  # 921 600 B: OTP chunks actor responses above this
LARGE_CALL_THRESHOLD = 900 * 1024  # 921 600 B: OTP gives a larger request LARGE_CALL_TIMEOUT_S
LARGE_CALL_TIMEOUT_S = 15.0
OBJECT_STORE_TIMEOUT_S = 15.0  # one object-store operation gets the same bound
WASMBUS_RPC_EXTRA_TIMEOUT_S = 13.0  # wasmbus-rpc adds this to a chunked call's timeout


def host_call_timeout(payload_size: int, rpc_timeout_s: float) -> float:
    """An actor's outbound call, as OTP times it: 15 s instead of the RPC timeout above 900 KiB."""
    return LARGE_CALL_TIMEOUT_S if payload_size > LARGE_CALL_THRESHOLD else rpc_timeout_s


def provider_call_timeout(timeout_s: float, *, chunked: bool) -> float:
    """A provider's call to an actor, as wasmbus-rpc times it: 13 s more when chunked."""
    return timeout_s + WASMBUS_RPC_EXTRA_TIMEOUT_S if chunked else timeout_s


def client_call_timeout(payload_size: int, timeout_s: float) -> float:
    """A control client's call (wash's rule): at least 15 s for a payload that is chunked."""
    return max(timeout_s, LARGE_CALL_TIMEOUT_S) if payload_size > CHUNK_THRESHOLD else timeout_s
