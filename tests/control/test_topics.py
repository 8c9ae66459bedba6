from hostcore.wire import subjects as topics


def test_parse_host_commands_and_lattice_requests() -> None:
    p = topics.prefix("wasmbus.ctl", "default")
    assert topics.parse(p, "wasmbus.ctl.default.cmd.NHOST.scale") == topics.ControlTopic("cmd", "scale", "NHOST")
    assert topics.parse(p, "wasmbus.ctl.default.get.NHOST.inv") == topics.ControlTopic("get", "inv", "NHOST")
    assert topics.parse(p, "wasmbus.ctl.default.get.claims") == topics.ControlTopic("get", "claims")
    assert topics.parse(p, "wasmbus.ctl.default.ping.hosts") == topics.ControlTopic("ping", "hosts")
    assert topics.parse(p, "wasmbus.ctl.other.ping.hosts") is None
    assert topics.parse(p, "wasmbus.ctl.default.cmd.too.many.parts") is None


def test_any_ctl_prefix_works() -> None:
    # QUIRK fixed: v0.59 assumed a two-token ctl prefix.
    p = topics.prefix("acme.control.plane", "lat-1")
    assert topics.parse(p, f"{p}.cmd.NX.stop") == topics.ControlTopic("cmd", "stop", "NX")
    assert topics.host_command(p, "NX", "la") == "acme.control.plane.lat-1.cmd.NX.la"
    assert topics.inventory(p, "NX") == "acme.control.plane.lat-1.get.NX.inv"
