"""Wasm custom sections for embedded claims (protocol.md §5.3, §5.4): find the `jwt` /
`wasmcloud_jwt` section, strip it, hash the rest, append a new one. Pure and thread-safe."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from hostcore.errors import NotWasm

__all__ = ["append_jwt_section", "jwt_section_payload", "module_hash", "strip_jwt_sections"]

# --- wasm custom sections (§5.3, §5.4) ------------------------------------------------------------

_WASM_MAGIC = b"\0asm"
_WASM_HEADER_LEN = 8
_JWT_SECTION_NAMES = frozenset({"jwt", "wasmcloud_jwt"})


def _read_leb_u32(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise NotWasm()
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _leb_u32(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sections(module: bytes) -> Iterator[tuple[int, int, int, str | None]]:
    """(id, content start, content end, custom-section name or None) of each top-level section.

    Only the section framing is checked, not the contents. Raises NotWasm if the bytes are not a
    wasm binary or a section runs past the end.
    """
    if len(module) < _WASM_HEADER_LEN or module[:4] != _WASM_MAGIC:
        raise NotWasm()
    pos = _WASM_HEADER_LEN
    while pos < len(module):
        section_id = module[pos]
        size, start = _read_leb_u32(module, pos + 1)
        end = start + size
        if end > len(module):
            raise NotWasm()
        name = None
        if section_id == 0:
            name_len, name_start = _read_leb_u32(module, start)
            if name_start + name_len > end:
                raise NotWasm()
            try:
                name = module[name_start : name_start + name_len].decode()
            except UnicodeDecodeError as e:
                raise NotWasm() from e
        yield section_id, start, end, name
        pos = end


def _stripped_chunks(module: bytes) -> Iterator[bytes | memoryview]:
    view = memoryview(module)
    yield view[:_WASM_HEADER_LEN]
    for section_id, start, end, name in _sections(module):
        if name not in _JWT_SECTION_NAMES:
            yield bytes([section_id]) + _leb_u32(end - start)
            yield view[start:end]


def strip_jwt_sections(module: bytes) -> bytes:
    """The module without its top-level `jwt`/`wasmcloud_jwt` custom sections (wascap ≥0.10).

    Every other section is re-emitted as id + minimal LEB128 size + original contents, after
    the original 8-byte header. Nested (component) modules are not descended into. Raises NotWasm.
    """
    return b"".join(_stripped_chunks(module))


def module_hash(module: bytes) -> str:
    """Upper-case hex SHA-256 of `strip_jwt_sections(module)` (the `wascap.hash` claim, §5.4)."""
    digest = hashlib.sha256()
    for chunk in _stripped_chunks(module):
        digest.update(chunk)
    return digest.hexdigest().upper()


def jwt_section_payload(module: bytes) -> bytes | None:
    """The payload of the first `jwt`/`wasmcloud_jwt` section, or None. Raises NotWasm."""
    # wascap uses the first matching section; later ones are ignored (but still stripped).
    for _, start, end, name in _sections(module):
        if name in _JWT_SECTION_NAMES:
            name_len, name_start = _read_leb_u32(module, start)
            return module[name_start + name_len : end]
    return None


def append_jwt_section(module: bytes, token: str) -> bytes:
    """`module` with a custom section `jwt` holding `token` appended (wascap ≤0.8's name, which
    every OTP host reads)."""
    encoded_name = b"jwt"
    contents = _leb_u32(len(encoded_name)) + encoded_name + token.encode()
    return module + b"\x00" + _leb_u32(len(contents)) + contents


