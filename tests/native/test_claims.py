"""hostcore.native.claims: the 10 real fixtures, tampered copies, signing, spec TV-1/TV-3."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from hostcore.errors import (
    ClaimsBadSignature,
    ClaimsExpired,
    ClaimsExtractFailed,
    ClaimsHashMismatch,
    ClaimsInvalid,
    ClaimsNotYetValid,
    NoClaims,
    NotWasm,
    TokenBadAlgorithm,
    TokenBadSignature,
    TokenExpired,
    TokenMalformed,
    TokenMissingIssuer,
)
from hostcore.native.claims import extract_claims, normalize_call_alias, sign_actor
from hostcore.native.wascap_jwt import HEADER_SEGMENT, decode_jwt, encode_jwt, parse_token
from hostcore.native.wasm_sections import module_hash, strip_jwt_sections
from hostcore.native.nkeys import KeyKind, KeyPair

FIXTURES = Path(
    os.environ.get(
        "HOSTCORE_FIXTURES",
        Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "actors",
    )
)
NOW = 1_700_000_000
EMPTY_MODULE = b"\x00asm\x01\x00\x00\x00"
# A module with one type section and one (unrelated) custom section, so stripping has work to do.
SMALL_MODULE = EMPTY_MODULE + b"\x01\x04\x01\x60\x00\x00" + b"\x00\x06\x04name\x00"

ECHO_ACCOUNT = "ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XVKYK4BEJWGVAOOQHZMCW"
TV1_JWT = (
    "eyJ0eXAiOiJqd3QiLCJhbGciOiJFZDI1NTE5In0.eyJqdGkiOiJTakI1Zm05NzRTanU5V01nVFVjaHNiIiwiaWF0Ijo"
    "xNjQ0ODQzNzQzLCJpc3MiOiJBQ09KSk42V1VQNE9ERDc1WEVCS0tUQ0NVSkpDWTVaS1E1NlhWS1lLNEJFSldHVkFPT1F"
    "IWk1DVyIsInN1YiI6Ik1CQ0ZPUE02SlcyQVBKTFhKRDNaNU80Q043Q1BZSjJCNEZUS0xKVVI1WVI1TUlUSVU3SEQzV0Q1"
    "Iiwid2FzY2FwIjp7Im5hbWUiOiJFY2hvIiwiaGFzaCI6IjRDRUM2NzNBN0RDQ0VBNkE0MTY1QkIxOTU4MzJDNzkzNjQ3"
    "MUNGN0FCNDUwMUY4MzdGOEQ2NzlGNDQwMEJDOTciLCJ0YWdzIjpbXSwiY2FwcyI6WyJ3YXNtY2xvdWQ6aHR0cHNlcnZl"
    "ciJdLCJyZXYiOjQsInZlciI6IjAuMy40IiwicHJvdiI6ZmFsc2V9fQ.ZWyD6VQqzaYM1beD2x9Fdw4o_Bavy3ZG703Eg4"
    "cjhyJwUKLDUiVPVhqHFE6IXdV4cW6j93YbMT6VGq5iBDWmAg"
)
TV1_CLAIMS = (
    '{"jti":"SjB5fm974Sju9WMgTUchsb","iat":1644843743,"iss":"ACOJJN6WUP4ODD75XEBKKTCCUJJCY5ZKQ56XV'
    'KYK4BEJWGVAOOQHZMCW","sub":"MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5","wasca'
    'p":{"name":"Echo","hash":"4CEC673A7DCCEA6A4165BB195832C7936471CF7AB4501F837F8D679F4400BC97",'
    '"tags":[],"caps":["wasmcloud:httpserver"],"rev":4,"ver":"0.3.4","prov":false}}'
)
TV1_HASH = "4CEC673A7DCCEA6A4165BB195832C7936471CF7AB4501F837F8D679F4400BC97"
UNPRIV_ACCOUNT_SEED = "SAADV6UE6ILDAJ5TW2LCD2M6MNCMOLLCLQ5OLD53BZA2GTWJKWELBMWA3U"
UNPRIV_MODULE_SEED = "SMAMZ6LKVEXGCLWVF3A37IRWF6JDV6CI27TB2K3YFX3FO47AEA3QVVZ4JA"

# (file, subject, name, caps) as the fixtures README lists them.
FIXTURE_TABLE = [
    ("echo.wasm", "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5", "Echo",
     ("wasmcloud:httpserver",)),
    ("echo_unpriv_s.wasm", "MCRACEYKJLCP7NLVMUTO2SCQ26JFL3Z4TBIXPXDE7KPBI2GEH5DA57L5", "echo", ("",)),
    ("kvcounter.wasm", "MCFMFDWFHGKELOXPCNCDXKK5OFLHBVEWRAOXR5JSQUD2TOFRE3DFPM7E", "kvcounter",
     ("wasmcloud:httpserver", "wasmcloud:keyvalue")),
    ("kvcounter_unpriv_s.wasm", "MBW3UGAIONCX3RIDDUGDCQIRGBQQOWS643CVICQ5EZ7SWNQPZLZTSQKU",
     "kvcounter", ("wasmcloud:httpserver",)),
    ("pinger_s.wasm", "MBXTD7YXTTV7IURPDDACK3E6YZ2XPJNSG3LQQRHUCHJVZ54F6E4FMB3B", "pinger",
     ("wasmcloud:httpserver",)),
    ("ponger_s.wasm", "MCR3MOPPRNUNV4QQHYWQDIQDXCJAKFBSZAIK564BUEX6ZBGR2OG6CV5G", "ponger", ()),
    ("randogenlogger_s.wasm", "MCLOGOFFRJ4WK5XC6Z6WM7A3SAVHPHKDAVG6OMZVOOC6RQCN5IOKPTQL",
     "randogenlogger",
     ("wasmcloud:httpserver", "wasmcloud:builtin:logging", "wasmcloud:builtin:numbergen")),
    ("example_policy_s.wasm", "MCX7HXCVATHJQRQLCCKV57R34V726FYRTDQL2QKPHXLYFWGOUE2LWRE3",
     "Sample wasmCloud Policy", ("wasmcloud:messaging",)),
    ("echo_wapc_s.wasm", "MADQAFWOOOCZFDKYEYHC7AUQKDJTP32XUC5TDSMN4JLTDTU2WXBVPG4G", "echo",
     ("wasmcloud:httpserver",)),
    ("echo_wapc_call_alias_s.wasm", "MADQAFWOOOCZFDKYEYHC7AUQKDJTP32XUC5TDSMN4JLTDTU2WXBVPG4G",
     "echo", ("wasmcloud:httpserver",)),
]


def fixture(name: str) -> bytes:
    path = FIXTURES / name
    assert path.is_file(), f"fixture {path} missing (set HOSTCORE_FIXTURES)"
    return path.read_bytes()


@pytest.fixture(scope="module")
def echo() -> bytes:
    return fixture("echo.wasm")


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def custom_section(name: str, payload: bytes) -> bytes:
    contents = _leb(len(name)) + name.encode() + payload
    return b"\x00" + _leb(len(contents)) + contents


def section_range(module: bytes, wanted_id: int) -> tuple[int, int]:
    """(start, end) of the contents of the first top-level section with id `wanted_id`."""
    pos = 8
    while pos < len(module):
        section_id, pos = module[pos], pos + 1
        size = shift = 0
        while True:
            byte, pos = module[pos], pos + 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if section_id == wanted_id:
            return pos, pos + size
        pos += size
    raise AssertionError(f"no section {wanted_id}")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_token(module: bytes, token: str, section: str = "jwt") -> bytes:
    return strip_jwt_sections(module) + custom_section(section, token.encode())


def keys() -> tuple[KeyPair, KeyPair]:
    return KeyPair.from_seed(UNPRIV_ACCOUNT_SEED), KeyPair.from_seed(UNPRIV_MODULE_SEED)


def actor_claims(module: bytes, account: KeyPair, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": "AAAAAAAAAAAAAAAAAAAAAA",
        "iat": NOW,
        "iss": account.public_key,
        "sub": keys()[1].public_key,
        "wascap": {"name": "t", "hash": module_hash(module), "tags": [], "caps": [], "prov": False},
    }
    claims.update(extra)
    return claims


# --- the real fixtures ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "subject", "actor_name", "caps"), FIXTURE_TABLE)
def test_every_fixture_verifies(name: str, subject: str, actor_name: str, caps: tuple[str, ...]) -> None:
    module = fixture(name)
    claims = extract_claims(module)
    assert claims.public_key == subject
    assert claims.name == actor_name
    assert claims.caps == caps
    assert claims.module_hash == module_hash(module)
    assert claims.issuer[0] == "A" and not claims.provider
    payload = json.loads(base64.urlsafe_b64decode(claims.jwt.split(".")[1] + "=="))
    assert payload["sub"] == subject and payload["iss"] == claims.issuer


def test_tv1_echo(echo: bytes) -> None:
    claims = extract_claims(echo)
    assert claims.jwt == TV1_JWT
    assert base64.urlsafe_b64decode(TV1_JWT.split(".")[1] + "==").decode() == TV1_CLAIMS
    assert module_hash(echo) == TV1_HASH == claims.module_hash
    assert (claims.issuer, claims.version, claims.rev, claims.revision) == (ECHO_ACCOUNT, "0.3.4", 4, 4)
    assert (claims.issued_at, claims.expires, claims.not_before) == (1644843743, None, None)
    assert claims.call_alias is None and claims.wascap_revision is None
    assert (claims.expires_human(), claims.not_before_human()) == ("never", "immediately")
    assert claims.has_cap("wasmcloud:httpserver") and not claims.has_cap("wasmcloud:keyvalue")


def test_tv1_encodes_byte_identically() -> None:
    # Any signer: the header and claims segments do not depend on the key.
    token = encode_jwt(json.loads(TV1_CLAIMS), KeyPair.generate(KeyKind.ACCOUNT))
    assert token.split(".")[:2] == TV1_JWT.split(".")[:2]
    assert token.split(".")[0] == HEADER_SEGMENT


def test_tv3_echo_unpriv_known_seeds() -> None:
    claims = extract_claims(fixture("echo_unpriv_s.wasm"))
    account, module_key = keys()
    assert claims.issuer == account.public_key == "ADYDCRUIFKCUZFVHZFBVZCPBR6HAT2U63VSVD2BBIWGM62KMJL5RR5YM"
    assert claims.public_key == module_key.public_key
    assert claims.module_hash == "AB107F5C2239D84980CC217FF31B286D158029D15E524D7FB266D289CED4462E"
    assert (claims.caps, claims.rev, claims.version, claims.issued_at) == (("",), 4, "0.3.3", 1642791045)
    assert json.loads(base64.urlsafe_b64decode(claims.jwt.split(".")[1] + "=="))["jti"] == "8JIn4HaoOsSnzdPlYTU6ai"
    kv = extract_claims(fixture("kvcounter_unpriv_s.wasm"))
    assert kv.issuer == "ABRIBHH54GM7QIEJBYYGZJUSDAMO34YM4SKWUQJGIILRB7JYGXEPWUVT"
    assert kv.module_hash.startswith("A2CC0655") and kv.module_hash.endswith("18E3")


def test_call_aliases_and_revision_quirk() -> None:
    ponger = extract_claims(fixture("ponger_s.wasm"))
    assert ponger.call_alias == "wasmcloud/ponger"
    aliased = extract_claims(fixture("echo_wapc_call_alias_s.wasm"))
    assert (aliased.call_alias, aliased.version, aliased.rev) == ("wasmcloud/examples/echo", "0.2.2", 0)
    # QUIRK §5.6: rev 0 or absent → iat.
    assert aliased.revision == aliased.issued_at
    assert extract_claims(fixture("echo_wapc_s.wasm")).version is None


def test_cache_record_and_event_claims(echo: bytes) -> None:
    claims = extract_claims(echo)
    record = claims.to_cache_record()
    assert list(record) == ["call_alias", "iss", "name", "caps", "rev", "tags", "version", "sub"]
    assert record == {
        "call_alias": "", "iss": ECHO_ACCOUNT, "name": "Echo", "caps": "wasmcloud:httpserver",
        "rev": "4", "tags": "", "version": "0.3.4",
        "sub": "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5",
    }
    assert claims.to_event_claims() == {
        "call_alias": None, "caps": ["wasmcloud:httpserver"], "issuer": ECHO_ACCOUNT, "tags": [],
        "name": "Echo", "version": "0.3.4", "revision": 4, "not_before_human": "immediately",
        "expires_human": "never",
    }
    assert pickle.loads(pickle.dumps(claims)) == claims


def test_strip_removes_only_the_jwt_section(echo: bytes) -> None:
    stripped = strip_jwt_sections(echo)
    assert len(echo) - len(stripped) == len(custom_section("jwt", TV1_JWT.encode()))
    assert strip_jwt_sections(stripped) == stripped
    assert module_hash(stripped) == module_hash(echo)
    with pytest.raises(NoClaims):
        extract_claims(stripped)


# --- tampered copies -----------------------------------------------------------------------------


def test_no_jwt_section(echo: bytes) -> None:
    with pytest.raises(NoClaims) as err:
        extract_claims(strip_jwt_sections(echo))
    assert err.value.wire == "No claims found in source module"


def test_flipped_code_byte_is_a_hash_mismatch() -> None:
    module = bytearray(fixture("ponger_s.wasm"))
    start, end = section_range(bytes(module), 10)
    module[(start + end) // 2] ^= 0x01
    with pytest.raises(ClaimsHashMismatch) as err:
        extract_claims(bytes(module))
    assert isinstance(err.value, ClaimsExtractFailed)
    assert err.value.wire == "Failed to extract claims from module"


def test_edited_claim_without_resigning_is_a_bad_signature(echo: bytes) -> None:
    header, _, signature = TV1_JWT.split(".")
    forged = TV1_CLAIMS.replace('"name":"Echo"', '"name":"Evil"')
    token = f"{header}.{b64(forged.encode())}.{signature}"
    with pytest.raises(ClaimsBadSignature) as err:
        extract_claims(with_token(echo, token))
    assert err.value.wire == "Invalid signature on module token"


def test_expired_token() -> None:
    account, module_key = keys()
    signed = sign_actor(SMALL_MODULE, account=account, module_key=module_key, name="x", expires=NOW - 1)
    with pytest.raises(ClaimsExpired) as err:
        extract_claims(signed, now=NOW)
    assert err.value.wire == "Claims token expired"
    assert extract_claims(signed, now=NOW - 2).expires_human(now=NOW - 2) == "now"


def test_not_yet_valid_token() -> None:
    account, module_key = keys()
    signed = sign_actor(SMALL_MODULE, account=account, module_key=module_key, name="x",
                        not_before=NOW + 3 * 86400)
    with pytest.raises(ClaimsNotYetValid) as err:
        extract_claims(signed, now=NOW)
    assert err.value.wire == "Claims token cannot be used yet"
    assert extract_claims(signed, now=NOW + 3 * 86400).not_before_human(now=NOW) == "in 3 days"


def test_expiry_is_reported_before_a_bad_signature() -> None:
    account, _ = keys()
    claims = actor_claims(SMALL_MODULE, account, exp=NOW - 10)
    token = encode_jwt(claims, KeyPair.generate(KeyKind.ACCOUNT))  # wrong signer for `iss`
    with pytest.raises(ClaimsExpired):
        extract_claims(with_token(SMALL_MODULE, token), now=NOW)
    with pytest.raises(ClaimsBadSignature):
        extract_claims(with_token(SMALL_MODULE, token), now=NOW - 20)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world, not wasm\n", bytes(range(256)) * 4, EMPTY_MODULE + b"\x01\x7f", b"\x00asm"],
)
def test_not_wasm(data: bytes) -> None:
    with pytest.raises(NotWasm) as err:
        extract_claims(data)
    assert err.value.wire == "Failed to extract claims from module"


def test_text_file_is_not_wasm(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("# not a module\n")
    with pytest.raises(NotWasm):
        extract_claims(path.read_bytes())


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (b64(b'{"typ":"jwt","alg":"HS256"}'), "Invalid JWT algorithm. WASCAP only supports Ed25519"),
        (b64(b'{"typ":"JWT","alg":"Ed25519"}'), "JWT error: Invalid header"),
    ],
)
def test_bad_header_is_invalid(token: str, detail: str) -> None:
    account, _ = keys()
    good = encode_jwt(actor_claims(SMALL_MODULE, account), account)
    _, claims, signature = good.split(".")
    with pytest.raises(ClaimsInvalid) as err:
        extract_claims(with_token(SMALL_MODULE, f"{token}.{claims}.{signature}"))
    assert err.value.wire == f"Failed to validate claims token: {detail}"


def test_empty_issuer_is_invalid() -> None:
    account, _ = keys()
    token = encode_jwt(actor_claims(SMALL_MODULE, account, iss=""), account)
    with pytest.raises(ClaimsInvalid) as err:
        extract_claims(with_token(SMALL_MODULE, token))
    assert "issuer" in err.value.wire


@pytest.mark.parametrize("token", ["", "a.b", "not base64!.x.y", f"{HEADER_SEGMENT}.{b64(b'[]')}.AA"])
def test_undecodable_claims_fail_extraction(token: str) -> None:
    with pytest.raises(ClaimsExtractFailed) as err:
        extract_claims(with_token(SMALL_MODULE, token))
    assert type(err.value) is ClaimsExtractFailed


def test_missing_wascap_block_fails_extraction() -> None:
    account, _ = keys()
    claims = actor_claims(SMALL_MODULE, account)
    del claims["wascap"]
    with pytest.raises(ClaimsExtractFailed):
        extract_claims(with_token(SMALL_MODULE, encode_jwt(claims, account)))


@pytest.mark.parametrize(("revision", "enforced"), [(None, True), (3, True), (2, False)])
def test_hash_enforcement_by_wascap_revision(revision: int | None, enforced: bool) -> None:
    account, _ = keys()
    claims = actor_claims(SMALL_MODULE, account)
    claims["wascap"]["hash"] = "0" * 64
    if revision is not None:
        claims["wascap_revision"] = revision
    module = with_token(SMALL_MODULE, encode_jwt(claims, account), section="wasmcloud_jwt")
    if enforced:
        with pytest.raises(ClaimsHashMismatch):
            extract_claims(module)
    else:
        assert extract_claims(module).wascap_revision == 2


# --- signing -------------------------------------------------------------------------------------


def test_sign_actor_round_trip() -> None:
    account, module_key = keys()
    signed = sign_actor(
        SMALL_MODULE, account=account, module_key=module_key, name="Test Actor",
        caps=["wasmcloud:httpserver", "wasmcloud:keyvalue"], tags=["a", "b"], rev=7, ver="1.2.3",
        call_alias=" My-Actor.Ünï v2 ", expires=NOW + 86400 * 400, not_before=NOW - 100, issued_at=NOW,
    )
    claims = extract_claims(signed, now=NOW)
    assert (claims.public_key, claims.issuer) == (module_key.public_key, account.public_key)
    assert (claims.name, claims.version, claims.rev, claims.revision) == ("Test Actor", "1.2.3", 7, 7)
    assert claims.caps == ("wasmcloud:httpserver", "wasmcloud:keyvalue") and claims.tags == ("a", "b")
    assert claims.call_alias == "my_actor_n_v2"
    assert claims.wascap_revision == 3 and claims.issued_at == NOW
    assert claims.module_hash == module_hash(SMALL_MODULE)
    assert claims.expires_human(now=NOW) == "in a year"
    assert claims.not_before_human(now=NOW) == "2 minutes ago"
    payload = base64.urlsafe_b64decode(claims.jwt.split(".")[1] + "==").decode()
    assert list(json.loads(payload)) == ["exp", "jti", "iat", "iss", "sub", "nbf", "wascap", "wascap_revision"]
    assert list(json.loads(payload)["wascap"]) == ["name", "hash", "tags", "caps", "rev", "ver", "call_alias", "prov"]


def test_resigning_replaces_the_jwt_section(echo: bytes) -> None:
    account, module_key = keys()
    signed = sign_actor(echo, account=account, module_key=module_key, name="again", issued_at=NOW)
    assert len(signed) - len(strip_jwt_sections(echo)) == len(custom_section("jwt", extract_claims(signed).jwt.encode()))
    assert extract_claims(signed).module_hash == TV1_HASH


def test_normalize_call_alias() -> None:
    assert normalize_call_alias("  Wasmcloud/Examples-Echo.v1 x ") == "wasmcloud/examples_echo_v1_x"


# --- generic JWT helpers -------------------------------------------------------------------------


def test_decode_jwt() -> None:
    assert decode_jwt(TV1_JWT)["wascap"]["hash"] == TV1_HASH
    header, claims, signature = TV1_JWT.split(".")
    with pytest.raises(TokenBadSignature):
        decode_jwt(f"{header}.{b64(TV1_CLAIMS.replace('Echo', 'Ohce').encode())}.{signature}")
    account, _ = keys()
    with pytest.raises(TokenExpired):
        decode_jwt(encode_jwt(actor_claims(SMALL_MODULE, account, exp=NOW), account), now=NOW + 1)


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("", TokenMalformed),
        ("a.b.c.d", TokenMalformed),
        (f"{HEADER_SEGMENT}.e30=.AA", TokenMalformed),  # padding is not base64url-nopad
        (f"{b64(b'{}')}.{b64(b'{}')}.", TokenBadAlgorithm),
        (f"{HEADER_SEGMENT}.{b64(b'{}')}.", TokenMalformed),
        (f"{HEADER_SEGMENT}.{b64(json.dumps({'jti': 'x', 'iat': 1, 'iss': '', 'sub': 's'}).encode())}.", TokenMissingIssuer),
    ],
)
def test_parse_token_errors(token: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_token(token)
