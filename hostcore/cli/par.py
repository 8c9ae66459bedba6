"""`par create|inspect`: build and examine provider archives (protocol.md §8.4), as `wash par`.

Handlers return the process exit code: 0 on success, 1 with a one-line `error: …` on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hostcore.errors import HostcoreError, NkeyError
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.native.par import ProviderArchive, create_par, read_par

__all__ = ["register", "run_par_create", "run_par_inspect"]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _key(seed: str | None, kind: KeyKind, what: str) -> tuple[KeyPair, bool]:
    """The key pair of `seed` (which must be of `kind`), or a fresh one; second item: generated."""
    if seed is None:
        return KeyPair.generate(kind), True
    pair = KeyPair.from_seed(seed.strip())
    if pair.kind is not kind:
        raise NkeyError(f"the {what} seed must be a {kind.name.lower()} key, not {pair.kind.name.lower()}")
    return pair, False


def run_par_create(args: argparse.Namespace) -> int:
    if len(args.arch) != len(args.binary):
        return _fail("give one --binary for each --arch, in the same order")
    binaries: dict[str, bytes] = {}
    for target, path in zip(args.arch, args.binary):
        try:
            binaries[target] = Path(path).read_bytes()
        except OSError as e:
            return _fail(f"cannot read {path}: {e.strerror or e}")
    try:
        issuer, new_issuer = _key(args.issuer, KeyKind.ACCOUNT, "issuer")
        subject, new_subject = _key(args.subject, KeyKind.SERVICE, "subject")
    except NkeyError as e:
        return _fail(e.wire)
    destination = Path(args.destination)
    compress = args.compress or destination.name.endswith(".gz")
    data = create_par(binaries=binaries, name=args.name, vendor=args.vendor, capid=args.capid, issuer=issuer,
                      subject=subject, rev=args.rev, ver=args.ver, compress=compress)
    try:
        destination.write_bytes(data)
    except OSError as e:
        return _fail(f"cannot write {destination}: {e.strerror or e}")
    print(f"Successfully created {destination}")
    print(f"Provider public key: {subject.public_key}")
    # Generated keys are shown once so that the provider can be re-issued under the same identity.
    if new_subject:
        print(f"Generated subject (service) seed, keep it to re-sign this provider: {subject.seed}")
    if new_issuer:
        print(f"Generated issuer (account) seed: {issuer.seed}")
    return 0


def _inspect_map(par: ProviderArchive) -> dict[str, Any]:
    c = par.claims
    return {
        "name": c.name,
        "public_key": c.public_key,
        "issuer": c.issuer,
        "capability_contract_id": c.capid,
        "vendor": c.vendor,
        "version": c.ver,
        "revision": c.revision,
        "targets": sorted(par.targets),
        "target_hashes": dict(sorted(c.target_hashes.items())),
    }


def run_par_inspect(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror or e}")
    try:
        par = read_par(data)
    except HostcoreError as e:
        return _fail(e.wire)
    info = _inspect_map(par)
    if args.output == "json":
        print(json.dumps(info))
        return 0
    rows = [
        ("Public Key", info["public_key"]),
        ("Capability Contract ID", info["capability_contract_id"]),
        ("Vendor", info["vendor"]),
        ("Version", info["version"] or "None"),
        ("Revision", str(info["revision"])),
        ("Issuer", info["issuer"]),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"{info['name'] or 'Unnamed Provider'} - Provider Archive")
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print("  Supported Architecture Targets")
    for target in info["targets"]:
        print(f"    {target}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `par` (create, inspect) commands to a CLI's subparsers."""
    par = subparsers.add_parser("par", help="create or inspect provider archives")
    par_sub = par.add_subparsers(dest="par_command", required=True)

    create = par_sub.add_parser("create", help="build a signed provider archive")
    create.add_argument("--name", required=True, help="provider name")
    create.add_argument("--vendor", required=True, help="vendor name")
    create.add_argument("--capid", required=True, help="capability contract id, e.g. wasmcloud:keyvalue")
    create.add_argument("--arch", action="append", required=True, help="target, e.g. x86_64-linux (repeat)")
    create.add_argument("--binary", action="append", required=True, help="executable for the --arch at the same position")
    create.add_argument("--issuer", help="account seed (SA…); generated if omitted")
    create.add_argument("--subject", help="service seed (SV…), the provider's identity; generated if omitted")
    create.add_argument("--rev", type=int, help="revision number")
    create.add_argument("--ver", help="human-readable version")
    create.add_argument("--compress", action="store_true", help="gzip the archive (implied by a .gz name)")
    create.add_argument("-o", "--destination", required=True, help="output file, e.g. provider.par.gz")
    create.set_defaults(func=run_par_create)

    inspect = par_sub.add_parser("inspect", help="verify a provider archive and show its claims")
    inspect.add_argument("file", help=".par or .par.gz file")
    inspect.add_argument("-o", "--output", choices=("text", "json"), default="text",
                         help="output format (default: text)")
    inspect.set_defaults(func=run_par_inspect)
