"""The errors hostcore reports, one class per failure the protocol names.

Each class carries its exact wire text (protocol.md) in `wire`; that text appears nowhere else.
Classes whose text has parameters build it in `__init__` and keep it in `self.wire`.
"""

from __future__ import annotations

__all__ = [
    "ActorCallFailed",
    "ActorFetchFailed",
    "BindleUnsupported",
    "CallAliasNotFound",
    "ChunkError",
    "ChunkMissing",
    "ChunkStoreFailed",
    "ChunkTimeout",
    "ClaimsBadSignature",
    "ClaimsError",
    "ClaimsExpired",
    "ClaimsExtractFailed",
    "ClaimsHashMismatch",
    "ClaimsInvalid",
    "ClaimsNotYetValid",
    "ConfigError",
    "ControlReplyInvalid",
    "ControlRequestError",
    "ControlRequestRefused",
    "FileLoadDisabled",
    "GuestError",
    "GuestTimeout",
    "GuestTrap",
    "HostCallError",
    "HostDataInvalid",
    "HostcoreError",
    "IncompatibleLayerMediaType",
    "InstantiationFailed",
    "InvocationBadHostId",
    "InvocationBadSignature",
    "InvocationDecodeFailed",
    "InvocationError",
    "InvocationExpired",
    "InvocationHashMismatch",
    "InvocationMsgpackFailed",
    "InvocationNoWascap",
    "InvocationNotYetValid",
    "InvocationOriginMismatch",
    "InvocationTargetMismatch",
    "InvocationTokenInvalid",
    "InvocationUntrustedIssuer",
    "LatestRefused",
    "LiveUpdateFailed",
    "LiveUpdateNotRunning",
    "LiveUpdateStaleRevision",
    "LiveUpdateWrongActor",
    "MethodNotHandled",
    "MissingCapability",
    "MissingCapabilityClaim",
    "ModuleCompileFailed",
    "NkeyError",
    "NoClaims",
    "NotWasm",
    "OciAccessDenied",
    "OciAuthError",
    "OciAuthRejected",
    "OciAuthRequired",
    "OciBadManifest",
    "OciBlobUnknown",
    "OciDigestMismatch",
    "OciError",
    "OciManifestUnknown",
    "OciNoLayers",
    "OciNotFound",
    "OciReferenceInvalid",
    "OciRegistryError",
    "OciRegistryUnreachable",
    "OciRepositoryUnknown",
    "OciTimeout",
    "OciTlsFailed",
    "OtherRefRunning",
    "ParClaimsInvalid",
    "ParError",
    "ParHashMismatch",
    "ParIncomplete",
    "ParTargetMissing",
    "ParTooShort",
    "ParUnreadable",
    "PolicyDecodeFailed",
    "PolicyDenied",
    "PolicyDeniedInvocation",
    "PolicyDeniedStartActor",
    "PolicyDeniedStartProvider",
    "PolicyNoResponders",
    "PolicySourceInvalid",
    "PolicyTargetInvalid",
    "PolicyTimedOut",
    "ProviderDeserFailed",
    "ProviderError",
    "ProviderOperationFailed",
    "ProviderTargetMismatch",
    "RefHoldsOtherActor",
    "RegistryCredentialsInvalid",
    "RoleRestarted",
    "RpcTimeout",
    "ScaleWithoutRef",
    "TokenBadAlgorithm",
    "TokenBadHeader",
    "TokenBadIssuerKey",
    "TokenBadSignature",
    "TokenError",
    "TokenExpired",
    "TokenMalformed",
    "TokenMissingIssuer",
    "TokenMissingSubject",
    "TokenNotYetValid",
    "UnlinkedActor",
    "WrongHost",
    "WrongHostStop",
]


class HostcoreError(Exception):
    """Root of every error hostcore raises on purpose. `wire` is the text put on the wire."""

    wire: str = "Internal host error"

    def __init__(self, wire: str | None = None) -> None:
        if wire is not None:
            self.wire = wire
        super().__init__(self.wire)


# --- configuration -------------------------------------------------------------------------------


class ConfigError(HostcoreError, ValueError):
    """A configuration key has a value that cannot be used; the text names key and value."""


# --- nkeys / claims (protocol.md §5.5, §7) --------------------------------------------------------


class NkeyError(HostcoreError, ValueError):
    wire = "Invalid nkey"


class ClaimsError(HostcoreError):
    """A module's embedded claims cannot be used."""


class NoClaims(ClaimsError):
    wire = "No claims found in source module"


class ClaimsExtractFailed(ClaimsError):
    wire = "Failed to extract claims from module"


class ClaimsExpired(ClaimsError):
    wire = "Claims token expired"


class ClaimsNotYetValid(ClaimsError):
    wire = "Claims token cannot be used yet"


class ClaimsBadSignature(ClaimsError):
    wire = "Invalid signature on module token"


class ClaimsInvalid(ClaimsError):
    """Other token validation failures: `Failed to validate claims token: {e}`."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Failed to validate claims token: {detail}")


class ClaimsHashMismatch(ClaimsExtractFailed):
    """The module bytes do not hash to the `wascap.hash` claim (tampered module)."""


class NotWasm(ClaimsExtractFailed):
    """The bytes are not a WebAssembly module at all."""


# --- wascap JWTs (protocol.md §4.6 step 2, §5.5 step 3) -------------------------------------------
# Texts are wascap's `Display` of the matching ErrorKind; callers wrap them in ClaimsInvalid or
# InvocationTokenInvalid, which is where they reach the wire.


class TokenError(HostcoreError, ValueError):
    """A wascap JWT is structurally unusable (bad segments, header, issuer or subject)."""


class TokenMalformed(TokenError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Decode error: {detail}")


class TokenBadAlgorithm(TokenError):
    wire = "Invalid JWT algorithm. WASCAP only supports Ed25519"


class TokenBadHeader(TokenError):
    wire = "JWT error: Invalid header"


class TokenMissingIssuer(TokenError):
    wire = "Invalid JWT. WASCAP requires an issuer claim to be present"


class TokenMissingSubject(TokenError):
    wire = "Invalid JWT. WASCAP requires a sub claim to be present"


class TokenBadIssuerKey(TokenError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Encryption error: {detail}")


class TokenExpired(TokenError):
    wire = "Token has expired"


class TokenNotYetValid(TokenError):
    wire = "Token cannot be used yet"


class TokenBadSignature(TokenError):
    wire = "Token signature is invalid"


# --- invocations (protocol.md §4.6) ---------------------------------------------------------------


class InvocationError(HostcoreError):
    """An inbound invocation failed anti-forgery validation; `wire` is the documented reason."""


class InvocationDecodeFailed(InvocationError):
    wire = "Failed to deserialize invocation"


class InvocationMsgpackFailed(InvocationError):
    wire = "Failed to deserialize msgpack invocation"


class InvocationTokenInvalid(InvocationError):
    """§4.6 step 2: the invocation JWT is structurally invalid; `wire` is the TokenError's text."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class InvocationExpired(InvocationError):
    wire = "Invocation claims token expired"


class InvocationBadSignature(InvocationError):
    wire = "Invocation claims signature invalid"


class InvocationNotYetValid(InvocationError):
    wire = "Attempt to use invocation before claims token allows"


class InvocationNoWascap(InvocationError):
    wire = "No wascap metadata found on claims"


class InvocationHashMismatch(InvocationError):
    def __init__(self, claimed: str, computed: str) -> None:
        self.claimed = claimed
        self.computed = computed
        super().__init__(
            f"Invocation hash does not match signed claims hash ({claimed} / {computed})"
        )


class InvocationBadHostId(InvocationError):
    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        super().__init__(f"Invalid host ID on invocation: '{host_id}'")


class InvocationUntrustedIssuer(InvocationError):
    wire = "Issuer of this invocation is not among the list of valid issuers"


class InvocationTargetMismatch(InvocationError):
    wire = "Invocation claims and invocation target URL do not match"


class InvocationOriginMismatch(InvocationError):
    wire = "Invocation claims and invocation origin URL do not match"


class MissingCapability(InvocationError):
    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f'Actor is missing the capability claim for "{operation}"')


# --- guest execution (protocol.md §6) --------------------------------------------------------------


class GuestError(HostcoreError):
    """The guest returned failure through `__guest_error`; `wire` is the guest's text."""


class GuestTrap(GuestError):
    """The guest trapped (or ran out of time / memory); its Store is discarded afterwards."""


class GuestTimeout(GuestTrap, TimeoutError):
    """The guest call ran past the per-call time limit (epoch interruption)."""


class ModuleCompileFailed(HostcoreError):
    """Bytes that look like wasm (or a cached .cwasm) that wasmtime cannot compile or load."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Failed to compile module: {detail}")


class InstantiationFailed(HostcoreError):
    """A module cannot be instantiated: unknown import, memory limit, or a trap in its init exports."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Failed to instantiate actor: {detail}")


class HostCallError(HostcoreError):
    """A guest's `__host_call` could not be served; `wire` goes back to the guest as host error."""


class RpcTimeout(HostCallError, TimeoutError):
    wire = "Failed to perform RPC call: request timeout"


class MissingCapabilityClaim(HostCallError, PermissionError):
    """A linked contract the calling actor has no capability claim for (protocol.md §4.10)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        super().__init__(f"Invocation not authorized: missing capability claim for {namespace}")


class CallAliasNotFound(HostCallError, LookupError):
    """No link, actor key or call alias matches the call's namespace (protocol.md §4.10 step 5)."""

    def __init__(self, namespace: str, lattice: str) -> None:
        self.namespace = namespace
        self.lattice = lattice
        super().__init__(f"Call alias not found: {namespace} on {lattice}")


# --- actor lifecycle (protocol.md §2.3, §8.1, §11) ---------------------------------------------------


class ScaleWithoutRef(HostcoreError):
    wire = "Scaling actor up without an OCI reference is not currently supported"


class RefHoldsOtherActor(HostcoreError):
    """`ref` resolved to a module of another actor than the one a scale or update names."""

    def __init__(self, ref: str, public_key: str, expected: str) -> None:
        self.ref = ref
        self.public_key = public_key
        self.expected = expected
        super().__init__(f"Reference {ref} holds actor {public_key}, not {expected}")


class LiveUpdateFailed(HostcoreError):
    """An `upd` request was refused (protocol.md §2.3); `reason` is what came after the prefix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Unable to perform live update: {reason}")


class LiveUpdateNotRunning(LiveUpdateFailed):
    def __init__(self, actor_id: str) -> None:
        self.actor_id = actor_id
        super().__init__(f"Actor {actor_id} is not running on this host")


class LiveUpdateWrongActor(LiveUpdateFailed):
    def __init__(self, ref: str, public_key: str, expected: str) -> None:
        self.ref = ref
        self.public_key = public_key
        self.expected = expected
        super().__init__(f"{ref} holds actor {public_key}, not {expected}")


class LiveUpdateStaleRevision(LiveUpdateFailed):
    def __init__(self, revision: int, running: int) -> None:
        self.revision = revision
        self.running = running
        super().__init__(f"new revision {revision} is not greater than the running revision {running}")


class OtherRefRunning(HostcoreError):
    # v0.59 text (protocol.md §11.1 step 3).
    def __init__(self, public_key: str, ref: str) -> None:
        self.public_key = public_key
        self.ref = ref
        super().__init__(
            f"Cannot start new instance of {public_key} from OCI '{ref}', it is already running "
            "with different OCI reference. To upgrade an actor, use live update."
        )


class FileLoadDisabled(HostcoreError):
    wire = "actor file loading is disabled"


class BindleUnsupported(HostcoreError):
    wire = "bindle:// references are not supported by this host"


class ActorFetchFailed(HostcoreError):
    """The actor's bytes could not be read from its reference; the text says why."""


class LatestRefused(ActorFetchFailed):
    wire = (
        "Fetching images tagged 'latest' is currently prohibited in this host. "
        "This option can be overridden with WASMCLOUD_OCI_ALLOW_LATEST"
    )


# --- OCI registries (protocol.md §8.2) -------------------------------------------------------------
# Texts read `Unable to {fetch|push} {ref}: {detail}`; `detail` is the class's fixed phrase or,
# where the registry supplies one, its own words.


class OciReferenceInvalid(ActorFetchFailed, ValueError):
    def __init__(self, ref: str, detail: str) -> None:
        self.ref = ref
        self.detail = detail
        super().__init__(f"Invalid OCI reference '{ref}': {detail}")


class OciError(ActorFetchFailed):
    """A registry operation on `ref` failed; `action` is "fetch" or "push"."""

    detail = "registry error"

    def __init__(self, ref: str, detail: str | None = None, *, action: str = "fetch") -> None:
        self.action = action
        self.ref = ref
        if detail is not None:
            self.detail = detail
        super().__init__(f"Unable to {action} {ref}: {self.detail}")


class OciRegistryUnreachable(OciError, ConnectionError):
    """The registry did not answer (connection refused, DNS, reset); `detail` names it."""


class OciTlsFailed(OciRegistryUnreachable):
    def __init__(self, ref: str, registry: str, *, action: str = "fetch") -> None:
        self.ref = ref
        self.registry = registry
        self.action = action
        super().__init__(
            ref,
            f"TLS connection to {registry} failed; if it is a plain-HTTP registry, "
            "add it to WASMCLOUD_OCI_ALLOWED_INSECURE",
            action=action,
        )


class OciTimeout(OciError, TimeoutError):
    def __init__(self, ref: str, registry: str, timeout_s: float, *, action: str = "fetch") -> None:
        self.ref = ref
        self.registry = registry
        self.timeout_s = timeout_s
        self.action = action
        super().__init__(ref, f"registry {registry} did not answer within {timeout_s:g}s", action=action)


class OciNotFound(OciError):
    detail = "not found (404)"


class OciRepositoryUnknown(OciNotFound):
    detail = "repository unknown (404)"


class OciManifestUnknown(OciNotFound):
    detail = "manifest unknown (404)"


class OciBlobUnknown(OciNotFound):
    detail = "blob unknown (404)"


class OciAuthError(OciError, PermissionError):
    """The registry refused us; subclasses tell "no credentials" from "wrong credentials"."""


class OciAuthRequired(OciAuthError):
    def __init__(self, ref: str, registry: str, *, action: str = "fetch") -> None:
        self.ref = ref
        self.registry = registry
        self.action = action
        super().__init__(
            ref, f"authentication required by {registry} (401); no credentials are configured for it",
            action=action,
        )


class OciAuthRejected(OciAuthError):
    def __init__(self, ref: str, registry: str, *, action: str = "fetch") -> None:
        self.ref = ref
        self.registry = registry
        self.action = action
        super().__init__(ref, f"credentials for {registry} were rejected (401)", action=action)


class OciAccessDenied(OciAuthError):
    detail = "access denied (403)"


class OciDigestMismatch(OciError):
    def __init__(self, ref: str, expected: str, actual: str, *, action: str = "fetch") -> None:
        self.ref = ref
        self.expected = expected
        self.actual = actual
        self.action = action
        super().__init__(ref, f"content digest mismatch: expected {expected}, got {actual}", action=action)


class IncompatibleLayerMediaType(OciError):
    def __init__(self, ref: str, media_type: str) -> None:
        self.ref = ref
        self.media_type = media_type
        super().__init__(ref, f"incompatible layer media type '{media_type}'")


class OciNoLayers(OciError):
    detail = "the image has no layers"


class OciBadManifest(OciError):
    """The manifest is not a schemaVersion 2 OCI/Docker image manifest or index."""


class OciRegistryError(OciError):
    """Any other non-success answer; `detail` carries the status and the registry's message."""


# --- control interface (protocol.md §2) --------------------------------------------------------------


class ControlRequestError(HostcoreError):
    """A control request was malformed; `wire` is the command's documented failure text."""


class ControlRequestRefused(HostcoreError):
    """A host answered a control request with a failure ack; `error` is its text."""

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(error or "The host refused the request")


class ControlReplyInvalid(HostcoreError, ValueError):
    """A control reply could not be read; `subject` names the request."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"Unreadable reply to {subject}")


class WrongHost(ControlRequestError):
    wire = "Command received by incorrect host and could not be processed"


class WrongHostStop(ControlRequestError):
    wire = "Handled stop request for incorrect host. Ignoring"


class RegistryCredentialsInvalid(ControlRequestError, ValueError):
    """registries.put payload unusable (§2.4); `detail` says which entry, `wire` is the ack text."""

    wire = "Failed to update registry credential map"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__()

    def __str__(self) -> str:
        return f"{self.wire}: {self.detail}"


# --- provider archives (protocol.md §8.4; texts of wasmCloud provider-archive where it has one) ---


class ParError(HostcoreError):
    """A provider archive (PAR) cannot be used; `wire` says why."""

    wire = "Invalid provider archive"


class ParTooShort(ParError):
    wire = "Not enough bytes to be a valid PAR file"


class ParUnreadable(ParError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Invalid provider archive: {detail}")


class ParIncomplete(ParError):
    """No `claims.jwt`, or no binary at all."""

    wire = "Not enough files found in provider archive. Is this a complete archive?"


class ParClaimsInvalid(ParError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"Invalid provider archive claims: {detail}")


class ParHashMismatch(ParError):
    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"File hash and verify hash do not match for '{target}'")


class ParTargetMissing(ParError):
    def __init__(self, target: str, available: tuple[str, ...]) -> None:
        self.available = available
        self.target = target
        have = ", ".join(available) or "none"
        super().__init__(f"Provider archive has no binary for target '{target}' (has: {have})")


# --- capability providers, provider side (protocol.md §4.11, §11.7) ------------------------------


class ProviderError(HostcoreError):
    """A provider process could not do what the host or an actor asked; `wire` is the reply text."""


class HostDataInvalid(ProviderError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"parsing host data: {detail}")


class ProviderTargetMismatch(ProviderError):
    def __init__(self, target: str, provider_key: str) -> None:
        self.target = target
        self.provider_key = provider_key
        super().__init__(f"target key mismatch: {target} != {provider_key}")


class UnlinkedActor(ProviderError):
    def __init__(self, actor_id: str) -> None:
        self.actor_id = actor_id
        super().__init__(f"unlinked actor: '{actor_id}'")


class MethodNotHandled(ProviderError):
    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"method not handled {operation}")


class ProviderDeserFailed(ProviderError):
    """An operation's msgpack argument does not have the interface's shape."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"deser error: {detail}")


class ProviderOperationFailed(ProviderError):
    """The provider's backend (Redis, a listener) failed; `wire` carries the backend's words."""


class ActorCallFailed(ProviderError):
    """An actor answered a provider's invocation with an InvocationResponse `error` (its text)."""


# --- policy (protocol.md §9) ---------------------------------------------------------------------
# The failure defaults (§9.4) and argument checks (§9.2) are denial *messages*: PolicyEvaluator puts
# their `wire` into a Decision instead of raising them. The PolicyDenied family is what callers raise
# for a denial (§9.6).


class PolicyDecodeFailed(HostcoreError, ValueError):
    wire = "Policy response failed to decode"


class PolicyTimedOut(HostcoreError, TimeoutError):
    wire = "Policy request timed out"


class PolicyNoResponders(HostcoreError):
    wire = "No responders to policy request (policy server not listening?)"


class PolicySourceInvalid(HostcoreError, ValueError):
    def __init__(self, missing: str) -> None:
        self.missing = missing
        super().__init__(f"Invalid source argument, missing required fields: {missing}")


class PolicyTargetInvalid(HostcoreError, ValueError):
    def __init__(self, missing: str) -> None:
        self.missing = missing
        super().__init__(f"Invalid target argument, missing required fields: {missing}")


class PolicyDenied(HostcoreError, PermissionError):
    """A policy decision refused an action; `message` is the decision's (defaulted) reason."""

    unspecified = "reason not specified"

    def __init__(self, wire: str, message: str) -> None:
        self.wire = wire
        self.message = message
        super().__init__(wire)


class PolicyDeniedStartActor(PolicyDenied):
    def __init__(self, public_key: str, message: str = "") -> None:
        self.public_key = public_key
        self.message = message
        reason = message or self.unspecified
        super().__init__(f"Starting actor {public_key} denied: {reason}", reason)


class PolicyDeniedStartProvider(PolicyDenied):
    def __init__(self, public_key: str, message: str = "") -> None:
        self.public_key = public_key
        self.message = message
        reason = message or self.unspecified
        super().__init__(f"Starting provider {public_key} denied: {reason}", reason)


class PolicyDeniedInvocation(PolicyDenied):
    # §9.6: a denial without a message (e.g. claims not cached) reads "reason not specified".
    def __init__(self, message: str = "") -> None:
        self.message = message
        reason = message or self.unspecified
        super().__init__(f"Policy denied invocation: {reason}", reason)


# --- chunking object store (protocol.md §4.9, §12.4) ---------------------------------------------


class ChunkError(HostcoreError):
    """A chunked payload could not be stored in or read from the lattice's object store."""

    def __init__(self, wire: str, name: str) -> None:
        self.wire = wire
        self.name = name
        super().__init__(wire)


class ChunkMissing(ChunkError, LookupError):
    def __init__(self, name: str, bucket: str) -> None:
        self.name = name
        self.bucket = bucket
        super().__init__(f"Chunked payload '{name}' not found in object store '{bucket}'", name)


class ChunkTimeout(ChunkError, TimeoutError):
    def __init__(self, name: str, bucket: str, timeout_s: float) -> None:
        self.name = name
        self.bucket = bucket
        self.timeout_s = timeout_s
        super().__init__(
            f"Object store '{bucket}' did not store or return '{name}' within {timeout_s:g}s", name
        )


class ChunkStoreFailed(ChunkError):
    def __init__(self, name: str, bucket: str, detail: str) -> None:
        self.name = name
        self.bucket = bucket
        self.detail = detail
        super().__init__(f"Object store '{bucket}' failed on '{name}': {detail}", name)


# --- supervision (hostcore/supervision.py) -------------------------------------------------------


class RoleRestarted(HostcoreError):
    """A request was in flight in (or waiting on) a role of the tree that died and was restarted.
    It is failed rather than replayed: it may be what killed the role."""

    def __init__(self, role: str) -> None:
        super().__init__(f"Request interrupted: the host's {role} was restarted")
        self.role = role
