"""nats-server configurations generated per test: nkey users, operator mode (JWTs made with
hostcore.natsjwt, resolver MEMORY with preload), TLS with a CA made here. Each `Server` is a real
nats-server process with JetStream, on a free loopback port."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostcore.nats_server import EmbeddedNatsServer
from hostcore.native.nkeys import KeyKind, KeyPair
from hostcore.natsjwt import account_jwt, format_creds, operator_jwt, user_jwt


@dataclass
class Server:
    """A running nats-server and what a client needs to join it (env for a host)."""

    nats: EmbeddedNatsServer
    scheme: str = "nats"
    secrets: list[str] = field(default_factory=list)  # every secret a host was given for it

    @property
    def port(self) -> int:
        return self.nats.port

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.nats.port}"

    def close(self) -> None:
        self.nats.close()


def start_server(workdir: Path, config: str, *, scheme: str = "nats") -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "server.conf"
    conf.write_text(config)
    nats = EmbeddedNatsServer(workdir / "store", extra_args=("-c", str(conf))).start()
    return Server(nats=nats, scheme=scheme)


def nkey_users_config(*users: str) -> str:
    entries = ", ".join(f'{{nkey: "{u}"}}' for u in users)
    return f"authorization {{ users = [ {entries} ] }}\n"


@dataclass
class Operator:
    """An operator, one account with JetStream, and a server config that trusts them."""

    operator: KeyPair = field(default_factory=lambda: KeyPair.generate(KeyKind.OPERATOR))
    account: KeyPair = field(default_factory=lambda: KeyPair.generate(KeyKind.ACCOUNT))
    system: KeyPair = field(default_factory=lambda: KeyPair.generate(KeyKind.ACCOUNT))

    def config(self) -> str:
        op, acct, sys_ = self.operator, self.account.public_key, self.system.public_key
        return (f'operator: "{operator_jwt(op, system_account=sys_)}"\n'
                f'system_account: "{sys_}"\n'
                "resolver: MEMORY\n"
                f'resolver_preload: {{\n  {acct}: "{account_jwt(op, acct)}"\n'
                f'  {sys_}: "{account_jwt(op, sys_, "SYS", jetstream=False)}"\n}}\n')

    def user(self, name: str = "host") -> tuple[str, str]:
        """(user JWT, user seed) of a new user of the account."""
        user = KeyPair.generate(KeyKind.USER)
        return user_jwt(self.account, user.public_key, name), user.seed

    def creds(self, path: Path, name: str = "host") -> Path:
        jwt, seed = self.user(name)
        path.write_text(format_creds(jwt, seed))
        return path


@dataclass
class Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files under `workdir`."""

    workdir: Path

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostcore test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file = self.workdir / "ca.pem"
        self.cert_file = self.workdir / "server.pem"
        self.key_file = self.workdir / "server-key.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))

    def server_config(self) -> str:
        return f'tls {{ cert_file: "{self.cert_file}", key_file: "{self.key_file}" }}\n'
