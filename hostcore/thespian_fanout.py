"""Thespian under load (hundreds of children, large messages): three adjustments.

Every child exit reaches its parent actor. Thespian's SIGCHLD handler (`childDied`) sends its
actor a ChildActorExited for each child it finds dead. Handling one of those (`_childExited`) then
re-scans the children and drops every one dead by then *without* announcing it, so a child that
died after the first scan (several killed at once, a burst of stops) was never reported: its
supervisor kept counting it and never replaced it. Here the re-scan announces the ones it drops,
as `childDied` does.

Sends are not queued behind the first 20 in flight. Beyond THESPIAN_MAX_PENDING_TRANSMITS (20)
Thespian queues a process's sends, rescans that queue on every completion (O(n²) for a burst) and
drops what passes ~1050 queued: a burst of child exits (each one a message to itself) or of
messages to hundreds of children could lose some. The limit is raised so that no queue forms.

Messages are not rendered as text on every hop. Thespian builds a description of each message
it sends and receives (`identify()`, `str(message)` cut to 150 characters) for a debug log line
it then drops, so the whole dataclass repr of an inventory of 500 instances, or of a batch of
records, was built twice per hop: 30 % of ActorSupervisor's time answering an inventory. A
hostcore message is described by its type.

All three are checked against the verified Thespian version (hostcore/thespian_net.py).
"""

from __future__ import annotations

import logging
from typing import Any

from thespian.actors import ChildActorExited
from thespian.system import multiprocCommon
from thespian.system.addressManager import CannotPickleAddress
from thespian.system.transport import ReceiveEnvelope, TransmitIntent, asyncTransportBase

from hostcore.thespian_net import check_version

__all__ = ["prepare_for_fanout"]

MAX_PENDING_TRANSMITS = 4096

log = logging.getLogger(__name__)


def _child_exited(self: Any, child_address: Any) -> None:
    alive, dead = [], []
    for child in getattr(self, "_child_procs", []):
        (alive if self._checkChildLiveness(child) else dead).append(child)
    self._child_procs = alive
    for child in dead:
        address = getattr(child, "childRealAddr", child.childAddr)
        if address == child_address:
            continue  # the one being handled
        try:
            self.transport.scheduleTransmit(None, TransmitIntent(self.transport.myAddress, ChildActorExited(address)))
        except CannotPickleAddress:
            log.error("a child process died before it reported its address", extra={"child": str(address)})


_SHOWN = 150  # Thespian's MAX_SHOWLEN


def _describe(message: Any) -> str:
    if type(message).__module__.startswith("hostcore."):
        return f"<{type(message).__name__}>"
    try:
        text = str(message)  # Thespian's own messages: short
    except Exception:  # noqa: BLE001 -- a description for a debug line, never an error
        return "<message>"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _envelope_identify(self: ReceiveEnvelope) -> str:
    return f"ReceiveEnvelope(from: {self.sender}, {type(self.message)} msg: {_describe(self.message)})"


def _intent_identify(self: TransmitIntent) -> str:
    return f"TransportIntent({self.targetAddr}-{type(self.message)} {_describe(self.message)})"


def prepare_for_fanout() -> None:
    """Apply all three in this process (and the processes it forks). Idempotent.

    Raises:
        ThespianUnverified: the installed Thespian is not the verified version.
    """
    check_version()
    multiprocCommon.MultiProcReplicator._childExited = _child_exited
    asyncTransportBase.MAX_PENDING_TRANSMITS = MAX_PENDING_TRANSMITS
    ReceiveEnvelope.identify = _envelope_identify
    TransmitIntent.identify = _intent_identify
