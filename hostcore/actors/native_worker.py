"""NativeWorker: fetches actor modules (file or OCI), verifies their claims and compiles them once.

The only process that compiles wasm (architecture.md "Compile once, deserialize everywhere"),
each compile in a short-lived child process of its own (fork + exec, never a bare fork), so it
may use threads. Pulls and compiles run on a small pool, so one slow registry does not hold up
other starts; results come back to the actor thread through the inbox. It owns the `.cwasm` cache
and the OCI cache directories.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any

from thespian.actors import ActorExitRequest

from hostcore.actors.compiler import compile_in_child
from hostcore.config import HostConfig
from hostcore.errors import ActorFetchFailed, BindleUnsupported, FileLoadDisabled, HostcoreError
from hostcore.native.claims import extract_claims
from hostcore.native.oci import OciClient, OciSettings
from hostcore.native.par import builtin_par, extract_binary, native_target, read_par
from hostcore.procutil import set_pdeathsig
from hostcore.supervision import crash_if_asked
from hostcore.telemetry.native import NativeTelemetry
from hostcore.telemetry.tracing import NO_SPAN
from hostcore.tree.bridge import InboxActor
from hostcore.tree.messages import (
    ActorPrepared,
    InitNative,
    PrepareActor,
    PrepareFailed,
    PrepareProvider,
    ProviderPrepared,
    PutRegistryCredentials,
    Ready,
)

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_SCHEME", "NativeWorker", "read_file_ref"]

_POOL_SIZE = 4
# `builtin:httpserver` / `builtin:keyvalue`: the providers shipped with hostcore (quick start).
BUILTIN_SCHEME = "builtin:"


def read_file_ref(ref: str, config: HostConfig) -> bytes:
    """The bytes behind a `file://` ref (protocol.md §8.1, v0.61+).

    Raises:
        FileLoadDisabled: WASMCLOUD_ALLOW_FILE_LOAD is off and the file is not directly in
            the data directory's `uploads/` (where the dashboard puts uploaded modules).
        ActorFetchFailed: the file cannot be read.
    """
    path = Path(urllib.parse.unquote(ref[len("file://"):]))
    # Files the dashboard stored for this host are loadable without file loading in general.
    if not config.allow_file_load and path.resolve().parent != config.uploads_dir.resolve():
        raise FileLoadDisabled()
    try:
        return path.read_bytes()
    except OSError as err:
        raise ActorFetchFailed(f"Unable to read actor file {path}: {err.strerror or err}") from None


class NativeWorker(InboxActor):
    """Answers PrepareActor with ActorPrepared (claims + .cwasm path) or PrepareFailed, and keeps
    the registry credentials that `registries.put` supplies."""

    def receiveMsg_InitNative(self, msg: InitNative, sender: Any) -> None:
        set_pdeathsig()
        crash_if_asked(msg.config, "native", msg.restart)
        cfg = self.config = msg.config
        self.compiled: dict[str, Path] = {}  # module SHA-256 → its .cwasm, as the compile child named it
        self.cache_dir = cfg.cache_dir / "cwasm"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.oci_settings = OciSettings(cache_dir=cfg.cache_dir, allow_latest=cfg.allow_latest,
                                        allowed_insecure=cfg.allowed_insecure, env_registry=cfg.oci_env_registry,
                                        timeout_s=cfg.oci_timeout_s)
        self.inbox_start()
        self.pool = concurrent.futures.ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="native")
        self.telemetry = NativeTelemetry.open(cfg)
        self.send(sender, Ready(role="native"))

    def receiveMsg_PutRegistryCredentials(self, msg: PutRegistryCredentials, sender: Any) -> None:
        creds = {**self.oci_settings.credentials, **msg.credentials}
        self.oci_settings = dataclasses.replace(self.oci_settings, credentials=creds)
        log.info("registry credentials updated", extra={"registries": sorted(msg.credentials)})

    def receiveMsg_PrepareActor(self, msg: PrepareActor, sender: Any) -> None:
        settings = self.oci_settings  # the credentials in force when the request arrived
        future = self.pool.submit(self._prepare, msg, settings)
        future.add_done_callback(lambda f: self.to_actor((sender, f.result())))

    def receiveMsg_PrepareProvider(self, msg: PrepareProvider, sender: Any) -> None:
        settings = self.oci_settings
        future = self.pool.submit(self._prepare_provider, msg, settings)
        future.add_done_callback(lambda f: self.to_actor((sender, f.result())))

    def _prepare_provider(self, msg: PrepareProvider, settings: OciSettings) -> ProviderPrepared | PrepareFailed:
        """Runs on the pool: fetch the PAR, verify it, unpack this host's executable."""
        try:
            ref = msg.provider_ref
            if ref.startswith(BUILTIN_SCHEME):
                data = builtin_par(ref[len(BUILTIN_SCHEME):], self.config.cache_dir / "builtin-pars")
            else:
                with self.telemetry.fetch(ref, NO_SPAN) as fetched:
                    data = self._fetch(ref, settings)
                    fetched(len(data))
            target = native_target()
            par = read_par(data, target=target)
            claims = par.claims
            binary = extract_binary(par, target, self.config.cache_dir / "providers" / claims.public_key / str(claims.revision))
        except KeyError:
            return PrepareFailed(request_id=msg.request_id, actor_ref=msg.provider_ref,
                                 error=f"Unknown built-in provider {msg.provider_ref}")
        except HostcoreError as err:
            log.error("provider preparation failed", extra={"provider_ref": msg.provider_ref, "error": err.wire})
            return PrepareFailed(request_id=msg.request_id, actor_ref=msg.provider_ref, error=err.wire)
        except Exception as err:  # role boundary
            log.exception("preparing a provider failed", extra={"provider_ref": msg.provider_ref})
            return PrepareFailed(request_id=msg.request_id, actor_ref=msg.provider_ref,
                                 error=f"Failed to prepare provider: {err}")
        return ProviderPrepared(request_id=msg.request_id, provider_ref=msg.provider_ref, claims=claims, binary=binary)

    def on_inbox_item(self, item: tuple[Any, Any]) -> None:
        sender, reply = item
        self.send(sender, reply)

    def _prepare(self, msg: PrepareActor, settings: OciSettings) -> ActorPrepared | PrepareFailed:
        """Runs on the pool: fetch, verify, compile. Never raises: failures become PrepareFailed."""
        began = time.monotonic()
        # The child of the supervisor's start_actor_from_oci span (PrepareActor.trace).
        with self.telemetry.span("prepare_actor", msg.trace, actor_ref=msg.actor_ref) as span:
            try:
                with self.telemetry.fetch(msg.actor_ref, span) as fetched:
                    module = self._fetch(msg.actor_ref, settings)
                    fetched(len(module))
                claims = extract_claims(module)
                span.event("claims verified", public_key=claims.public_key, issuer=claims.issuer)
                cwasm = self._compile(module)
            except HostcoreError as err:
                span.fail(err.wire)
                log.error("actor preparation failed", extra={"actor_ref": msg.actor_ref, "error": err.wire})
                return PrepareFailed(request_id=msg.request_id, actor_ref=msg.actor_ref, error=err.wire)
            except Exception as err:  # role boundary: log with traceback, reply a generic error
                span.fail(str(err))
                log.exception("preparing an actor failed", extra={"actor_ref": msg.actor_ref})
                return PrepareFailed(request_id=msg.request_id, actor_ref=msg.actor_ref,
                                     error=f"Failed to prepare actor: {err}")
            log.info("actor prepared", extra={"actor_ref": msg.actor_ref, "actor_key": claims.public_key,
                                              "bytes": len(module), "ms": round((time.monotonic() - began) * 1000, 1)})
        return ActorPrepared(request_id=msg.request_id, actor_ref=msg.actor_ref, claims=claims, cwasm_path=cwasm,
                             byte_size=len(module))

    def _compile(self, module: bytes) -> Path:
        """`compile_to_cache` in a child process (hostcore/actors/compiler.py: a compile's memory
        leaves with the child), skipped when this process already knows the module's .cwasm and
        the file is still there. Runs on the pool; the dict is only read and set."""
        key = hashlib.sha256(module).hexdigest()
        known = self.compiled.get(key)
        if known is not None and known.exists():
            return known
        self.compiled[key] = path = compile_in_child(module, self.cache_dir)
        return path

    def _fetch(self, ref: str, settings: OciSettings) -> bytes:
        """protocol.md §8.1 dispatch: bindle (refused), file, else OCI."""
        if ref.startswith("bindle://"):
            raise BindleUnsupported()
        if ref.startswith("file://"):
            return read_file_ref(ref, self.config)
        if ref.startswith(BUILTIN_SCHEME):
            raise ActorFetchFailed(f"{ref} is a built-in provider, not an actor")
        with OciClient(settings) as client:
            return client.pull(ref).content

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if getattr(self, "telemetry", None) is not None:
            self.telemetry.close()
