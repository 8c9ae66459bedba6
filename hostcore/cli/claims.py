"""`claims inspect|sign` and `keys gen`: wash-style tools over hostcore.native (protocol.md §5.9).

Handlers return the process exit code: 0 on success, 1 with a one-line `error: …` on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hostcore.cli import registry
from hostcore.errors import ClaimsHashMismatch, HostcoreError, NkeyError, NotWasm
from hostcore.native.claims import ActorClaims, extract_claims, sign_actor
from hostcore.native.nkeys import KeyKind, KeyPair

__all__ = ["register", "run_claims_inspect", "run_claims_sign", "run_keys_gen"]

# wascap caps.rs friendly names; unknown contract ids are shown verbatim.
_CAPABILITY_NAMES = {
    "wasmcloud:messaging": "Messaging",
    "wasmcloud:keyvalue": "K/V Store",
    "wasmcloud:httpserver": "HTTP Server",
    "wasmcloud:httpclient": "HTTP Client",
    "wasmcloud:blobstore": "Blob Store",
    "wasmcloud:eventstreams": "Event Streams",
    "wasmcloud:builtin:numbergen": "Number Generation",
    "wasmcloud:builtin:logging": "Logging",
}
_KEY_LABELS = {"A": "Account", "M": "Module", "O": "Operator", "S": "Server", "U": "User"}
_KEY_TYPES = {
    "account": KeyKind.ACCOUNT,
    "cluster": KeyKind.CLUSTER,
    "module": KeyKind.MODULE,
    "server": KeyKind.SERVER,
    "operator": KeyKind.OPERATOR,
    "user": KeyKind.USER,
    "service": KeyKind.SERVICE,
}
# Extra words for errors whose wire text alone does not say what was wrong.
_ERROR_DETAIL: dict[type[HostcoreError], str] = {
    NotWasm: "not a WebAssembly module",
    ClaimsHashMismatch: "module bytes do not match the signed module hash",
}
_DAY = 86400
_PAD = 2  # spaces between the table's columns and at its edges (borders are blank)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _describe(err: HostcoreError) -> str:
    detail = next((d for cls, d in _ERROR_DETAIL.items() if isinstance(err, cls)), None)
    return f"{err.wire} ({detail})" if detail else err.wire


def _label(key: str) -> str:
    """wash `token_label`: the role named by a key's first character."""
    return _KEY_LABELS.get(key[:1], "<Unknown>")


def _inspect_fields(claims: ActorClaims) -> dict[str, Any]:
    """The values wash prints, keyed as its JSON output (§5.9)."""
    caps_key = "capability_provider" if claims.provider else "capabilities"
    return {
        _label(claims.issuer).lower(): claims.issuer,
        _label(claims.public_key).lower(): claims.public_key,
        "expires": claims.expires_human(),
        "can_be_used": claims.not_before_human(),
        "version": claims.version or "None",
        "revision": claims.rev or 0,
        caps_key: [_CAPABILITY_NAMES.get(c, c) for c in claims.caps],
        "tags": ",".join(claims.tags) or "None",
        "call_alias": claims.call_alias or "(Not set)",
        "name": claims.name,
    }


def _render_table(claims: ActorClaims) -> str:
    """wash `render_actor_claims`: a borderless two-column table, values right-aligned."""
    fields = _inspect_fields(claims)
    pairs = [
        (_label(claims.issuer), claims.issuer),
        (_label(claims.public_key), claims.public_key),
        ("Expires", fields["expires"]),
        ("Can Be Used", fields["can_be_used"]),
        ("Version", f"{fields['version']} ({fields['revision']})"),
        ("Call Alias", fields["call_alias"]),
    ]
    caps_title = "Capability Provider" if claims.provider else "Capabilities"
    caps = [_CAPABILITY_NAMES.get(c, c) for c in claims.caps]
    headline = f"{claims.name or ''} - {_label(claims.public_key)}"
    left = max(len(k) for k, _ in pairs)
    right = max(len(v) for _, v in pairs)
    width = max(left + _PAD + right, len(headline), *(len(c) for c in caps))
    pad = " " * _PAD
    lines = [headline.center(width)]
    lines += [f"{k.ljust(left)}{v.rjust(width - left)}" for k, v in pairs]
    lines.append(caps_title.center(width))
    lines += [c.ljust(width) for c in caps]
    lines.append("Tags".center(width))
    lines.append(fields["tags"].ljust(width))
    return "\n".join(f"{pad}{line}{pad}".rstrip() for line in lines)


def run_claims_inspect(args: argparse.Namespace) -> int:
    """Print the verified claims of `args.file` (a file, or else an OCI reference) as a table,
    JSON, or the raw JWT."""
    try:
        module = _read_module(args)
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror}")
    except HostcoreError as e:
        return _fail(e.wire)
    try:
        claims = extract_claims(module)
    except HostcoreError as e:
        return _fail(f"{args.file}: {_describe(e)}")
    if args.jwt_only:
        print(claims.jwt)
    elif args.output == "json":
        print(json.dumps(_inspect_fields(claims)))
    else:
        print(_render_table(claims))
    return 0


def _read_module(args: argparse.Namespace) -> bytes:
    path = Path(args.file)
    if path.exists() or "/" not in args.file or args.file.startswith((".", "/")):
        return path.read_bytes()
    args.ref = args.file  # an OCI reference: pull it
    return registry.pull_module(args)


def _key_or_generate(seed: str | None, kind: KeyKind, role: str) -> KeyPair:
    """The key pair of `seed` (which must be of `kind`), or a fresh one whose seed goes to stderr."""
    if seed is None:
        key = KeyPair.generate(kind)
        print(f"generated {role} key {key.public_key}, seed: {key.seed}", file=sys.stderr)
        return key
    key = KeyPair.from_seed(seed.strip())
    if key.kind is not kind:
        raise NkeyError(f"the {role} seed must be a {kind.name.lower()} seed (S{kind.value}…)")
    return key


def run_claims_sign(args: argparse.Namespace) -> int:
    """Sign `args.file` into `args.destination`; keys not given are generated and shown once."""
    try:
        module = Path(args.file).read_bytes()
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror}")
    now = int(time.time())
    try:
        account = _key_or_generate(args.issuer, KeyKind.ACCOUNT, "issuer (account)")
        module_key = _key_or_generate(args.subject, KeyKind.MODULE, "subject (module)")
        signed = sign_actor(
            module,
            account=account,
            module_key=module_key,
            name=args.name,
            caps=args.cap,
            tags=args.tag,
            rev=args.rev,
            ver=args.ver,
            call_alias=args.call_alias,
            expires=None if args.expires_in_days is None else now + args.expires_in_days * _DAY,
            not_before=None if args.not_before_days is None else now + args.not_before_days * _DAY,
            issued_at=now,
        )
    except HostcoreError as e:
        return _fail(f"{args.file}: {_describe(e)}")
    try:
        Path(args.destination).write_bytes(signed)
    except OSError as e:
        return _fail(f"cannot write {args.destination}: {e.strerror}")
    caps = ", ".join(_CAPABILITY_NAMES.get(c, c) for c in args.cap) or "none"
    print(f"Successfully signed {args.destination} as {module_key.public_key} with capabilities: {caps}")
    return 0


def run_keys_gen(args: argparse.Namespace) -> int:
    """Generate and print a key pair of `args.keytype`."""
    key = KeyPair.generate(_KEY_TYPES[args.keytype])
    if args.output == "json":
        print(json.dumps({"public_key": key.public_key, "seed": key.seed}))
    else:
        print(f"Public Key: {key.public_key}\nSeed: {key.seed}\n")
        print("Remember that the seed is private, treat it as a secret.")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `claims` (inspect, sign) and `keys` (gen) commands to a CLI's subparsers."""
    claims = subparsers.add_parser("claims", help="inspect or sign actor claims")
    claims_sub = claims.add_subparsers(dest="claims_command", required=True)

    inspect = claims_sub.add_parser("inspect", help="show the verified claims of a signed module")
    inspect.add_argument("file", help="signed .wasm module, or an OCI reference")
    registry.add_registry_flags(inspect)
    inspect.add_argument("--allow-latest", action="store_true", help="allow ':latest' and tag-less references")
    inspect.add_argument("-o", "--output", choices=("text", "json"), default="text",
                         help="output format (default: text)")
    inspect.add_argument("--jwt-only", action="store_true", help="print only the raw JWT")
    inspect.set_defaults(func=run_claims_inspect)

    sign = claims_sub.add_parser("sign", help="embed signed claims in a module")
    sign.add_argument("file", help=".wasm module to sign")
    sign.add_argument("-o", "--destination", required=True, help="where to write the signed module")
    sign.add_argument("--name", required=True, help="actor name")
    sign.add_argument("--cap", action="append", default=[], help="capability contract id (repeat)")
    sign.add_argument("--tag", action="append", default=[], help="tag (repeat)")
    sign.add_argument("--rev", type=int, help="revision number")
    sign.add_argument("--ver", help="human-readable version")
    sign.add_argument("--call-alias", help="call alias (normalised as wascap does)")
    sign.add_argument("--issuer", help="account seed (SA…); generated if omitted")
    sign.add_argument("--subject", help="module seed (SM…); generated if omitted")
    sign.add_argument("--expires-in-days", type=int, help="token expires this many days from now")
    sign.add_argument("--not-before-days", type=int, help="token usable this many days from now")
    sign.set_defaults(func=run_claims_sign)

    keys = subparsers.add_parser("keys", help="generate nkeys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("gen", help="generate a key pair")
    gen.add_argument("keytype", choices=tuple(_KEY_TYPES), help="kind of key: %(choices)s")
    gen.add_argument("-o", "--output", choices=("text", "json"), default="text",
                     help="output format (default: text)")
    gen.set_defaults(func=run_keys_gen)
