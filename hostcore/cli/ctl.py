"""`ctl …` and `call …`: the control interface from the command line, like `wash ctl` / `wash call`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import nats

from hostcore.config import ClientConfig, add_ctl_flags, load_client_config
from hostcore.control.client import ControlClient
from hostcore.control.linkdefs import LinkDefinition
from hostcore.errors import HostcoreError, NkeyError
from hostcore.native.nkeys import KeyPair
from hostcore.natsconn import ignore_errors

__all__ = ["register", "json_to_msgpack", "msgpack_to_json"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", help="NATS URL (default: WASMCLOUD_NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--lattice", "-x", dest="lattice_prefix")
    p.add_argument("--timeout-ms", type=int)
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_ctl_flags(p)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ctl = sub.add_parser("ctl", help="talk to the lattice's control interface").add_subparsers(dest="ctl_command")
    get = ctl.add_parser("get", help="query hosts, inventories, claims").add_subparsers(dest="what")
    p = get.add_parser("hosts", help="ping every host in the lattice")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _get_hosts))
    p = get.add_parser("inventory", help="actors and providers of one host")
    p.add_argument("host_id")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _get_inventory))
    p = get.add_parser("claims", help="claims of the actors in the lattice")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _get_claims))
    p = get.add_parser("links", help="link definitions in the lattice")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _get_links))

    link = ctl.add_parser("link", help="define or delete links").add_subparsers(dest="what")
    p = link.add_parser("put", help="link an actor to a provider")
    p.add_argument("actor_id")
    p.add_argument("provider_id")
    p.add_argument("contract_id")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE")
    p.add_argument("-l", "--link-name", default="default")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _link_put))
    p = link.add_parser("del", help="delete a link")
    p.add_argument("actor_id")
    p.add_argument("contract_id")
    p.add_argument("-l", "--link-name", default="default")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _link_del))

    update = ctl.add_parser("update", help="live-update an actor").add_subparsers(dest="what")
    p = update.add_parser("actor")
    p.add_argument("host_id")
    p.add_argument("actor_id")
    p.add_argument("new_actor_ref")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _update_actor))

    scale = ctl.add_parser("scale", help="scale an actor on a host").add_subparsers(dest="what")
    p = scale.add_parser("actor")
    p.add_argument("host_id")
    p.add_argument("actor_id")
    p.add_argument("actor_ref")
    p.add_argument("-c", "--count", type=int, default=1)
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _scale_actor))

    start = ctl.add_parser("start", help="launch an actor on a host").add_subparsers(dest="what")
    p = start.add_parser("actor")
    p.add_argument("actor_ref")
    p.add_argument("--host-id", help="host to start on (default: the first bidder of an auction)")
    p.add_argument("--constraint", action="append", default=[], metavar="KEY=VALUE",
                   help="label the auction's host must have (repeat)")
    p.add_argument("-c", "--count", type=int, default=1)
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _start_actor))

    p = start.add_parser("provider")
    p.add_argument("provider_ref", help="OCI ref, file:// PAR, or builtin:httpserver / builtin:keyvalue")
    p.add_argument("-l", "--link-name", default="default")
    p.add_argument("--host-id", help="host to start on (default: the first bidder of an auction)")
    p.add_argument("--config-json", help="file whose JSON is passed to the provider as config_json")
    p.add_argument("--constraint", action="append", default=[], metavar="KEY=VALUE")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _start_provider))

    stop = ctl.add_parser("stop", help="stop an actor, a provider or a host").add_subparsers(dest="what")
    p = stop.add_parser("provider")
    p.add_argument("host_id")
    p.add_argument("provider_id")
    p.add_argument("link_name")
    p.add_argument("contract_id")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _stop_provider))
    p = stop.add_parser("actor")
    p.add_argument("host_id")
    p.add_argument("actor_id")
    p.add_argument("-c", "--count", type=int, default=0, help="instances to stop (0 = all)")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _stop_actor))
    p = stop.add_parser("host")
    p.add_argument("host_id")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _stop_host))

    p = sub.add_parser("call", help="invoke an actor (JSON payload converted to msgpack, like wash call)")
    p.add_argument("actor_id")
    p.add_argument("operation")
    p.add_argument("payload", nargs="?", default="{}", help="JSON payload")
    p.add_argument("--cluster-seed", help="cluster seed to sign with (default WASMCLOUD_CLUSTER_SEED)")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _call))


def _run(args: argparse.Namespace, action: Callable[[ControlClient, ClientConfig, argparse.Namespace], Awaitable[Any]]) -> int:
    cfg = load_client_config(nats_url=args.nats_url, lattice_prefix=args.lattice_prefix, timeout_ms=args.timeout_ms,
                             cluster_seed=getattr(args, "cluster_seed", None), flags=args)

    async def go() -> Any:
        async with asyncio.timeout(cfg.timeout_s + 1):
            nc = await nats.connect(**cfg.ctl.connect_kwargs(ignore_errors), connect_timeout=cfg.timeout_s, allow_reconnect=False)
        try:
            return await action(ControlClient(nc, lattice_prefix=cfg.lattice_prefix,
                                              ctl_topic_prefix=cfg.ctl_topic_prefix, timeout_s=cfg.timeout_s), cfg, args)
        finally:
            await nc.close()

    try:
        result = asyncio.run(go())
    except HostcoreError as err:
        print(f"error: {err.wire}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, nats.errors.Error) as err:
        print(f"error: cannot reach NATS at {cfg.nats_url}: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


def _emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    print(json.dumps(obj, indent=2) if args.output == "json" else text)


async def _get_hosts(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    hosts = await c.ping_hosts(wait_s=cfg.timeout_s)
    lines = [f"{'Host ID':<58} {'Friendly name':<28} Uptime"]
    lines += [f"{h['id']:<58} {h['friendly_name']:<28} {h['uptime_human']}" for h in hosts]
    _emit(args, {"hosts": hosts}, "\n".join(lines))
    return 0


async def _get_inventory(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    inv = await c.get_inventory(args.host_id)
    lines = [f"Host {inv.get('host_id', args.host_id)}", f"{'Actor ID':<58} {'Name':<20} {'Count':>5}  Image ref"]
    lines += [f"{a['id']:<58} {a['name']:<20} {len(a['instances']):>5}  {a['image_ref']}" for a in inv.get("actors", [])]
    _emit(args, inv, "\n".join(lines))
    return 0


async def _get_claims(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    claims = await c.get_claims()
    lines = [f"{'Subject':<58} {'Name':<20} Caps"] + [f"{x['sub']:<58} {x['name']:<20} {x['caps']}" for x in claims]
    _emit(args, {"claims": claims}, "\n".join(lines))
    return 0


async def _get_links(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    links = await c.get_links()
    lines = [f"{'Actor ID':<58} {'Provider ID':<58} {'Contract':<24} Link"]
    lines += [f"{x['actor_id']:<58} {x['provider_id']:<58} {x['contract_id']:<24} {x['link_name']}" for x in links]
    _emit(args, {"links": links}, "\n".join(lines))
    return 0


async def _link_put(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    values = {}
    for item in args.values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: expected KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        values[key] = value
    link = LinkDefinition(actor_id=args.actor_id, provider_id=args.provider_id, link_name=args.link_name,
                          contract_id=args.contract_id, values=values)
    return _ack(args, await c.put_link(link), f"Published link ({args.actor_id}) <-> ({args.provider_id})")


async def _link_del(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    ack = await c.del_link(args.actor_id, args.contract_id, args.link_name)
    return _ack(args, ack, f"Deleted link for {args.actor_id} on {args.contract_id} ({args.link_name})")


async def _update_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    ack = await c.update_actor(args.host_id, args.actor_id, args.new_actor_ref)
    return _ack(args, ack, f"Actor {args.actor_id} updated to {args.new_actor_ref}")


def _ack(args: argparse.Namespace, ack: Any, ok_text: str) -> int:
    if not ack.accepted and args.output == "text":
        print(f"error: {ack.error}", file=sys.stderr)
        return 1
    _emit(args, {"accepted": ack.accepted, "error": ack.error}, ok_text)
    return 0 if ack.accepted else 1


async def _scale_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    ack = await c.scale_actor(args.host_id, args.actor_id, args.actor_ref, args.count)
    return _ack(args, ack, f"Request to scale actor {args.actor_id} to {args.count} instances received")


async def _start_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    host_id = args.host_id
    if not host_id:  # like wash: auction first, take the first bidder
        constraints = dict(item.partition("=")[::2] for item in args.constraint)
        bids = await c.auction_actor(args.actor_ref, constraints, wait_s=cfg.timeout_s)
        if not bids:
            print("error: no host satisfied the auction's constraints", file=sys.stderr)
            return 1
        host_id = bids[0]["host_id"]
    ack = await c.launch_actor(host_id, args.actor_ref, args.count)
    return _ack(args, ack, f"Actor {args.actor_ref} being scheduled on host {host_id}")


async def _start_provider(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    config = ""
    if args.config_json:
        try:
            config = json.dumps(json.loads(open(args.config_json, encoding="utf-8").read()))
        except (OSError, ValueError) as err:
            print(f"error: cannot use {args.config_json}: {err}", file=sys.stderr)
            return 2
    host_id = args.host_id
    if not host_id:
        constraints = dict(item.partition("=")[::2] for item in args.constraint)
        bids = await c.auction_provider(args.provider_ref, args.link_name, constraints, wait_s=cfg.timeout_s)
        if not bids:
            print("error: no host satisfied the auction (constraints, or already running there)", file=sys.stderr)
            return 1
        host_id = bids[0]["host_id"]
    ack = await c.launch_provider(host_id, args.provider_ref, args.link_name, config)
    return _ack(args, ack, f"Provider {args.provider_ref} ({args.link_name}) being started on host {host_id}")


async def _stop_provider(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    ack = await c.stop_provider(args.host_id, args.provider_id, args.link_name, args.contract_id)
    return _ack(args, ack, f"Stopped provider {args.provider_id} ({args.link_name})")


async def _stop_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    ack = await c.stop_actor(args.host_id, args.actor_id, args.count)
    return _ack(args, ack, f"Stopped actor {args.actor_id}")


async def _stop_host(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    ack = await c.stop_host(args.host_id)
    return _ack(args, ack, f"Host {args.host_id} acknowledged stop request")


def json_to_msgpack(text: str) -> bytes:
    """The JSON payload as msgpack, as `wash call` sends it (strings stay strings)."""
    return bytes(msgpack.packb(json.loads(text), use_bin_type=True))


def msgpack_to_json(data: bytes) -> Any:
    """Best-effort readable form of a msgpack reply: bytes become text when they are UTF-8."""
    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            try:
                return v.decode()
            except UnicodeDecodeError:
                return list(v)
        if isinstance(v, dict):
            return {str(plain(k)): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    try:
        return plain(msgpack.unpackb(data, raw=False, strict_map_key=False))
    except Exception:  # noqa: BLE001 -- not msgpack: show the bytes as they are
        return plain(data)


async def _call(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    if not cfg.cluster_seed:
        print("error: a cluster seed is needed to sign the invocation (--cluster-seed or WASMCLOUD_CLUSTER_SEED)",
              file=sys.stderr)
        return 2
    try:
        signer = KeyPair.from_seed(cfg.cluster_seed)
        payload = json_to_msgpack(args.payload)
    except NkeyError as err:
        print(f"error: bad cluster seed: {err.wire}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(f"error: payload is not JSON: {err}", file=sys.stderr)
        return 2
    resp = await c.call_actor(signer, args.actor_id, args.operation, payload, timeout_s=cfg.timeout_s)
    if resp.error:
        print(f"error: {resp.error}", file=sys.stderr)
        return 1
    _emit(args, msgpack_to_json(resp.msg), json.dumps(msgpack_to_json(resp.msg)))
    return 0
