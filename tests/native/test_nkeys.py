"""hostcore.native.nkeys against protocol.md §7.5 vectors."""

from __future__ import annotations

import pickle

import pytest

from hostcore.errors import NkeyError
from hostcore.native.nkeys import (
    KeyKind,
    KeyPair,
    decode_public_key,
    encode_public_key,
    encode_seed,
    is_valid_public_key,
    verify,
)

# §7.5, real: the seeds wasmcloud-otp v0.59.0 signed echo_unpriv / kvcounter_unpriv with.
FIXTURE_SEEDS = [
    (
        "SAADV6UE6ILDAJ5TW2LCD2M6MNCMOLLCLQ5OLD53BZA2GTWJKWELBMWA3U",
        "ADYDCRUIFKCUZFVHZFBVZCPBR6HAT2U63VSVD2BBIWGM62KMJL5RR5YM",
    ),
    (
        "SMAMZ6LKVEXGCLWVF3A37IRWF6JDV6CI27TB2K3YFX3FO47AEA3QVVZ4JA",
        "MCRACEYKJLCP7NLVMUTO2SCQ26JFL3Z4TBIXPXDE7KPBI2GEH5DA57L5",
    ),
    (
        "SAAJJWGAHMZMBI3A62WE4GYOOIDXFRJ5FQOWFWOOUUMAZZBYIH64J4UWCI",
        "ABRIBHH54GM7QIEJBYYGZJUSDAMO34YM4SKWUQJGIILRB7JYGXEPWUVT",
    ),
    (
        "SMAJ2SNJHE7MO54ROEWV7J4SGZYZZUGFRI5E4F7PDM3MAEDZMOQYJYSOVM",
        "MBW3UGAIONCX3RIDDUGDCQIRGBQQOWS643CVICQ5EZ7SWNQPZLZTSQKU",
    ),
]

# §7.5, self-computed from raw seed bytes 0x00..0x1f.
_B = "AAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4H"
_P = "AB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3"
COUNTING_SEEDS = [
    (KeyKind.ACCOUNT, f"SA{_B}YMHI", f"A{_P}QPZV"),
    (KeyKind.MODULE, f"SM{_B}2CRY", f"M{_P}RLXP"),
    (KeyKind.SERVER, f"SN{_B}2D5U", f"N{_P}RSWB"),
    (KeyKind.CLUSTER, f"SC{_B}YO7Q", f"C{_P}R53J"),
    (KeyKind.SERVICE, f"SV{_B}76SU", f"V{_P}RSLE"),
    (KeyKind.OPERATOR, f"SO{_B}2AJA", f"O{_P}QZVT"),
    (KeyKind.USER, f"SU{_B}776Y", f"U{_P}RLKK"),
]


@pytest.mark.parametrize(("seed", "public_key"), FIXTURE_SEEDS)
def test_fixture_seeds_derive_their_keys(seed: str, public_key: str) -> None:
    pair = KeyPair.from_seed(seed)
    assert pair.public_key == public_key
    assert pair.kind is KeyKind(public_key[0])


@pytest.mark.parametrize(("kind", "seed", "public_key"), COUNTING_SEEDS)
def test_counting_seed_vectors(kind: KeyKind, seed: str, public_key: str) -> None:
    assert encode_seed(kind, bytes(range(32))) == seed
    pair = KeyPair.from_seed(seed)
    assert (pair.kind, pair.public_key) == (kind, public_key)
    assert decode_public_key(public_key)[0] is kind


@pytest.mark.parametrize("kind", list(KeyKind))
def test_generate_round_trips(kind: KeyKind) -> None:
    pair = KeyPair.generate(kind)
    assert len(pair.seed) == 58 and pair.seed[:2] == f"S{kind.value}"
    assert len(pair.public_key) == 56 and pair.public_key[0] == kind.value
    assert KeyPair.from_seed(pair.seed) == pair
    assert is_valid_public_key(pair.public_key, kind)


def test_sign_and_verify() -> None:
    pair = KeyPair.from_seed(FIXTURE_SEEDS[0][0])
    signature = pair.sign(b"hello")
    assert len(signature) == 64
    assert verify(pair.public_key, b"hello", signature)
    assert pair.verify(b"hello", signature)
    assert not verify(pair.public_key, b"hellO", signature)
    assert not verify(pair.public_key, b"hello", signature[:-1])
    assert not verify(FIXTURE_SEEDS[2][1], b"hello", signature)


def test_decode_public_key_returns_raw_key() -> None:
    kind, raw = decode_public_key(f"C{_P}R53J")
    assert kind is KeyKind.CLUSTER
    assert encode_public_key(kind, raw) == f"C{_P}R53J"
    assert len(raw) == 32


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ADYDCRUIFKCUZFVHZFBVZCPBR6HAT2U63VSVD2BBIWGM62KMJL5RR5YN",  # checksum
        "ADYDCRUIFKCUZFVHZFBVZCPBR6HAT2U63VSVD2BBIWGM62KMJL5RR5Y",  # length
        "adydcruifkcuzfvhzfbvzcpbr6hat2u63vsvd2bbiwgm62kmjl5rr5ym",  # case
        "ADYDCRUIFKCUZFVHZFBVZCPBR6HAT2U63VSVD2BBIWGM62KMJL5RR5Y!",
        FIXTURE_SEEDS[0][0],  # a seed is not a public key
    ],
)
def test_malformed_public_keys_are_refused(bad: str) -> None:
    assert not is_valid_public_key(bad)
    with pytest.raises(NkeyError):
        decode_public_key(bad)
    with pytest.raises(NkeyError):
        verify(bad, b"x", bytes(64))


def test_is_valid_public_key_checks_kind() -> None:
    assert is_valid_public_key(FIXTURE_SEEDS[0][1], KeyKind.ACCOUNT)
    assert not is_valid_public_key(FIXTURE_SEEDS[0][1], KeyKind.MODULE)


@pytest.mark.parametrize(
    "bad",
    [
        FIXTURE_SEEDS[0][1],  # a public key is not a seed
        FIXTURE_SEEDS[0][0][:-1] + "B",  # checksum
        "SA" + "A" * 56,
        "",
    ],
)
def test_malformed_seeds_are_refused(bad: str) -> None:
    with pytest.raises(NkeyError):
        KeyPair.from_seed(bad)


def test_direct_construction_checks_consistency() -> None:
    seed, public_key = FIXTURE_SEEDS[0]
    assert KeyPair(seed=seed, public_key=public_key, kind=KeyKind.ACCOUNT).public_key == public_key
    with pytest.raises(NkeyError):
        KeyPair(seed=seed, public_key=FIXTURE_SEEDS[2][1], kind=KeyKind.ACCOUNT)
    with pytest.raises(NkeyError):
        KeyPair(seed=seed, public_key=public_key, kind=KeyKind.MODULE)


def test_key_pair_pickles_and_hides_seed() -> None:
    pair = KeyPair.from_seed(FIXTURE_SEEDS[1][0])
    copy = pickle.loads(pickle.dumps(pair))
    assert copy == pair and hash(copy) == hash(pair)
    assert copy.verify(b"m", pair.sign(b"m"))
    assert pair.seed not in repr(pair)


def test_curve_keys_cannot_sign() -> None:
    pair = KeyPair.generate(KeyKind.CURVE)
    with pytest.raises(NkeyError):
        pair.sign(b"x")
    with pytest.raises(NkeyError):
        verify(pair.public_key, b"x", bytes(64))
