"""TLS options and the token, over a real TLS handshake with certificates made here.

The relay's own TLS listener is another piece of work; a minimal HTTPS
server stands in for it, requiring a client certificate and recording what
it was sent, so the client side is checked on its own.
"""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cfylogs.client import Client, TlsOptions, TransportError


def make_cert(
    directory: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), False
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        Recorder.seen.append({"authorization": self.headers.get("authorization"), "peer": peer})
        answer: dict[str, Any] = {"status": "ok", "version": "test", "uptime_sec": 1}
        if self.path == "/api/v1/registration":
            answer = {"registrations": []}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = make_cert(tmp_path, "ca", None)
    make_cert(tmp_path, "localhost", ca)
    make_cert(tmp_path, "orchestrator", ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "localhost.pem", tmp_path / "localhost.key")
    context.load_verify_locations(tmp_path / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Recorder.seen = []
    yield f"https://localhost:{httpd.server_address[1]}", tmp_path
    httpd.shutdown()
    httpd.server_close()


def test_mutual_tls_and_token(https_server: tuple[str, Path]) -> None:
    url, certs = https_server
    tls = TlsOptions(certs / "ca.pem", certs / "orchestrator.pem", certs / "orchestrator.key")
    with Client(url, token="s3cret", tls=tls) as client:
        assert client.health().ok
    [request] = Recorder.seen
    assert request["authorization"] == "Bearer s3cret"
    assert request["peer"]["subject"] == ((("commonName", "orchestrator"),),)


def test_an_unknown_server_certificate_is_refused(https_server: tuple[str, Path]) -> None:
    url, certs = https_server
    tls = TlsOptions(certfile=certs / "orchestrator.pem", keyfile=certs / "orchestrator.key")
    with Client(url, tls=tls) as client, pytest.raises(TransportError, match="CERTIFICATE"):
        client.health()
    assert Recorder.seen == []


def test_the_commands_take_the_tls_and_token_options(https_server: tuple[str, Path]) -> None:
    url, certs = https_server
    tls_args = ["--cacert", str(certs / "ca.pem"), "--cert", str(certs / "orchestrator.pem")]
    tls_args += ["--key", str(certs / "orchestrator.key"), "--token", "s3cret"]
    result = subprocess.run(
        [sys.executable, "-m", "cfylogs", "status", url, "--json", *tls_args],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["health"]["version"] == "test"
    assert [r["authorization"] for r in Recorder.seen] == ["Bearer s3cret"] * 2
