"""hostcore.providers.httpserver.settings and .messages: link values and payload shapes (pure)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgpack
import pytest

from hostcore.errors import ProviderDeserFailed, ProviderOperationFailed
from hostcore.providers.httpserver import HttpRequest, HttpResponse, ServiceSettings, load_settings


def test_defaults() -> None:
    assert load_settings({}) == ServiceSettings(address=("127.0.0.1", 8000))


def test_port_and_address_case_insensitive() -> None:
    assert load_settings({"PORT": "8080"}).address == ("127.0.0.1", 8080)
    assert load_settings({"ADDRESS": "0.0.0.0:9000"}).address == ("0.0.0.0", 9000)
    assert load_settings({"address": "[::1]:9001"}).address_text == "[::1]:9001"
    # port is applied after address, as the Rust provider does
    assert load_settings({"address": "0.0.0.0:9000", "port": "9002"}).address == ("127.0.0.1", 9002)


def test_config_sources_in_order(tmp_path: Path) -> None:
    file = tmp_path / "http.toml"
    file.write_text('address = "127.0.0.1:7001"\ntimeout_ms = 100\n')
    b64 = base64.b64encode(json.dumps({"address": "127.0.0.1:7002", "max_content_len": "2m"}).encode()).decode()
    s = load_settings({"config_file": str(file), "config_b64": b64.rstrip("=")})
    assert s == ServiceSettings(address=("127.0.0.1", 7002), timeout_ms=100, max_content_len=2 * 1024 * 1024)
    s = load_settings({"config_json": json.dumps({"address": "127.0.0.1:7003"})}, defaults_json='{"timeout_ms": 50}')
    assert (s.address, s.timeout_ms) == (("127.0.0.1", 7003), 50)


@pytest.mark.parametrize(("values", "text"), [
    ({"PORT": "http"}, "invalid parameter: Invalid port: http"),
    ({"address": "localhost:80"}, "invalid parameter: invalid address: localhost:80"),
    ({"config_json": "{"}, "problem reading settings: invalid json"),
    ({"config_json": '{"max_content_len": "12q"}'}, "invalid parameter: max_content_len"),
    ({"config_json": '{"tls": {"cert_file": "c.pem"}}'}, "both 'cert_file' and 'priv_key_file'"),
    ({"port": "1", "PORT": "2"}, "Key collision"),
    ({"config_file": "/nonexistent.yaml"}, "problem reading settings: reading file"),
])
def test_bad_values(values: dict[str, str], text: str) -> None:
    with pytest.raises(ProviderOperationFailed) as err:
        load_settings(values)
    assert text in err.value.wire


def test_http_messages_round_trip() -> None:
    req = HttpRequest(method="GET", path="/p", query_string="a=1", header={"x": ["1", "2"]}, body=b"\x00\xff")
    wire = msgpack.unpackb(req.to_wire(), raw=False)
    assert wire == {"method": "GET", "path": "/p", "queryString": "a=1", "header": {"x": ["1", "2"]}, "body": b"\x00\xff"}
    assert HttpRequest.from_wire(req.to_wire()) == req
    resp = HttpResponse(status_code=404, header={"a": ["b"]}, body=b"nf")
    assert msgpack.unpackb(resp.to_wire(), raw=False) == {"statusCode": 404, "header": {"a": ["b"]}, "body": b"nf"}
    # Elixir-style str body, missing header, a Vec<u8> body: all accepted
    assert HttpResponse.from_wire(msgpack.packb({"statusCode": 200, "body": "text"})).body == b"text"
    assert HttpResponse.from_wire(msgpack.packb({"statusCode": 200, "body": [104, 105]})).body == b"hi"
    with pytest.raises(ProviderDeserFailed):
        HttpResponse.from_wire(msgpack.packb({"body": b""}))
    with pytest.raises(ProviderDeserFailed):
        HttpResponse.from_wire(b"\xc1")
