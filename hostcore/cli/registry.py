"""`reg push` / `reg pull`: move actor modules to and from an OCI registry, like `wash reg`.

Everything comes from flags (only hostcore/config/ reads the environment). The blob cache lives
in a temporary directory removed on exit, so these commands leave nothing behind. Handlers return
the exit code: 0 on success, 1 with a one-line `error: …` on stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from hostcore.errors import HostcoreError
from hostcore.native.oci import (
    WASM_LAYER,
    OciClient,
    OciSettings,
    RegistryCredentials,
    parse_reference,
)

__all__ = ["register", "run_reg_pull", "run_reg_push"]

_PROGRESS_MIN = 1024 * 1024  # show upload progress for files larger than this
_MIB = 1024 * 1024


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    """The flags every command that talks to a registry takes (reg push/pull, claims inspect)."""
    p.add_argument("--insecure", action="store_true", help="talk plain HTTP to the reference's registry")
    p.add_argument("-u", "--user", help="registry user name (HTTP Basic, also sent to token services)")
    p.add_argument("-p", "--password", help="registry password")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the registry (default 30)")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `reg push REF FILE` and `reg pull REF -o FILE` to the `hostcore` parser."""
    reg = sub.add_parser("reg", help="push or pull actor modules to/from an OCI registry")
    cmds = reg.add_subparsers(dest="reg_command", required=True)
    p = cmds.add_parser("push", help="push a module file to REF")
    p.add_argument("ref", help="OCI reference to push to, e.g. 127.0.0.1:5000/echo:0.3.4")
    p.add_argument("file", type=Path, help="the signed .wasm module")
    p.add_argument("--media-type", default=WASM_LAYER, help=f"layer media type (default {WASM_LAYER})")
    add_registry_flags(p)
    p.set_defaults(func=run_reg_push)
    p = cmds.add_parser("pull", help="pull the module REF names into a file")
    p.add_argument("ref", help="OCI reference to pull, e.g. 127.0.0.1:5000/echo:0.3.4")
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write the module to")
    p.add_argument("--allow-latest", action="store_true", help="allow ':latest' and tag-less references")
    add_registry_flags(p)
    p.set_defaults(func=run_reg_pull)


def _settings(args: argparse.Namespace, cache_dir: Path, *, allow_latest: bool = False) -> OciSettings:
    """Settings from the flags. Raises OciReferenceInvalid for a bad REF."""
    registry = parse_reference(args.ref).registry
    creds = {}
    if args.user is not None or args.password is not None:
        creds[registry] = RegistryCredentials(username=args.user or "", password=args.password or "")
    return OciSettings(cache_dir=cache_dir, allow_latest=allow_latest, credentials=creds,
                       allowed_insecure=(registry,) if args.insecure else (), timeout_s=args.timeout)


def _progress(total: int) -> Callable[[int, int], None] | None:
    if total <= _PROGRESS_MIN:
        return None

    def show(sent: int, size: int) -> None:
        end = "\n" if sent >= size else ""
        print(f"\rUploading {sent * 100 // max(size, 1):3d}% ({sent / _MIB:.1f}/{size / _MIB:.1f} MiB)",
              end=end, file=sys.stderr, flush=True)

    return show


def run_reg_push(args: argparse.Namespace) -> int:
    """`reg push REF FILE`: prints `Pushed REF: DIGEST`."""
    try:
        content = args.file.read_bytes()
    except OSError as err:
        return _fail(f"cannot read {args.file}: {err.strerror or err}")
    try:
        with tempfile.TemporaryDirectory(prefix="hostcore-reg-") as tmp, \
                OciClient(_settings(args, Path(tmp))) as client:
            digest = client.push(args.ref, content, media_type=args.media_type, progress=_progress(len(content)))
    except HostcoreError as err:
        return _fail(err.wire)
    print(f"Pushed {args.ref}: {digest}")
    return 0


def pull_module(args: argparse.Namespace) -> bytes:
    """The module at `args.ref` (flags as for `reg pull`), through a throw-away cache.
    Raises HostcoreError subclasses with a user-facing `wire` text."""
    with tempfile.TemporaryDirectory(prefix="hostcore-reg-") as tmp, \
            OciClient(_settings(args, Path(tmp), allow_latest=getattr(args, "allow_latest", False))) as client:
        return client.pull(args.ref).content


def run_reg_pull(args: argparse.Namespace) -> int:
    """`reg pull REF -o FILE`: writes the module, prints `Pulled REF: DIGEST (N bytes) to FILE`."""
    try:
        with tempfile.TemporaryDirectory(prefix="hostcore-reg-") as tmp, \
                OciClient(_settings(args, Path(tmp), allow_latest=args.allow_latest)) as client:
            artifact = client.pull(args.ref)
    except HostcoreError as err:
        return _fail(err.wire)
    try:
        args.output.write_bytes(artifact.content)
    except OSError as err:
        return _fail(f"cannot write {args.output}: {err.strerror or err}")
    print(f"Pulled {args.ref}: {artifact.digest} ({artifact.size} bytes) to {args.output}")
    return 0
