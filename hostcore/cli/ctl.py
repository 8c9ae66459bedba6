"""`ctl …` and `call …`: the control interface from the command line, like `wash ctl` / `wash call`.

With no flags the commands reach the local host (its context file, hostcore.context). Commands
that change the lattice wait for the events that report the outcome (hostcore.cli.outcome)
unless given --skip-wait, and exit 1 with the host's error text when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors

from hostcore.cli import watch
from hostcore.cli.outcome import (
    EventStream,
    ExpectActorStarts,
    ExpectActorStops,
    ExpectHostStopped,
    Expectation,
    ExpectProviderStart,
    ExpectProviderStop,
    ExpectUpdates,
    await_outcome,
)
from hostcore.cli.session import CliControlClient, CliError, NoResponders, connect, explain, hint_for
from hostcore.config import ClientConfig, add_ctl_flags, load_client_config
from hostcore.control.client import ControlClient, ControlTimeout
from hostcore.control.payloads import json_to_msgpack, msgpack_to_json
from hostcore.errors import ConfigError, HostcoreError, NkeyError
from hostcore.native.nkeys import KeyPair
from hostcore.wire.linkdefs import LinkDefinition

__all__ = ["register"]

Action = Callable[[ControlClient, ClientConfig, argparse.Namespace], Awaitable[int]]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", metavar="URL",
                   help="NATS server of the lattice [WASMCLOUD_NATS_URL, or WASMCLOUD_CTL_HOST + WASMCLOUD_CTL_PORT] "
                        "(default: the running local host's, found in ~/.hostcore [HOSTCORE_DATA_DIR], else "
                        "nats://127.0.0.1:4222)")
    p.add_argument("--lattice", "-x", dest="lattice_prefix", metavar="PREFIX",
                   help="lattice prefix [WASMCLOUD_LATTICE_PREFIX] (default: the local host's, else default)")
    p.add_argument("--timeout-ms", type=int, metavar="MS",
                   help="how long a control request waits for its reply [WASMCLOUD_CTL_TIMEOUT_MS] (default: 2000)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default: text)")
    add_ctl_flags(p)


def _waiting(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-wait", action="store_true",
                   help="return once the host accepted the request, without waiting for the outcome")
    p.add_argument("--wait-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the outcome (default: 60)")


def _host_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("host_id", help="the host's id, N… (`hostcore ctl get hosts` lists them)")


def _cmd(sub: Any, name: str, action: Action, help: str, *, waits: bool = False) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=lambda a: _run(a, action))
    if waits:
        _waiting(p)
    return p


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ctl_parser = sub.add_parser("ctl", help="talk to the lattice's control interface",
                                description="talk to the lattice's control interface")
    ctl_parser.set_defaults(func=lambda a: _usage(ctl_parser))
    ctl = ctl_parser.add_subparsers(dest="ctl_command")
    get_parser = ctl.add_parser("get", help="query hosts, inventories, claims, links")
    get_parser.set_defaults(func=lambda a: _usage(get_parser))
    get = get_parser.add_subparsers(dest="what")
    _common(_cmd(get, "hosts", _get_hosts, "ping every host in the lattice"))
    p = _cmd(get, "inventory", _get_inventory, "actors and providers of one host")
    _host_id(p)
    _common(p)
    _common(_cmd(get, "claims", _get_claims, "claims of the actors and providers in the lattice"))
    _common(_cmd(get, "links", _get_links, "link definitions in the lattice"))

    p = ctl.add_parser("watch", help="print the lattice's events as they happen",
                       description="print the lattice's events as they happen, one line each, until Ctrl-C")
    p.add_argument("--type", "-t", dest="types", action="append", default=[], metavar="TYPE",
                   help="only events of this type, e.g. actor_started or actor_* (repeatable)")
    p.add_argument("--host-id", dest="hosts", action="append", default=[], metavar="HOST_ID",
                   help="only events from this host (an id or its prefix; repeatable)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N events (default: run until Ctrl-C)")
    _common(p)
    p.set_defaults(func=_run_watch)

    link = ctl.add_parser("link", help="define or delete links").add_subparsers(dest="what")
    p = _cmd(link, "put", _link_put, "link an actor to a provider")
    p.add_argument("actor_id", help="the actor's public key, M…")
    p.add_argument("provider_id", help="the provider's public key, V…")
    p.add_argument("contract_id", help="capability contract, e.g. wasmcloud:httpserver")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE", help="link values for the provider, e.g. PORT=8080")
    p.add_argument("-l", "--link-name", default="default", help="link name (default: default)")
    _common(p)
    p = _cmd(link, "del", _link_del, "delete a link")
    p.add_argument("actor_id", help="the actor's public key, M…")
    p.add_argument("contract_id", help="capability contract, e.g. wasmcloud:httpserver")
    p.add_argument("-l", "--link-name", default="default", help="link name (default: default)")
    _common(p)

    update = ctl.add_parser("update", help="live-update an actor").add_subparsers(dest="what")
    p = _cmd(update, "actor", _update_actor, "swap every running instance of an actor to a newer revision",
             waits=True)
    _host_id(p)
    p.add_argument("actor_id", help="the actor's public key, M…")
    p.add_argument("new_actor_ref", help="OCI reference or file:// path of the new revision")
    _common(p)

    scale = ctl.add_parser("scale", help="scale an actor on a host").add_subparsers(dest="what")
    p = _cmd(scale, "actor", _scale_actor, "run exactly COUNT instances of an actor on a host", waits=True)
    _host_id(p)
    p.add_argument("actor_id", help="the actor's public key, M…")
    p.add_argument("actor_ref", help="OCI reference or file:// path of the module (\"\" = the running one's)")
    p.add_argument("-c", "--count", type=int, default=1, help="instances wanted (default: 1; 0 stops them all)")
    _common(p)

    start = ctl.add_parser("start", help="launch an actor or a provider").add_subparsers(dest="what")
    p = _cmd(start, "actor", _start_actor, "launch instances of an actor", waits=True)
    p.add_argument("actor_ref", help="OCI reference, or file:///path/to/actor.wasm (the host needs --allow-file-load)")
    p.add_argument("--host-id", help="host to start on (default: the first bidder of an auction)")
    p.add_argument("--constraint", action="append", default=[], metavar="KEY=VALUE",
                   help="label the auction's host must have (repeatable)")
    p.add_argument("-c", "--count", type=int, default=1, help="instances to start (default: 1)")
    _common(p)

    p = _cmd(start, "provider", _start_provider, "launch a capability provider", waits=True)
    p.add_argument("provider_ref", help="OCI reference, file:// PAR, or builtin:httpserver / builtin:keyvalue")
    p.add_argument("-l", "--link-name", default="default", help="link name (default: default)")
    p.add_argument("--host-id", help="host to start on (default: the first bidder of an auction)")
    p.add_argument("--config-json", metavar="FILE", help="file whose JSON is passed to the provider as config_json")
    p.add_argument("--constraint", action="append", default=[], metavar="KEY=VALUE",
                   help="label the auction's host must have (repeatable)")
    _common(p)

    stop = ctl.add_parser("stop", help="stop an actor, a provider or a host").add_subparsers(dest="what")
    p = _cmd(stop, "provider", _stop_provider, "stop a provider on a host", waits=True)
    _host_id(p)
    p.add_argument("provider_id", help="the provider's public key, V…")
    p.add_argument("link_name", nargs="?", default="default", help="its link name (default: default)")
    p.add_argument("contract_id", nargs="?", default="", help="its contract id (optional)")
    _common(p)
    p = _cmd(stop, "actor", _stop_actor, "stop instances of an actor on a host", waits=True)
    _host_id(p)
    p.add_argument("actor_id", help="the actor's public key, M…")
    p.add_argument("-c", "--count", type=int, default=0, help="instances to stop (default: 0 = all)")
    _common(p)
    p = _cmd(stop, "host", _stop_host, "stop a host (its actors and providers first)", waits=True)
    _host_id(p)
    _common(p)

    p = _cmd(sub, "call", _call, "invoke an actor (the JSON payload is sent as msgpack, like wash call)")
    p.add_argument("actor_id", help="the actor's public key, M…")
    p.add_argument("operation", help="operation, e.g. HttpServer.HandleRequest")
    p.add_argument("payload", nargs="?", default="{}", help="JSON payload (default: {})")
    p.add_argument("--cluster-seed", metavar="SEED",
                   help="cluster seed, SC…, to sign with [WASMCLOUD_CLUSTER_SEED] (default: the local host's)")
    _common(p)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _client_config(args: argparse.Namespace) -> ClientConfig:
    return load_client_config(nats_url=args.nats_url, lattice_prefix=args.lattice_prefix, timeout_ms=args.timeout_ms,
                              cluster_seed=getattr(args, "cluster_seed", None), flags=args)


def _run(args: argparse.Namespace, action: Action) -> int:
    """Run one command; expected failures become one `error: …` line on stderr and exit code 1."""
    try:
        cfg = _client_config(args)
    except ConfigError as err:
        print(f"error: {err.wire}", file=sys.stderr)
        return 2

    async def go() -> int:
        nc = await connect(cfg)
        try:
            return await action(CliControlClient(nc, lattice_prefix=cfg.lattice_prefix,
                                                 ctl_topic_prefix=cfg.ctl_topic_prefix, timeout_s=cfg.timeout_s),
                                cfg, args)
        finally:
            await nc.close()

    try:
        return int(asyncio.run(go()) or 0)
    except NoResponders as err:
        print(f"error: {explain(err, cfg.lattice_prefix, f'{cfg.ctl_topic_prefix}.{cfg.lattice_prefix}')}",
              file=sys.stderr)
    except ControlTimeout as err:
        print(f"error: {err.wire} (the host may be busy; --timeout-ms waits longer)", file=sys.stderr)
    except HostcoreError as err:
        print(f"error: {hint_for(err.wire)}", file=sys.stderr)
    except (nats.errors.Error, OSError) as err:  # the connection broke after it was made
        print(f"error: NATS connection to {cfg.nats_url} failed: {err or type(err).__name__}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


def _run_watch(args: argparse.Namespace) -> int:
    try:
        cfg = _client_config(args)
        return asyncio.run(watch.watch(cfg, args))
    except ConfigError as err:
        print(f"error: {err.wire}", file=sys.stderr)
        return 2
    except HostcoreError as err:
        print(f"error: {err.wire}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    print(json.dumps(obj, indent=2) if args.output == "json" else text)


async def _settle(args: argparse.Namespace, events: EventStream, expect: Expectation, what: str) -> None:
    if not args.skip_wait:
        await await_outcome(events, expect, timeout_s=args.wait_timeout, what=what)


def _instances(inv: dict[str, Any], actor_id: str) -> int:
    return sum(len(a.get("instances", [])) for a in inv.get("actors", []) if a.get("id") == actor_id)


# --- queries ------------------------------------------------------------------------------------


async def _get_hosts(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    hosts = await c.ping_hosts(wait_s=cfg.timeout_s)
    lines = [f"{'Host ID':<58} {'Friendly name':<28} Uptime"]
    lines += [f"{h['id']:<58} {h['friendly_name']:<28} {h['uptime_human']}" for h in hosts]
    if not hosts and args.output == "text":
        lines.append(f"(no host answered in lattice {cfg.lattice_prefix} at {cfg.nats_url})")
    _emit(args, {"hosts": hosts}, "\n".join(lines))
    return 0


async def _get_inventory(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    inv = await c.get_inventory(args.host_id)
    lines = [f"Host {inv.get('host_id', args.host_id)} ({inv.get('friendly_name', '')})", "",
             f"{'Actor ID':<58} {'Name':<20} {'Count':>5}  Image ref"]
    lines += [f"{a['id']:<58} {a['name'] or '':<20} {len(a['instances']):>5}  {a['image_ref'] or ''}"
              for a in inv.get("actors", [])] or ["(no actors)"]
    lines += ["", f"{'Provider ID':<58} {'Name':<20} {'Link':<10} {'Contract':<24} Image ref"]
    lines += [f"{p['id']:<58} {p.get('name') or '':<20} {p['link_name']:<10} {p.get('contract_id') or '':<24} "
              f"{p.get('image_ref') or ''}" for p in inv.get("providers", [])] or ["(no providers)"]
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
    lines += [f"{x.actor_id:<58} {x.provider_id:<58} {x.contract_id:<24} {x.link_name}" for x in links]
    _emit(args, {"links": [x.to_map() for x in links]}, "\n".join(lines))
    return 0


# --- links --------------------------------------------------------------------------------------


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
    await c.put_link(link)
    _emit(args, {"accepted": True, "error": ""}, f"Published link ({args.actor_id}) <-> ({args.provider_id})")
    return 0


async def _link_del(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    await c.del_link(args.actor_id, args.contract_id, args.link_name)
    _emit(args, {"accepted": True, "error": ""},
          f"Deleted link for {args.actor_id} on {args.contract_id} ({args.link_name})")
    return 0


# --- commands that wait for their outcome ---------------------------------------------------------


async def _update_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    running = _instances(await c.get_inventory(args.host_id), args.actor_id)
    if not running:
        raise CliError(f"actor {args.actor_id} is not running on host {args.host_id}; nothing to update")
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.update_actor(args.host_id, args.actor_id, args.new_actor_ref)
        await _settle(args, events, ExpectUpdates(args.host_id, args.actor_id, running),
                      f"updating {running} instances of {args.actor_id}")
    _emit(args, {"accepted": True, "error": "", "instances": running},
          f"Actor {args.actor_id} updated to {args.new_actor_ref} ({running} instances)")
    return 0


async def _scale_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    running = _instances(await c.get_inventory(args.host_id), args.actor_id)
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.scale_actor(args.host_id, args.actor_id, args.actor_ref, args.count)
        what = f"scaling {args.actor_id} on host {args.host_id} from {running} to {args.count}"
        if args.count > running:
            await _settle(args, events, ExpectActorStarts(args.host_id, args.actor_ref, args.count - running,
                                                          key=args.actor_id), what)
        elif args.count < running:
            await _settle(args, events, ExpectActorStops(args.host_id, args.actor_id, running - args.count), what)
    text = (f"Request to scale actor {args.actor_id} to {args.count} instances received" if args.skip_wait
            else f"Actor {args.actor_id} runs {args.count} instance(s) on host {args.host_id}")
    _emit(args, {"accepted": True, "error": "", "count": args.count}, text)
    return 0


async def _auction(c: ControlClient, cfg: ClientConfig, bids: Awaitable[list[dict[str, Any]]]) -> str:
    found = await bids
    if not found:
        raise CliError(f"no host in lattice {cfg.lattice_prefix} satisfied the auction "
                       "(its constraints, or the provider already runs there)")
    return str(found[0]["host_id"])


def _constraints(items: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


async def _start_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    host_id = args.host_id or await _auction(  # like wash: auction first, take the first bidder
        c, cfg, c.auction_actor(args.actor_ref, _constraints(args.constraint), wait_s=cfg.timeout_s))
    expect = ExpectActorStarts(host_id, args.actor_ref, max(args.count, 1))
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.launch_actor(host_id, args.actor_ref, args.count)
        await _settle(args, events, expect, f"starting {args.actor_ref} on host {host_id}")
    text = (f"Actor {args.actor_ref} being scheduled on host {host_id}" if args.skip_wait
            else f"Actor {expect.key} ({args.actor_ref}) started on host {host_id}: {expect.started} instance(s)")
    _emit(args, {"accepted": True, "error": "", "host_id": host_id, "actor_id": expect.key}, text)
    return 0


async def _start_provider(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    config = ""
    if args.config_json:
        try:
            with open(args.config_json, encoding="utf-8") as f:
                config = json.dumps(json.load(f))
        except (OSError, ValueError) as err:
            raise CliError(f"cannot use {args.config_json}: {err}") from None
    host_id = args.host_id or await _auction(c, cfg, c.auction_provider(
        args.provider_ref, args.link_name, _constraints(args.constraint), wait_s=cfg.timeout_s))
    expect = ExpectProviderStart(host_id, args.provider_ref, args.link_name)
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.launch_provider(host_id, args.provider_ref, args.link_name, config)
        await _settle(args, events, expect, f"starting provider {args.provider_ref} on host {host_id}")
    text = (f"Provider {args.provider_ref} ({args.link_name}) being started on host {host_id}" if args.skip_wait
            else f"Provider {expect.key} ({args.provider_ref}, link {args.link_name}) started on host {host_id}")
    _emit(args, {"accepted": True, "error": "", "host_id": host_id, "provider_id": expect.key}, text)
    return 0


async def _stop_provider(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    inv = await c.get_inventory(args.host_id)
    if not any(p["id"] == args.provider_id and p["link_name"] == args.link_name for p in inv.get("providers", [])):
        raise CliError(f"provider {args.provider_id} (link {args.link_name}) is not running on host {args.host_id}")
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.stop_provider(args.host_id, args.provider_id, args.link_name, args.contract_id)
        await _settle(args, events, ExpectProviderStop(args.host_id, args.provider_id, args.link_name),
                      f"stopping provider {args.provider_id}")
    _emit(args, {"accepted": True, "error": ""}, f"Stopped provider {args.provider_id} ({args.link_name})")
    return 0


async def _stop_actor(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    running = _instances(await c.get_inventory(args.host_id), args.actor_id)
    if not running:
        raise CliError(f"actor {args.actor_id} is not running on host {args.host_id}")
    count = running if args.count <= 0 else min(args.count, running)
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.stop_actor(args.host_id, args.actor_id, args.count)
        await _settle(args, events, ExpectActorStops(args.host_id, args.actor_id, count),
                      f"stopping {count} instances of {args.actor_id}")
    _emit(args, {"accepted": True, "error": "", "stopped": count}, f"Stopped {count} instance(s) of actor {args.actor_id}")
    return 0


async def _stop_host(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    async with EventStream(c.nc, cfg.lattice_prefix) as events:
        await c.stop_host(args.host_id)
        await _settle(args, events, ExpectHostStopped(args.host_id), f"stopping host {args.host_id}")
    text = (f"Host {args.host_id} acknowledged stop request" if args.skip_wait else f"Host {args.host_id} stopped")
    _emit(args, {"accepted": True, "error": ""}, text)
    return 0


# --- call -----------------------------------------------------------------------------------------


async def _call(c: ControlClient, cfg: ClientConfig, args: argparse.Namespace) -> int:
    if not cfg.cluster_seed:
        print("error: a cluster seed is needed to sign the invocation (--cluster-seed or WASMCLOUD_CLUSTER_SEED; "
              "with no flags the local host's is used)", file=sys.stderr)
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
