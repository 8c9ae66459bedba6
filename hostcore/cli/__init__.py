"""The command line: the only part of hostcore that prints. `_DESCRIPTION` is what users see."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hostcore import __version__
from hostcore.cli import claims, ctl, par, registry
from hostcore.config import build_parser, build_worker_parser, load_config, load_worker_config
from hostcore.errors import ConfigError

__all__ = ["main"]

_DESCRIPTION = """\
Run a wasmCloud-compatible host (`up`, the default command), or drive the lattice it belongs to:
`ctl` (hosts, actors, providers, links, events) and `call` find the local host with no flags.
`claims`, `keys`, `reg` and `par` handle modules, keys, registries and provider archives;
`worker` runs instances for a host on another machine."""


def _run_up(args: argparse.Namespace) -> int:
    from hostcore.node import run_node  # imports Thespian and the actor tree only when needed

    try:
        config = load_config(args.up_argv)
    except ConfigError as err:
        print(f"hostcore: {err.wire}", file=sys.stderr)
        return 2
    return run_node(config)


def _run_worker(args: argparse.Namespace) -> int:
    from hostcore.worker import run_worker  # imports Thespian and ActorModule only when needed

    try:
        config = load_worker_config(args.worker_argv)
    except ConfigError as err:
        print(f"hostcore: {err.wire}", file=sys.stderr)
        return 2
    return run_worker(config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostcore", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hostcore {__version__}")
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("up", help="run a host node (the default command)", parents=[build_parser()],
                        add_help=True)
    up.set_defaults(func=_run_up)
    worker = sub.add_parser("worker", help="join a host's Thespian convention and run the instances it places here",
                            parents=[build_worker_parser()], add_help=True)
    worker.set_defaults(func=_run_worker)
    claims.register(sub)
    ctl.register(sub)
    registry.register(sub)
    par.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version"):
        args_list = ["up", *args_list]
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command == "up":
        args.up_argv = args_list[1:]
    elif args.command == "worker":
        args.worker_argv = args_list[1:]
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args))
