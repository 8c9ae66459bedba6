"""hostcore.native.invocation: wire shapes, TV-5, and each anti-forgery failure (§4.3–4.8)."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import msgpack
import pytest

from hostcore.errors import (
    InvocationBadHostId,
    InvocationBadSignature,
    InvocationDecodeFailed,
    InvocationError,
    InvocationExpired,
    InvocationHashMismatch,
    InvocationMsgpackFailed,
    InvocationNotYetValid,
    InvocationNoWascap,
    InvocationOriginMismatch,
    InvocationTargetMismatch,
    InvocationTokenInvalid,
    InvocationUntrustedIssuer,
)
from hostcore.native.wascap_jwt import encode_jwt
from hostcore.native.invocation import (
    Invocation,
    InvocationResponse,
    InvocationValidator,
    WasmCloudEntity,
    invocation_hash,
    new_invocation,
    validate_antiforgery,
)
from hostcore.native.nkeys import KeyKind, KeyPair

NOW = 1_700_000_000
CLUSTER = KeyPair.from_seed("SCAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYO7Q")
ORIGIN = WasmCloudEntity("MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5")
TARGET = WasmCloudEntity(
    "VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE", "wasmcloud:keyvalue", "default"
)
INV_ID = "11111111-2222-4333-8444-555555555555"
TV5_ORIGIN_URL = "wasmbus://MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
TV5_TARGET_URL = (
    "wasmbus://wasmcloud/keyvalue/default/VAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RSLE"
    "/KeyValue.Get"
)
TV5_HASH = "9919560B5C1D04B863F763119FDD9DE0F00B99CDA7E16D9F6AE3BD0985271052"
TV5_JWT = (
    "eyJ0eXAiOiJqd3QiLCJhbGciOiJFZDI1NTE5In0.eyJqdGkiOiJBQUFBQUFBQUFBQUFBQUFBQUFBQUFBIiwiaWF0Ijox"
    "NzAwMDAwMDAwLCJpc3MiOiJDQUIyQ0I1NzZQSEJCUFE1T0RPUlJaMkxZQ01XUFpHV0dDTjJLREs3RFhPSU1aQVNLVVkz"
    "UjUzSiIsInN1YiI6IjExMTExMTExLTIyMjItNDMzMy04NDQ0LTU1NTU1NTU1NTU1NSIsIndhc2NhcCI6eyJ0YXJnZXRf"
    "dXJsIjoid2FzbWJ1czovL3dhc21jbG91ZC9rZXl2YWx1ZS9kZWZhdWx0L1ZBQjJDQjU3NlBIQkJQUTVPRE9SUloyTFlD"
    "TVdQWkdXR0NOMktESzdEWE9JTVpBU0tVWTNSU0xFL0tleVZhbHVlLkdldCIsIm9yaWdpbl91cmwiOiJ3YXNtYnVzOi8v"
    "TUJDRk9QTTZKVzJBUEpMWEpEM1o1TzRDTjdDUFlKMkI0RlRLTEpVUjVZUjVNSVRJVTdIRDNXRDUiLCJoYXNoIjoiOTkx"
    "OTU2MEI1QzFEMDRCODYzRjc2MzExOUZERDlERTBGMDBCOTlDREE3RTE2RDlGNkFFM0JEMDk4NTI3MTA1MiJ9fQ.A49e9Y"
    "StxT9oheweH40rUcLXiUGJquurAT6qSZVDYipKiRWRxp5YFwOVW0YYU6p-4nxtC583ZDPReT0WvNs9Dg"
)
ISSUERS = (CLUSTER.public_key,)


def tv5() -> Invocation:
    return new_invocation(CLUSTER, ORIGIN, TARGET, "KeyValue.Get", b"hello",
                          invocation_id=INV_ID, now=NOW, jti="A" * 22)


def forged(claims: dict[str, Any], signer: KeyPair = CLUSTER, **fields: Any) -> Invocation:
    """TV-5 with its JWT replaced by `claims` signed by `signer` (and fields overridden)."""
    return dataclasses.replace(tv5(), encoded_claims=encode_jwt(claims, signer), **fields)


def tv5_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": "A" * 22, "iat": NOW, "iss": CLUSTER.public_key, "sub": INV_ID,
        "wascap": {"target_url": TV5_TARGET_URL, "origin_url": TV5_ORIGIN_URL, "hash": TV5_HASH},
    }
    claims.update(extra)
    return claims


# --- TV-5 and wire shapes --------------------------------------------------------------------------


def test_tv5_urls_hash_and_jwt() -> None:
    inv = tv5()
    assert (inv.origin_url(), inv.target_url()) == (TV5_ORIGIN_URL, TV5_TARGET_URL)
    assert inv.hash() == TV5_HASH == invocation_hash(TV5_ORIGIN_URL, TV5_TARGET_URL, "KeyValue.Get", b"hello")
    assert inv.encoded_claims == TV5_JWT
    assert (inv.host_id, inv.content_length, inv.id) == (CLUSTER.public_key, 5, INV_ID)


def test_tv5_msgpack_bytes() -> None:
    wire = tv5().to_wire()
    assert len(wire) == 1128
    assert wire.startswith(bytes.fromhex("88a66f726967696e83aa7075626c69635f6b6579d9384d42"))
    assert list(msgpack.unpackb(wire)) == [
        "origin", "target", "operation", "msg", "id", "encoded_claims", "host_id", "content_length",
    ]


def test_round_trip_and_pickle() -> None:
    inv = tv5()
    assert Invocation.from_wire(inv.to_wire()) == inv
    assert pickle.loads(pickle.dumps(inv)) == inv
    no_length = dataclasses.replace(inv, content_length=None)
    assert Invocation.from_wire(no_length.to_wire()).content_length is None
    assert len(no_length.to_wire()) == 1128 - len(msgpack.packb("content_length")) - 1


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = msgpack.unpackb(tv5().to_wire())
    fields.update(overrides)
    return fields


def test_msg_as_str_is_accepted() -> None:
    inv = Invocation.from_wire(msgpack.packb(_fields(msg="hello"), use_bin_type=True))
    assert inv.msg == b"hello"
    # Elixir packs arbitrary binaries as str, even when they are not UTF-8.
    raw = msgpack.packb(_fields(msg=b"\xff\x00\xfe"), use_bin_type=False)
    assert Invocation.from_wire(raw).msg == b"\xff\x00\xfe"


def test_unknown_keys_and_null_entity_fields_are_accepted() -> None:
    origin = {"public_key": ORIGIN.public_key, "contract_id": None, "link_name": None}
    inv = Invocation.from_wire(msgpack.packb(_fields(origin=origin, traceContext={"a": "b"})))
    assert inv.origin == ORIGIN


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("x"),
                                  msgpack.packb({}) + b"\x00"])
def test_garbage_msgpack(data: bytes) -> None:
    with pytest.raises(InvocationMsgpackFailed) as err:
        Invocation.from_wire(data)
    assert err.value.wire == "Failed to deserialize msgpack invocation"


@pytest.mark.parametrize(
    "overrides",
    [{"msg": None}, {"operation": 5}, {"origin": "x"}, {"target": {"contract_id": "c"}},
     {"content_length": -1}, {"content_length": "5"}, {"host_id": None}],
)
def test_missing_or_mistyped_fields(overrides: dict[str, Any]) -> None:
    fields = {k: v for k, v in _fields(**overrides).items() if v is not None}
    with pytest.raises(InvocationDecodeFailed) as err:
        Invocation.from_wire(msgpack.packb(fields))
    assert err.value.wire == "Failed to deserialize invocation"


def test_entity_urls() -> None:
    assert WasmCloudEntity("mabc").url() == "wasmbus://mabc" and WasmCloudEntity("mabc").is_actor
    provider = WasmCloudEntity("VXYZ", "wasmcloud:Key Value", "My Link")
    assert provider.url() == "wasmbus://wasmcloud/key_value/my_link/VXYZ"
    assert not provider.is_actor


def test_response_wire_shapes() -> None:
    ok = InvocationResponse.success(INV_ID, b"out", "inst-1")
    assert list(msgpack.unpackb(ok.to_wire())) == ["msg", "invocation_id", "instance_id", "content_length"]
    assert InvocationResponse.from_wire(ok.to_wire()) == ok
    failed = InvocationResponse.failure(INV_ID, "boom", "inst-1")
    assert msgpack.unpackb(failed.to_wire()) == {
        "msg": b"", "invocation_id": INV_ID, "error": "boom", "instance_id": "inst-1",
    }
    assert InvocationResponse.from_wire(failed.to_wire()) == failed
    # Elixir replies carry msg as str; Rust replies carry no instance_id.
    elixir = InvocationResponse.from_wire(msgpack.packb({"msg": "hi", "invocation_id": "x"}))
    assert (elixir.msg, elixir.instance_id, elixir.error) == (b"hi", "", None)
    with pytest.raises(InvocationMsgpackFailed):
        InvocationResponse.from_wire(b"\x93")
    with pytest.raises(InvocationDecodeFailed):
        InvocationResponse.from_wire(msgpack.packb({"msg": b"", "error": 3}))


# --- anti-forgery ------------------------------------------------------------------------------------


def test_valid_invocation_passes() -> None:
    validate_antiforgery(Invocation.from_wire(tv5().to_wire()), ISSUERS, now=NOW)
    validator = InvocationValidator(ISSUERS)
    for _ in range(3):
        validator.validate(tv5(), now=NOW)


def test_chunked_invocation_skips_the_hash() -> None:
    validate_antiforgery(dataclasses.replace(tv5(), msg=b""), ISSUERS, now=NOW)


def _wire(inv: Invocation, issuers: tuple[str, ...] = ISSUERS) -> str:
    with pytest.raises(InvocationError) as err:
        validate_antiforgery(inv, issuers, now=NOW)
    return err.value.wire


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", TV5_JWT + ".x"])
def test_missing_or_garbage_token(token: str) -> None:
    with pytest.raises(InvocationTokenInvalid) as err:
        validate_antiforgery(dataclasses.replace(tv5(), encoded_claims=token), ISSUERS, now=NOW)
    assert err.value.wire.startswith("Decode error: ")


def test_untrusted_issuer() -> None:
    other = KeyPair.generate(KeyKind.CLUSTER)
    assert _wire(tv5(), (other.public_key,)) == (
        "Issuer of this invocation is not among the list of valid issuers"
    )


def test_hash_mismatch() -> None:
    inv = dataclasses.replace(tv5(), msg=b"HELLO")
    computed = inv.hash()
    assert _wire(inv) == (
        f"Invocation hash does not match signed claims hash ({TV5_HASH} / {computed})"
    )


def test_target_mismatch() -> None:
    other = dataclasses.replace(TARGET, link_name="other")
    assert _wire(dataclasses.replace(tv5(), msg=b"", target=other)) == (
        "Invocation claims and invocation target URL do not match"
    )
    assert _wire(dataclasses.replace(tv5(), msg=b"", operation="KeyValue.Set")) == (
        "Invocation claims and invocation target URL do not match"
    )


def test_origin_mismatch() -> None:
    other = WasmCloudEntity("MCRACEYKJLCP7NLVMUTO2SCQ26JFL3Z4TBIXPXDE7KPBI2GEH5DA57L5")
    assert _wire(dataclasses.replace(tv5(), msg=b"", origin=other)) == (
        "Invocation claims and invocation origin URL do not match"
    )


def test_expired() -> None:
    assert _wire(forged(tv5_claims(exp=NOW - 1))) == "Invocation claims token expired"


def test_not_yet_valid() -> None:
    assert _wire(forged(tv5_claims(nbf=NOW + 60))) == (
        "Attempt to use invocation before claims token allows"
    )


def test_bad_signature() -> None:
    assert _wire(forged(tv5_claims(), signer=KeyPair.generate(KeyKind.CLUSTER))) == (
        "Invocation claims signature invalid"
    )
    with pytest.raises(InvocationBadSignature):
        validate_antiforgery(forged(tv5_claims(), signer=KeyPair.generate(KeyKind.CLUSTER)), ISSUERS, now=NOW)


def test_expiry_wins_over_bad_signature() -> None:
    inv = forged(tv5_claims(exp=NOW - 1), signer=KeyPair.generate(KeyKind.CLUSTER))
    with pytest.raises(InvocationExpired):
        validate_antiforgery(inv, ISSUERS, now=NOW)


def test_no_wascap_block() -> None:
    claims = tv5_claims()
    del claims["wascap"]
    with pytest.raises(InvocationNoWascap) as err:
        validate_antiforgery(forged(claims), ISSUERS, now=NOW)
    assert err.value.wire == "No wascap metadata found on claims"


@pytest.mark.parametrize("host_id", ["", "Nshort", "M" + CLUSTER.public_key[1:], CLUSTER.public_key + "X"])
def test_bad_host_id(host_id: str) -> None:
    with pytest.raises(InvocationBadHostId) as err:
        validate_antiforgery(dataclasses.replace(tv5(), host_id=host_id), ISSUERS, now=NOW)
    assert err.value.wire == f"Invalid host ID on invocation: '{host_id}'"


def test_host_and_cluster_ids_are_accepted() -> None:
    host = KeyPair.generate(KeyKind.SERVER).public_key
    validate_antiforgery(dataclasses.replace(tv5(), host_id=host), ISSUERS, now=NOW)


def test_specific_error_classes() -> None:
    with pytest.raises(InvocationHashMismatch):
        validate_antiforgery(dataclasses.replace(tv5(), msg=b"x"), ISSUERS, now=NOW)
    with pytest.raises(InvocationUntrustedIssuer):
        validate_antiforgery(tv5(), (), now=NOW)
    with pytest.raises(InvocationTargetMismatch):
        validate_antiforgery(dataclasses.replace(tv5(), msg=b"", operation="X"), ISSUERS, now=NOW)
    with pytest.raises(InvocationOriginMismatch):
        validate_antiforgery(dataclasses.replace(tv5(), msg=b"", origin=WasmCloudEntity("Mx")), ISSUERS, now=NOW)
    with pytest.raises(InvocationNotYetValid):
        validate_antiforgery(forged(tv5_claims(nbf=NOW + 60)), ISSUERS, now=NOW)
