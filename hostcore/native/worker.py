"""NativeWorker: fetches actor modules, verifies their claims and compiles them once.

The only process that compiles wasm (architecture.md "Compile once, deserialize everywhere"): it
holds the wasmtime Engine and never creates children. It owns the `.cwasm` cache directory.
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path
from typing import Any

from thespian.actors import ActorTypeDispatcher

from hostcore.actors.messages import ActorPrepared, InitNative, PrepareActor, PrepareFailed, Ready
from hostcore.config import HostConfig
from hostcore.errors import ActorFetchFailed, BindleUnsupported, FileLoadDisabled, HostcoreError
from hostcore.native.claims import extract_claims
from hostcore.native.wasm import compile_to_cache, new_engine
from hostcore.procutil import set_pdeathsig

log = logging.getLogger(__name__)


def fetch_actor_bytes(ref: str, config: HostConfig) -> bytes:
    """The module bytes behind `ref` (protocol.md §8.1 dispatch).

    Raises:
        FileLoadDisabled: a `file://` ref while WASMCLOUD_ALLOW_FILE_LOAD is off.
        BindleUnsupported: a `bindle://` ref (experimental in OTP, gone from later hosts).
        ActorFetchFailed: the file cannot be read, or an OCI ref (not supported yet).
    """
    if ref.startswith("bindle://"):
        raise BindleUnsupported()
    if ref.startswith("file://"):
        if not config.allow_file_load:
            raise FileLoadDisabled()
        path = Path(urllib.parse.unquote(ref[len("file://"):]))
        try:
            return path.read_bytes()
        except OSError as err:
            raise ActorFetchFailed(f"Unable to read actor file {path}: {err.strerror or err}") from None
    raise ActorFetchFailed(f"Unable to fetch {ref}: OCI references are not supported by this host yet")


class NativeWorker(ActorTypeDispatcher):  # type: ignore[misc]
    """Answers PrepareActor with ActorPrepared (claims + .cwasm path) or PrepareFailed."""

    def receiveMsg_InitNative(self, msg: InitNative, sender: Any) -> None:
        set_pdeathsig()
        self.config: HostConfig = msg.config
        self.engine = new_engine()
        self.cache_dir = msg.config.cache_dir / "cwasm"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.send(sender, Ready(role="native"))

    def receiveMsg_PrepareActor(self, msg: PrepareActor, sender: Any) -> None:
        try:
            module = fetch_actor_bytes(msg.actor_ref, self.config)
            claims = extract_claims(module)
            cwasm = compile_to_cache(self.engine, module, self.cache_dir)
        except HostcoreError as err:
            self.send(sender, PrepareFailed(request_id=msg.request_id, actor_ref=msg.actor_ref, error=err.wire))
            return
        except Exception as err:  # role boundary: log with traceback, reply a generic error
            log.exception("preparing an actor failed", extra={"actor_ref": msg.actor_ref})
            self.send(sender, PrepareFailed(request_id=msg.request_id, actor_ref=msg.actor_ref,
                                            error=f"Failed to prepare actor: {err}"))
            return
        log.info("actor prepared", extra={"actor_ref": msg.actor_ref, "actor_key": claims.public_key,
                                          "bytes": len(module)})
        self.send(sender, ActorPrepared(request_id=msg.request_id, actor_ref=msg.actor_ref,
                                        claims=claims, cwasm_path=cwasm))
