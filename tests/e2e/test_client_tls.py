"""The client library and commands against the relay's own TLS listener (mutual TLS + token)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cfylogs.client import Client, TlsOptions, TransportError, Unauthorized
from tests.certs import CLIENT_SUBJECT, Pki, make_pki
from tests.conftest import ServerFactory
from tests.support import ServerProcess

TOKEN = "consumer-token-for-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mutual_tls_server(server_factory: ServerFactory, pki: Pki) -> ServerProcess:
    ssl: dict[str, Any] = {
        "enabled": True,
        "certificate": str(pki.root / "server.pem"),
        "certificate-private-key": str(pki.root / "server-key.pem"),
        "trust-certificate": str(pki.ca_pem),
        "client-auth": "need",
    }
    config = {"server": {"http": {"port": 0}, "ssl": ssl}, "security": {"consumer_token": TOKEN}}
    return server_factory(config=config).start()


def tls_options(pki: Pki) -> TlsOptions:
    return TlsOptions(pki.ca_pem, pki.root / "client.pem", pki.root / "client-key.pem")


def test_mutual_tls_and_token(mutual_tls_server: ServerProcess, pki: Pki) -> None:
    with Client(mutual_tls_server.url, token=TOKEN, tls=tls_options(pki)) as client:
        assert client.health().ok
        registration = client.register(name="over-tls")
        [listed] = client.registrations()
        assert (listed.id, listed.client_subject) == (registration, CLIENT_SUBJECT)
    wrong = Client(mutual_tls_server.url, token="wrong", tls=tls_options(pki))
    with wrong as client, pytest.raises(Unauthorized):
        client.registrations()


def test_an_unknown_server_certificate_is_refused(
    mutual_tls_server: ServerProcess, pki: Pki
) -> None:
    tls = TlsOptions(certfile=pki.root / "client.pem", keyfile=pki.root / "client-key.pem")
    untrusting = Client(mutual_tls_server.url, token=TOKEN, tls=tls)
    with untrusting as client, pytest.raises(TransportError, match="CERTIFICATE"):
        client.health()


def test_the_commands_take_the_tls_and_token_options(
    mutual_tls_server: ServerProcess, pki: Pki
) -> None:
    tls_args = ["--cacert", str(pki.ca_pem), "--cert", str(pki.root / "client.pem")]
    tls_args += ["--key", str(pki.root / "client-key.pem"), "--token", TOKEN]
    result = subprocess.run(
        [sys.executable, "-m", "cfylogs", "status", mutual_tls_server.url, "--json", *tls_args],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["health"]["status"] == "ok"
