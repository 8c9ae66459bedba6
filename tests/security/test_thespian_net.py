"""hostcore.thespian_net: the Thespian internals it adapts are still the verified ones, the bind
patch binds the configured address, and the frame serializer refuses forged frames before
unpickling."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hostcore.config import ThespianNetwork
from hostcore.thespian_net import (
    VERIFIED_THESPIAN,
    FrameAuthFailed,
    HmacPickle,
    ThespianUnverified,
    _ack_frames,
    secure_thespian,
)


def test_thespian_is_the_verified_version_with_the_adapted_internals() -> None:
    """Fails when Thespian changes: re-verify the adaptation, then update VERIFIED_THESPIAN."""
    from thespian.system.transport import IPBase, TCPTransport, streamBuffer

    assert importlib.metadata.version("thespian") == VERIFIED_THESPIAN
    ipbase, tcp = inspect.getsource(IPBase), inspect.getsource(TCPTransport)
    # Every external address binds all interfaces; bindArgs is what the transport binds.
    assert "self.bindname = ('', sa[1]) if external else sa" in ipbase
    assert "def bindArgs(self): return self.bindname," in ipbase
    assert "self.socket.bind(*templateAddr.addressDetails.bindArgs)" in tcp
    # The module-global serializer frames every message and unpickles every received one.
    assert "serializer = pickle" in tcp
    assert "return toSendBuffer((self.myAddress, intent.message), serializer.dumps)" in tcp
    assert tcp.count("ReceiveBuffer(serializer.loads)") == 4
    assert "pickle.loads" not in tcp.replace("serializer.loads", "")
    assert streamBuffer.ackMsg == b"%d>" % len(pickle.dumps("ACK")) + pickle.dumps("ACK")


def test_another_thespian_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "4.0.2")
    with pytest.raises(ThespianUnverified, match="thespian 4.0.2 is installed"):
        secure_thespian(ThespianNetwork(), convention=False)


class Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.path),)


def test_hmac_pickle_round_trips_and_refuses_before_unpickling(tmp_path: Path) -> None:
    mine, theirs = HmacPickle(b"s" * 32, _ack_frames()), HmacPickle(b"t" * 32, _ack_frames())
    assert mine.loads(mine.dumps({"a": (1, "x")})) == {"a": (1, "x")}
    marker = tmp_path / "unpickled"
    for forged in (pickle.dumps(Touch(marker)), theirs.dumps(Touch(marker)), b"", b"\x00" * 40):
        with pytest.raises(FrameAuthFailed):
            mine.loads(forged)
    tagged = bytearray(mine.dumps("hello"))
    tagged[-2] ^= 1
    with pytest.raises(FrameAuthFailed):
        mine.loads(bytes(tagged))
    assert not marker.exists()
    # Thespian's fixed acknowledgements, pre-pickled at import, still pass.
    assert {mine.loads(a) for a in _ack_frames()} == {"ACK", "ACK+DATAERR"}


_PROBE = """
import sys
from hostcore.config import ThespianNetwork
from hostcore.thespian_net import secure_thespian
secure_thespian(ThespianNetwork(bind=sys.argv[1], allow_insecure=True), convention=True)
from thespian.system.transport.IPBase import TCPv4ActorAddress
a = TCPv4ActorAddress(None, 0, external=True)
print(a.bindArgs[0][0], a.sockname[0])
"""


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_external_addresses_bind_the_configured_address(bind: str) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, bind], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "THESPIAN_BASE_IPADDR"})
    assert out.returncode == 0, out.stderr
    bound, advertised = out.stdout.strip("\n").split(" ")
    if bind == "0.0.0.0":  # asked for all interfaces: Thespian's own behaviour
        assert bound == "" and advertised not in ("", "0.0.0.0")
    else:
        assert (bound, advertised) == (bind, bind)
