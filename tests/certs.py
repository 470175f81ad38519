"""A throw-away PKI made at test time: a CA, a server certificate, a client certificate.

EC P-256 keys: as real as RSA for TLS, and a hundred times faster to make.
Nothing here is committed; every file lands under the test's temp dir.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = "changeit"  # Java's default keystore password, as operators use it
SERVER_ALIAS = "cfylogs"
CLIENT_SUBJECT = "CN=orchestrator-a,O=Alien4Cloud"


def _name(common_name: str, org: str = "cfylogs tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
    not_before: dt.datetime | None = None,
    days: int = 365,
) -> x509.Certificate:
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem_key(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def pem_cert(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class Pki:
    """Files of a CA, a server (127.0.0.1/localhost) and a client, under `root`."""

    root: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    def write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    @property
    def ca_pem(self) -> Path:
        return self.root / "ca.pem"

    def issue(
        self,
        common_name: str,
        *,
        server: bool,
        days: int = 365,
        not_before: dt.datetime | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = new_key()
        sans: list[x509.GeneralName] = (
            [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))] if server else []
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        subject = _name(common_name) if server else x509.Name.from_rfc4514_string(CLIENT_SUBJECT)
        cert = _certificate(
            subject,
            key,
            self.ca_cert.subject,
            self.ca_key,
            usage=usage,
            sans=sans,
            days=days,
            not_before=not_before,
        )
        return key, cert

    def client_context(
        self, *, client_cert: bool = False, **versions: ssl.TLSVersion
    ) -> ssl.SSLContext:
        """A client context trusting the CA, optionally presenting the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        for attribute, version in versions.items():
            setattr(context, attribute, version)
        if client_cert:
            context.load_cert_chain(self.root / "client.pem", self.root / "client-key.pem")
        return context


def make_pki(root: Path) -> Pki:
    """CA, server and client material, in PEM and PKCS12, written under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    ca_key = new_key()
    ca_name = _name("cfylogs test CA")
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True, days=730)
    pki = Pki(root, ca_key, ca_cert)
    pki.write("ca.pem", pem_cert(ca_cert))

    server_key, server_cert = pki.issue("localhost", server=True)
    pki.write("server.pem", pem_cert(server_cert, ca_cert))
    pki.write("server-key.pem", pem_key(server_key))
    pki.write("server-key-encrypted.pem", pem_key(server_key, PASSWORD))
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    pki.write(
        "server.p12",
        pkcs12.serialize_key_and_certificates(
            SERVER_ALIAS.encode(), server_key, server_cert, [ca_cert], encryption
        ),
    )
    pki.write(
        "truststore.p12",
        pkcs12.serialize_key_and_certificates(None, None, None, [ca_cert], encryption),
    )

    client_key, client_cert = pki.issue("orchestrator-a", server=False)
    pki.write("client.pem", pem_cert(client_cert))
    pki.write("client-key.pem", pem_key(client_key))

    expired_start = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired_key, expired_cert = pki.issue(
        "localhost", server=True, days=2, not_before=expired_start
    )
    pki.write("expired.pem", pem_cert(expired_cert))
    pki.write("expired-key.pem", pem_key(expired_key))

    pki.write("other-key.pem", pem_key(new_key()))
    # What `keytool -genkeypair -storetype JKS` writes starts with this magic
    # number and version; the relay recognises the format by it.
    pki.write("server.jks", b"\xfe\xed\xfe\xed\x00\x00\x00\x02" + b"\x00" * 64)
    return pki
