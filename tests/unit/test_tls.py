"""The TLS context and the access checks, without a server (the e2e tests do handshakes)."""

from __future__ import annotations

import logging
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from cfylogs.config import Settings
from cfylogs.errors import ConfigError, Forbidden, Unauthorized
from cfylogs.http.auth import check_bearer, check_ingest_only
from cfylogs.tls import build_server_context, keytool_convert_line, peer_subject
from tests.certs import PASSWORD, SERVER_ALIAS, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def pem(pki: Pki, **extra: Any) -> Settings:
    files = {
        "ssl_certificate": pki.root / "server.pem",
        "ssl_certificate_private_key": pki.root / "server-key.pem",
    }
    return Settings(ssl_enabled=True, **{**files, **extra})


def keystore(pki: Pki, **extra: Any) -> Settings:
    store = {"ssl_key_store": pki.root / "server.p12", "ssl_key_store_password": PASSWORD}
    return Settings(ssl_enabled=True, **{**store, **extra})


def context_of(settings: Settings) -> ssl.SSLContext:
    context = build_server_context(settings)
    assert context is not None
    return context


def config_error(settings: Settings) -> str:
    with pytest.raises(ConfigError) as caught:
        build_server_context(settings)
    return str(caught.value)


def test_no_context_when_ssl_is_off() -> None:
    assert build_server_context(Settings()) is None


def test_tls_1_2_minimum_and_forward_secret_aead_suites_only(pki: Pki) -> None:
    context = context_of(pem(pki))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]


@pytest.mark.parametrize(
    ("client_auth", "mode"),
    [("need", ssl.CERT_REQUIRED), ("want", ssl.CERT_OPTIONAL), ("none", ssl.CERT_NONE)],
)
def test_client_auth_modes(pki: Pki, client_auth: str, mode: ssl.VerifyMode) -> None:
    settings = pem(pki, ssl_client_auth=client_auth, ssl_trust_certificate=pki.ca_pem)
    context = context_of(settings)
    assert context.verify_mode == mode
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("organizationName", "cfylogs tests"),), (("commonName", "cfylogs test CA"),))
    ]


def test_trust_material_without_client_auth_is_a_warning(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        context_of(pem(pki, ssl_trust_certificate=pki.ca_pem))
    assert "client-auth is none" in caplog.text


def test_key_alias_is_case_insensitive_as_in_java(pki: Pki) -> None:
    assert context_of(keystore(pki, ssl_key_alias=SERVER_ALIAS.upper()))


def test_jks_typed_store_holding_pkcs12_loads_as_java_does(pki: Pki) -> None:
    assert context_of(keystore(pki, ssl_key_store_type="jks"))


def test_key_password_is_a_second_guess_for_pkcs12(pki: Pki) -> None:
    assert context_of(keystore(pki, ssl_key_store_password="old", ssl_key_password=PASSWORD))


def test_the_key_never_stays_on_disk(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    context_of(keystore(pki))
    assert list(tmp_path.iterdir()) == []


def test_alias_of_a_certificate_entry_is_refused(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((pki.root / "server-key.pem").read_bytes(), None)
    server_cert = x509.load_pem_x509_certificates((pki.root / "server.pem").read_bytes())[0]
    ca_entry = pkcs12.PKCS12Certificate(pki.ca_cert, b"rootca")
    store = tmp_path / "two.p12"
    store.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server",
            key,
            server_cert,
            [ca_entry],
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    message = config_error(keystore(pki, ssl_key_store=store, ssl_key_alias="rootca"))
    assert "alias 'rootca' is a certificate entry, not a key entry" in message
    assert "-srcalias rootca" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ssl_key_store": "truststore.p12"}, "holds no private key with its certificate"),
        ({"ssl_key_store": "server.pem"}, "is a PEM file, not a keystore"),
        ({"ssl_key_store": "server.jks"}, "keytool -importkeystore"),
        ({"ssl_certificate": "server.pem"}, "not both"),
        ({"ssl_trust_store": "truststore.p12"}, "server.ssl.trust-store: cannot open"),
        ({"ssl_key_store": "."}, "is a directory, not a file"),
    ],
)
def test_keystore_errors_name_the_key(pki: Pki, change: dict[str, str], expected: str) -> None:
    values = {k: pki.root / v for k, v in change.items()}
    message = config_error(keystore(pki, **values))
    assert expected in message


def test_pem_certificate_file_that_is_not_pem(pki: Pki) -> None:
    message = config_error(pem(pki, ssl_certificate=pki.root / "server.p12"))
    assert "server.ssl.certificate" in message and "holds no PEM certificate" in message


def test_pem_key_with_wrong_password(pki: Pki) -> None:
    settings = pem(
        pki,
        ssl_certificate_private_key=pki.root / "server-key-encrypted.pem",
        ssl_key_password="wrong",
    )
    assert "server.ssl.key-password is wrong" in config_error(settings)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/etc/cfylogs/keystore.jks", "/etc/cfylogs/keystore.p12"),
        ("/etc/cfylogs/keystore.p12", "/etc/cfylogs/keystore-pkcs12.p12"),
        ("/etc/my dir/ks", "'/etc/my dir/ks.p12'"),
    ],
)
def test_keytool_line(path: str, target: str) -> None:
    line = keytool_convert_line(Path(path))
    assert line.startswith("keytool -importkeystore -srckeystore ")
    assert line.endswith(f" -destkeystore {target} -deststoretype PKCS12")


def test_peer_subject_without_tls_or_certificate() -> None:
    assert peer_subject(None) is None


# --- access checks


def test_ingest_only_allows_post_logs_with_or_without_slash() -> None:
    check_ingest_only("POST", "/api/v1/logs")
    check_ingest_only("POST", "/api/v1/logs/")
    for method, path in [("GET", "/api/v1/logs"), ("POST", "/api/v1/logs/x"), ("POST", "/")]:
        with pytest.raises(Forbidden):
            check_ingest_only(method, path)


def test_bearer_check() -> None:
    check_bearer(None, None, "security.x")  # no token configured: open
    check_bearer(b"Bearer s3cret", b"s3cret", "security.x")
    check_bearer(b"bearer  s3cret ", b"s3cret", "security.x")
    for header in [None, b"", b"Bearer", b"Bearer s3cre", b"Basic s3cret", b"Bearer s3cret2"]:
        with pytest.raises(Unauthorized) as caught:
            check_bearer(header, b"s3cret", "security.x")
        assert "s3cret" not in str(caught.value)
        assert "security.x" in str(caught.value)
