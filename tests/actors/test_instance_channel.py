"""The template ↔ instance channel (hostcore/actors/channel.py): frames survive any split, and
only the host's own user may connect."""

from __future__ import annotations

import os
import socket
import threading
import uuid

from hostcore.actors.channel import Assign, FrameReader, Hello, frame, listen, peer_uid, rendezvous
from hostcore.tree.messages import LatticeSnapshot


def test_frames_come_out_whole_however_the_bytes_are_cut() -> None:
    messages = [Hello(instance_id="i1", pid=10, api_version=1), LatticeSnapshot(),
                Hello(instance_id="i2", pid=11, error="bad module " * 1000),
                Hello(instance_id="spare-1", pid=12, spare=True), Assign("i3")]
    data = b"".join(frame(m) for m in messages)
    for cut in (1, 3, 7, 64, len(data)):
        reader, out = FrameReader(), []
        for i in range(0, len(data), cut):
            out.extend(reader.feed(data[i:i + cut]))
        assert out == messages


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader, data = FrameReader(), frame(Hello(instance_id="i1", pid=1))
    assert reader.feed(data[:-1]) == []
    assert reader.feed(data[-1:]) == [Hello(instance_id="i1", pid=1)]


def test_the_rendezvous_is_per_host_and_names_our_own_peers() -> None:
    name = rendezvous(f"N{uuid.uuid4().hex}")
    assert name.startswith("\0") and name != rendezvous("NOTHER")
    with listen(name) as listener:
        listener.setblocking(True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(name)
            server, _ = listener.accept()
            with server:
                assert peer_uid(server) == os.getuid()


def test_a_successor_listens_once_its_predecessor_let_go_of_the_name() -> None:
    name = rendezvous(f"N{uuid.uuid4().hex}")
    predecessor = listen(name)
    threading.Timer(0.1, predecessor.close).start()
    with listen(name) as successor:  # retried until the name is free, not refused at once
        assert successor.getsockname() == name.encode()
