"""The v0.63 batch events: one `actors_started` / `actors_start_failed` / `actors_stopped` per
`la`, `sa` or `scale` request, next to the per-instance events (wadm-notes.md §1.3, §4.3).

wadm matches these on the request's annotations, image and count, so they echo the request. A
start batch is answered once every instance it asked for has started or failed; a stop batch
once every instance it halted is gone, so the per-instance `actor_stopped` events come first
and a scaler that reacts to `actors_stopped` sees the lower count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hostcore.wire import cloudevents

__all__ = ["BatchTracker"]

Publish = Callable[[cloudevents.Event], None]


@dataclass(slots=True, kw_only=True)
class _StartBatch:
    public_key: str
    image_ref: str
    annotations: dict[str, str]
    claims: dict[str, Any]
    pending: set[str]
    started: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class _StopBatch:
    event: cloudevents.Event
    pending: set[str]


class BatchTracker:
    """Bookkeeping of open batches for one ActorSupervisor; publishes through `publish`.
    Not thread-safe (actor use)."""

    def __init__(self, publish: Publish) -> None:
        self._publish_event = publish
        self.host_id = ""  # OTP puts the host id in each batch event's data too
        self._starts: list[_StartBatch] = []
        self._stops: list[_StopBatch] = []

    def _publish(self, event: cloudevents.Event) -> None:
        self._publish_event(event)

    # --- starts ----------------------------------------------------------------------------------

    def start_failed(self, public_key: str, image_ref: str, annotations: dict[str, str], error: str) -> None:
        """The whole batch was refused before any instance (fetch, claims, policy, other ref)."""
        self._publish(cloudevents.actors_start_failed(public_key=public_key, image_ref=image_ref,
                                                      annotations=annotations, error=error, host_id=self.host_id))

    def starting(self, instance_ids: Iterable[str], public_key: str, image_ref: str,
                 annotations: dict[str, str], claims: dict[str, Any]) -> None:
        """A batch's instances were asked to start; its event waits for each of them."""
        pending = set(instance_ids)
        if pending:
            self._starts.append(_StartBatch(public_key=public_key, image_ref=image_ref,
                                            annotations=dict(annotations), claims=claims, pending=pending))

    def instance_started(self, instance_id: str) -> None:
        self._resolve(instance_id, "")

    def instance_failed(self, instance_id: str, error: str) -> None:
        self._resolve(instance_id, error)

    def instance_cancelled(self, instance_id: str) -> None:
        """Halted while starting by a later request: neither started nor failed."""
        self._resolve(instance_id, "", counted=False)

    def _resolve(self, instance_id: str, error: str, *, counted: bool = True) -> None:
        batch = next((b for b in self._starts if instance_id in b.pending), None)
        if batch is None:
            return  # a restart, not part of a request
        batch.pending.discard(instance_id)
        if error:
            batch.errors.append(error)
        elif counted:
            batch.started += 1
        if batch.pending:
            return
        self._starts.remove(batch)
        if batch.started:
            self._publish(cloudevents.actors_started(public_key=batch.public_key, image_ref=batch.image_ref,
                                                     annotations=batch.annotations, claims=batch.claims,
                                                     count=batch.started, host_id=self.host_id))
        if batch.errors:
            self.start_failed(batch.public_key, batch.image_ref, batch.annotations, batch.errors[0])

    # --- stops -----------------------------------------------------------------------------------

    def stopping(self, instance_ids: Iterable[str], public_key: str, count: int, remaining: int,
                 annotations: dict[str, str]) -> None:
        """A stop request halted `instance_ids`; `count` is the request's, `remaining` the live
        instances of the key left on this host."""
        event = cloudevents.actors_stopped(public_key=public_key, count=count, remaining=remaining,
                                           annotations=annotations, host_id=self.host_id)
        pending = set(instance_ids)
        if not pending:
            self._publish(event)
        else:
            self._stops.append(_StopBatch(event=event, pending=pending))

    def instance_gone(self, instance_id: str) -> None:
        """An instance ended (stopped, or died while starting)."""
        if any(instance_id in b.pending for b in self._starts):
            self.instance_failed(instance_id, "actor instance exited while starting")
        for batch in list(self._stops):
            batch.pending.discard(instance_id)
            if not batch.pending:
                self._stops.remove(batch)
                self._publish(batch.event)
