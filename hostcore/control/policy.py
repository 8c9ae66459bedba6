"""PolicyEvaluator: ask an external policy server before starting actors/providers and before
delivering invocations (protocol.md §9, OTP `HostCore.Policy.Manager`).

The evaluator sends one JSON request per undecided (action, source, target) on the host's control
connection and caches the answer. It never raises for NATS failures: timeouts, missing servers and
bad replies become denials (§9.4). Turning a denial into an error is the caller's job
(`PolicyDeniedStartActor`, `PolicyDeniedStartProvider`, `PolicyDeniedInvocation` in errors.py).

Deviation from OTP (§9.5): OTP caches decisions forever in an unbounded ETS table. We keep at most
`cache_size` decisions (LRU, default 10,000) so a lattice with many (origin, target) pairs cannot
grow the host without bound; an evicted pair is simply asked again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hostcore.config import HostConfig
from hostcore.errors import (
    PolicyDecodeFailed,
    PolicyNoResponders,
    PolicySourceInvalid,
    PolicyTargetInvalid,
    PolicyTimedOut,
)
from hostcore.native.claims import ActorClaims
from hostcore.native.invocation import WasmCloudEntity

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DISABLED_MESSAGE",
    "Decision",
    "PolicyAction",
    "PolicyChange",
    "PolicyEvaluator",
    "PolicyHost",
    "PolicyRequest",
    "invocation_source",
    "invocation_target",
]

log = logging.getLogger(__name__)

DISABLED_MESSAGE = "Policy evaluation disabled, allowing action"
DEFAULT_CACHE_SIZE = 10_000
_PLACEHOLDER_TTL_S = 60  # §9.2: the start placeholder's expiresAt is now + 60 s
_SOURCE_FIELDS = ("publicKey", "capabilities", "issuer", "issuedOn", "expired", "expiresAt")
_TARGET_FIELDS = ("publicKey", "issuer")
_SUCCESS = json.dumps({"success": True}).encode()
_FAILURE = json.dumps({"success": False}).encode()


class PolicyAction(StrEnum):
    START_ACTOR = "start_actor"
    START_PROVIDER = "start_provider"
    PERFORM_INVOCATION = "perform_invocation"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyHost:
    """The `host` map of every policy request (§9.2); nobody mutates `labels` afterwards."""

    public_key: str  # the host's N… key
    issuer: str  # the cluster C… key
    lattice_id: str
    labels: dict[str, str]
    cluster_issuers: tuple[str, ...]

    @classmethod
    def from_config(cls, config: HostConfig) -> Self:
        return cls(
            public_key=config.host_id,
            issuer=config.cluster_key.public_key,
            lattice_id=config.lattice_prefix,
            labels=dict(config.labels),
            cluster_issuers=tuple(config.cluster_issuers),
        )

    def to_wire(self) -> dict[str, Any]:
        """`{publicKey, issuer, latticeId, labels, clusterIssuers}` (camelCase, §9.2)."""
        return {
            "publicKey": self.public_key,
            "issuer": self.issuer,
            "latticeId": self.lattice_id,
            "labels": dict(self.labels),
            "clusterIssuers": list(self.cluster_issuers),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy verdict. `message` is "" when the server gave none; `request_id` is the id of the
    request that produced it ("" when no request was sent)."""

    permitted: bool
    message: str
    request_id: str

    @classmethod
    def from_wire(cls, data: bytes, *, request_id: str) -> Self:
        """Decode a §9.3 reply `{"permitted": bool, "message": str, "requestId": str}`.

        Only `permitted` is required; `message` may be missing or null (→ ""). The decision is
        filed under `request_id`, the id we sent, which is what a later policy change names; a
        differing `requestId` in the reply is ignored. Raises PolicyDecodeFailed.
        Stricter than OTP, which caches any JSON that decodes (§9.3), even one without `permitted`.
        """
        try:
            fields = json.loads(data)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise PolicyDecodeFailed() from e
        if not isinstance(fields, dict) or not isinstance(fields.get("permitted"), bool):
            raise PolicyDecodeFailed()
        message = fields.get("message")
        if message is not None and not isinstance(message, str):
            raise PolicyDecodeFailed()
        if not isinstance(fields.get("requestId", ""), str):
            raise PolicyDecodeFailed()
        return cls(fields["permitted"], message or "", request_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyChange:
    """A message on the policy-changes topic (§9.5); note its snake_case keys."""

    request_id: str
    permitted: bool
    message: str

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """All three keys are required and typed (OTP checks only their presence). Raises
        PolicyDecodeFailed."""
        try:
            fields = json.loads(data)
        except ValueError as e:
            raise PolicyDecodeFailed() from e
        if (
            not isinstance(fields, dict)
            or not isinstance(fields.get("request_id"), str)
            or not isinstance(fields.get("permitted"), bool)
            or not isinstance(fields.get("message"), str)
        ):
            raise PolicyDecodeFailed()
        return cls(
            request_id=fields["request_id"],
            permitted=fields["permitted"],
            message=fields["message"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest:
    """The request sent to the policy topic (§9.2). `source`/`target` are the camelCase maps."""

    request_id: str
    action: PolicyAction
    source: Mapping[str, Any]
    target: Mapping[str, Any]
    host: PolicyHost

    def to_wire(self) -> bytes:
        return json.dumps(
            {
                "requestId": self.request_id,
                "source": dict(self.source),
                "target": dict(self.target),
                "action": self.action.value,
                "host": self.host.to_wire(),
            }
        ).encode()


@dataclass(slots=True)
class _Entry:
    """One cached decision and the ids of the requests that produced it."""

    decision: Decision
    request_ids: list[str] = field(default_factory=list)


def invocation_source(
    origin: WasmCloudEntity, record: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The `perform_invocation` source map (§9.2) from the origin's claims cache record (§5.7),
    or None when the origin has no record (the invocation is then denied without a request).

    QUIRK: the cache record carries no iat/exp, so `issuedOn`/`expiresAt` are always null and
    `expired` false; `capabilities` is the record's comma-joined string, not a list.
    """
    if record is None:
        return None
    return {
        "publicKey": origin.public_key,
        "contractId": origin.contract_id,
        "linkName": origin.link_name,
        "capabilities": record.get("caps") or "",
        "issuer": record.get("iss") or "",
        "issuedOn": None,
        "expiresAt": None,
        "expired": False,
    }


def invocation_target(
    target: WasmCloudEntity, record: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The `perform_invocation` target map (§9.2), or None when the target has no claims record."""
    if record is None:
        return None
    return {
        "publicKey": target.public_key,
        "contractId": target.contract_id,
        "linkName": target.link_name,
        "issuer": record.get("iss") or "",
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _missing(fields: Mapping[str, Any], required: tuple[str, ...]) -> str | None:
    """None if every required key is present (values may be null), else OTP's list of the
    required keys that are missing or null (QUIRK: null-valued keys are named too)."""
    if all(k in fields for k in required):
        return None
    return ", ".join(k for k in required if fields.get(k) is None)


class PolicyEvaluator:
    """Evaluates policy for one host on a NATS connection the caller owns (and closes).

    Every request waits at most `timeout_s` (config `policy_timeout_s`). Successful decisions
    (permit or deny) are cached per evaluator; timeouts, missing responders, undecodable replies
    and invalid arguments are not. Not thread-safe: use it from the event loop that owns `nc`.
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        topic: str | None,
        timeout_s: float,
        host: PolicyHost,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._topic = topic or None
        self._timeout_s = timeout_s
        self._host = host
        self._cache_size = cache_size
        self._clock = clock
        self._decisions: OrderedDict[str, _Entry] = OrderedDict()  # cache key → entry, LRU order
        self._keys_by_request: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return self._topic is not None

    def _placeholder_source(self) -> dict[str, Any]:
        """The fixed source of start requests (§9.2, OTP `default_source`)."""
        return {
            "publicKey": "",
            "contractId": "",
            "linkName": "",
            "capabilities": [],
            "issuer": "",
            "issuedOn": "",
            "expiresAt": int(self._clock()) + _PLACEHOLDER_TTL_S,
            "expired": False,
        }

    async def evaluate_start_actor(self, claims: ActorClaims) -> Decision:
        """Decide whether this host may start the actor `claims` describes."""
        target = {
            "publicKey": claims.public_key,
            "issuer": claims.issuer,
            "contractId": None,
            "linkName": None,
        }
        return await self._evaluate(PolicyAction.START_ACTOR, self._placeholder_source(), target)

    async def evaluate_start_provider(
        self, public_key: str, issuer: str, link_name: str, contract_id: str
    ) -> Decision:
        """Decide whether this host may start provider `public_key` (V…) on `link_name`."""
        target = {
            "publicKey": public_key,
            "issuer": issuer,
            "linkName": link_name,
            "contractId": contract_id,
        }
        return await self._evaluate(PolicyAction.START_PROVIDER, self._placeholder_source(), target)

    async def evaluate_invocation(
        self, source: Mapping[str, Any] | None, target: Mapping[str, Any] | None
    ) -> Decision:
        """Decide whether an invocation may be delivered. Pass the results of `invocation_source`
        and `invocation_target`: None (no claims record) denies without a request and without a
        message (§9.2; the caller's error then reads "reason not specified", §9.6)."""
        if not self.enabled:
            return Decision(True, DISABLED_MESSAGE, "")
        if source is None or target is None:
            return Decision(False, "", "")
        return await self._evaluate(PolicyAction.PERFORM_INVOCATION, source, target)

    async def _evaluate(
        self, action: PolicyAction, source: Mapping[str, Any], target: Mapping[str, Any]
    ) -> Decision:
        if self._topic is None:
            return Decision(True, DISABLED_MESSAGE, "")
        key_source = source
        if action is not PolicyAction.PERFORM_INVOCATION:
            # QUIRK: OTP keys its cache on the whole placeholder source, whose expiresAt
            # (now + 60 s) changes every second, so start decisions were practically never reused
            # (§9.5). We leave expiresAt out of the key so a repeated start hits the cache.
            key_source = {k: v for k, v in source.items() if k != "expiresAt"}
        key = _canonical(
            {"action": action.value, "source": dict(key_source), "target": dict(target)}
        )
        entry = self._decisions.get(key)
        if entry is not None:
            self._decisions.move_to_end(key)
            return entry.decision
        # §9.2: argument checks come after the cache lookup; failures deny and are not cached.
        missing = _missing(source, _SOURCE_FIELDS)
        if missing is not None:
            return self._failed(action, PolicySourceInvalid(missing).wire, "")
        missing = _missing(target, _TARGET_FIELDS)
        if missing is not None:
            return self._failed(action, PolicyTargetInvalid(missing).wire, "")

        request_id = str(uuid.uuid4())
        request = PolicyRequest(
            request_id=request_id, action=action, source=source, target=target, host=self._host
        )
        try:
            reply = await self._nc.request(self._topic, request.to_wire(), timeout=self._timeout_s)
        except nats.errors.NoRespondersError:
            return self._failed(action, PolicyNoResponders.wire, request_id)
        except TimeoutError:  # nats.errors.TimeoutError subclasses it
            return self._failed(action, PolicyTimedOut.wire, request_id)
        except nats.errors.Error as err:
            # Connection closed/draining etc.: OTP's request would crash the caller's task; we
            # fail closed instead, with the client's own words.
            return self._failed(action, f"Policy request failed: {err}", request_id)
        try:
            decision = Decision.from_wire(reply.data, request_id=request_id)
        except PolicyDecodeFailed as err:
            return self._failed(action, err.wire, request_id)
        self._store(key, decision, request_id)
        log.debug(
            "policy decision",
            extra={
                "action": action.value,
                "permitted": decision.permitted,
                "request_id": request_id,
            },
        )
        return decision

    def _failed(self, action: PolicyAction, message: str, request_id: str) -> Decision:
        log.warning(
            "policy evaluation failed, denying",
            extra={"action": action.value, "reason": message, "request_id": request_id},
        )
        return Decision(False, message, request_id)

    def _store(self, key: str, decision: Decision, request_id: str) -> None:
        entry = self._decisions.pop(key, None)
        if entry is None:
            entry = _Entry(decision)
        else:  # a concurrent identical request answered first; keep the newer decision
            entry.decision = decision
        # Every request id that produced this key can name it in a change, as in OTP.
        entry.request_ids.append(request_id)
        self._decisions[key] = entry
        self._keys_by_request[request_id] = key
        while len(self._decisions) > self._cache_size:
            _, evicted = self._decisions.popitem(last=False)
            for rid in evicted.request_ids:
                self._keys_by_request.pop(rid, None)

    def cached(self, request_id: str) -> Decision | None:
        """The decision cached under request `request_id`, if it is still cached."""
        key = self._keys_by_request.get(request_id)
        return None if key is None else self._decisions[key].decision

    def handle_change(self, data: bytes) -> bytes:
        """Apply a policy-changes message (§9.5): the decision cached for its `request_id` is
        replaced. Returns the reply body, `{"success": true}` or `{"success": false}` (bad input).

        QUIRK: like OTP, an unknown (or evicted) request id still answers success and changes
        nothing. Idempotent.
        """
        try:
            change = PolicyChange.from_wire(data)
        except PolicyDecodeFailed:
            return _FAILURE
        key = self._keys_by_request.get(change.request_id)
        if key is not None:
            self._decisions[key].decision = Decision(
                change.permitted, change.message, change.request_id
            )
            log.info(
                "policy decision changed",
                extra={"request_id": change.request_id, "permitted": change.permitted},
            )
        return _SUCCESS

    async def subscribe_changes(self, topic: str) -> Subscription:
        """Subscribe to the policy-changes topic (no queue group: every host updates its own
        cache) and answer each message with `handle_change`. The caller owns the returned
        subscription and unsubscribes it before closing the connection."""

        async def on_change(msg: Msg) -> None:
            reply = self.handle_change(msg.data)
            if msg.reply:
                await self._nc.publish(msg.reply, reply)

        return await self._nc.subscribe(topic, cb=on_change)
