"""SSL mode, mutual TLS and tokens, against a real `cfylogs serve` with real handshakes.

Certificates are made at test time (tests/certs.py); every server listens on
127.0.0.1 with port 0 for both the HTTPS (`api`) and the plain (`http`) port.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.certs import CLIENT_SUBJECT, PASSWORD, SERVER_ALIAS, Pki, make_pki
from tests.conftest import ServerFactory
from tests.support import Api, ServerProcess, cloudify_log

INGEST_TOKEN = "ingest-7c1f0e9a5b"
CONSUMER_TOKEN = "consumer-44d2a8e6f3"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def pem_keys(pki: Pki) -> dict[str, Any]:
    return {
        "certificate": str(pki.root / "server.pem"),
        "certificate-private-key": str(pki.root / "server-key.pem"),
    }


def pkcs12_keys(pki: Pki) -> dict[str, Any]:
    return {
        "key-store": str(pki.root / "server.p12"),
        "key-store-password": PASSWORD,
        "key-store-type": "PKCS12",
        "key-alias": SERVER_ALIAS,
    }


def ssl_config(ssl_keys: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"server": {"http": {"port": 0}, "ssl": {"enabled": True, **ssl_keys}}, **extra}


def https(server: ServerProcess, pki: Pki, client_cert: bool = False) -> httpx.Client:
    context = pki.client_context(client_cert=client_cert)
    return httpx.Client(base_url=server.url, verify=context, timeout=10)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None
    assert body["error"]["code"] == status
    assert body["error"]["message"]


# --- SSL mode: two listeners


def test_whole_api_over_https_and_ingest_over_plain_http(
    server_factory: ServerFactory, pki: Pki
) -> None:
    server = server_factory(config=ssl_config(pem_keys(pki))).start()
    assert server.urls["api"].startswith("https://")
    assert server.urls["http"].startswith("http://")
    with https(server, pki) as client:
        api = Api(client)
        assert client.get("/health").json()["status"] == "ok"
        registration = api.register("over-https")
        assert api.push(cloudify_log(1)).status_code == 200
        plain = httpx.post(
            server.urls["http"] + "/api/v1/logs/",  # Logstash configs often end with a slash
            content=cloudify_log(2),
            headers={"content-type": "application/json"},
        )
        assert plain.status_code == 200, plain.text
        assert plain.json() == {"accepted": 1}
        assert [e["seq"] for e in api.drain(registration)] == [1, 2]
        listed = client.get("/api/v1/registration").json()["registrations"]
        assert [(r["id"], r["name"], r["client_subject"]) for r in listed] == [
            (registration, "over-https", None)
        ]
        assert client.delete(f"/api/v1/registration/{registration}").status_code == 200
    assert server.stop() == 0


FORBIDDEN_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FORBIDDEN_PATHS = [
    "/api/v1/logs/{id}",
    "/api/v1/logs/{id}/",
    "/api/v1/logs/{id}/ack/0",
    "/api/v1/registration",
    "/api/v1/registration/",
    "/api/v1/registration/{id}",
    "/api/v1",
    "/health",
    "/metrics",
    "/openapi.json",
    "/",
    "/no/such/path",
]


def test_plain_http_port_answers_403_to_everything_but_ingest(
    server_factory: ServerFactory, pki: Pki
) -> None:
    server = server_factory(config=ssl_config(pem_keys(pki))).start()
    with https(server, pki) as secure:
        registration = Api(secure).register()
    seen = 0
    with httpx.Client(base_url=server.urls["http"], timeout=10) as plain:
        for method in [m for m in FORBIDDEN_METHODS if m != "POST"]:
            for path in ["/api/v1/logs", "/api/v1/logs/"]:
                assert_error(plain.request(method, path), 403)
                seen += 1
        for method in FORBIDDEN_METHODS:
            for path in FORBIDDEN_PATHS:
                response = plain.request(method, path.format(id=registration), content=b"{}")
                assert_error(response, 403)
                seen += 1
        head = plain.head("/api/v1/logs")
        assert head.status_code == 403
        for path in ["/api/v1/logs", "/api/v1/logs/"]:
            assert plain.post(path, content=cloudify_log(seen)).status_code == 200
    # the 403s changed nothing: the registration is there and has only the two events
    with https(server, pki) as secure:
        assert len(Api(secure).drain(registration)) == 2


def test_https_port_refuses_plain_http(server_factory: ServerFactory, pki: Pki) -> None:
    server = server_factory(config=ssl_config(pem_keys(pki))).start()
    with socket.create_connection(address(server.url), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert not answer.startswith(b"HTTP/"), answer
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url.replace("https://", "http://") + "/health", timeout=10)
    # and the HTTPS port still works after the garbage
    with https(server, pki) as client:
        assert client.get("/health").status_code == 200


# --- protocol versions


def tls_handshake(target: tuple[str, int], context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(target, timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        return tls.version()


def tls11_client(pki: Pki) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated: the point
        context = pki.client_context(
            minimum_version=ssl.TLSVersion.TLSv1_1, maximum_version=ssl.TLSVersion.TLSv1_1
        )
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at level 1+
    return context


def client_can_speak_tls11(pki: Pki, client: ssl.SSLContext) -> bool:
    """Control: the same client completes TLS 1.1 with a server that allows it."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(pki.root / "server.pem", pki.root / "server-key.pem")
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            conn, _ = listener.accept()
            with conn, server.wrap_socket(conn, server_side=True):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            return tls_handshake(listener.getsockname(), client) == "TLSv1.1"
        except ssl.SSLError:
            return False
        finally:
            thread.join(10)


def test_tls_1_1_is_refused_tls_1_2_and_1_3_accepted(
    server_factory: ServerFactory, pki: Pki
) -> None:
    server = server_factory(config=ssl_config(pem_keys(pki))).start()
    target = address(server.url)
    old = tls11_client(pki)
    if client_can_speak_tls11(pki, tls11_client(pki)):
        with pytest.raises(ssl.SSLError):
            tls_handshake(target, old)
    else:  # this OpenSSL cannot offer TLS 1.1 at all: the unit tests pin the minimum instead
        pytest.skip("the local OpenSSL cannot offer TLS 1.1 as a client")
    tls12 = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert tls_handshake(target, tls12) == "TLSv1.2"
    assert tls_handshake(target, pki.client_context()) == "TLSv1.3"


# --- keystores and mutual TLS


def registrations(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/api/v1/registration")
    assert response.status_code == 200, response.text
    return list(response.json()["registrations"])


def test_client_auth_need_refuses_a_client_without_certificate(
    server_factory: ServerFactory, pki: Pki
) -> None:
    keys = {**pem_keys(pki), "trust-certificate": str(pki.ca_pem), "client-auth": "need"}
    server = server_factory(config=ssl_config(keys)).start()
    with https(server, pki) as anonymous, pytest.raises(httpx.TransportError):
        anonymous.post("/api/v1/registration", json={})
    with https(server, pki, client_cert=True) as client:
        registration = Api(client).register("mutual")
        assert [(r["id"], r["client_subject"]) for r in registrations(client)] == [
            (registration, CLIENT_SUBJECT)
        ]
    # the plain port needs no certificate: Logstash has none
    plain = httpx.post(server.urls["http"] + "/api/v1/logs", content=cloudify_log(1))
    assert plain.status_code == 200


def test_pkcs12_keystore_and_truststore_with_client_auth_want(
    server_factory: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    keys = {
        **pkcs12_keys(pki),
        "trust-store": str(pki.root / "truststore.p12"),
        "trust-store-password": PASSWORD,
        "client-auth": "want",
    }
    server = server_factory(config=ssl_config(keys)).start()
    with https(server, pki) as anonymous:
        without = Api(anonymous).register("anonymous")
    with https(server, pki, client_cert=True) as client:
        with_cert = Api(client).register("with-cert")
        subjects = {r["id"]: r["client_subject"] for r in registrations(client)}
    assert subjects == {without: None, with_cert: CLIENT_SUBJECT}
    # "want" still refuses a certificate from a CA it does not trust
    rogue = make_pki(tmp_path / "rogue")
    untrusted = pki.client_context()
    untrusted.load_cert_chain(rogue.root / "client.pem", rogue.root / "client-key.pem")
    with (
        httpx.Client(base_url=server.url, verify=untrusted, timeout=10) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post("/api/v1/registration", json={})


def test_expired_certificate_starts_with_a_loud_warning(
    server_factory: ServerFactory, pki: Pki
) -> None:
    keys = {
        "certificate": str(pki.root / "expired.pem"),
        "certificate-private-key": str(pki.root / "expired-key.pem"),
    }
    server = server_factory(config=ssl_config(keys)).start()
    assert "EXPIRED on" in server.run_log()
    # clients refuse it; Logstash's plain port keeps storing events meanwhile
    with https(server, pki) as client, pytest.raises(httpx.ConnectError, match="expired"):
        client.get("/health")
    assert httpx.post(server.urls["http"] + "/api/v1/logs", content=b"{}").status_code == 200


# --- start-up errors: exit 2 with a message naming the key


def startup_error_cases(pki: Pki) -> dict[str, tuple[dict[str, Any], list[str]]]:
    root = pki.root
    jks = root / "server.jks"
    return {
        "wrong keystore password": (
            {**pkcs12_keys(pki), "key-store-password": "not-it"},
            ["server.ssl.key-store", "the password is wrong", "server.ssl.key-store-password"],
        ),
        "missing certificate file": (
            {**pem_keys(pki), "certificate": str(root / "nowhere.pem")},
            ["server.ssl.certificate", "nowhere.pem: file not found"],
        ),
        "missing keystore file": (
            {**pkcs12_keys(pki), "key-store": str(root / "nowhere.p12")},
            ["server.ssl.key-store", "nowhere.p12: file not found"],
        ),
        "key does not match certificate": (
            {**pem_keys(pki), "certificate-private-key": str(root / "other-key.pem")},
            ["server.ssl.certificate-private-key", "does not match the certificate"],
        ),
        "unknown alias": (
            {**pkcs12_keys(pki), "key-alias": "tomcat"},
            ["server.ssl.key-alias", "no key entry has the alias 'tomcat'", "'cfylogs'"],
        ),
        "encrypted key without password": (
            {**pem_keys(pki), "certificate-private-key": str(root / "server-key-encrypted.pem")},
            ["server.ssl.certificate-private-key", "is encrypted", "server.ssl.key-password"],
        ),
        "JKS keystore": (
            {"key-store": str(jks), "key-store-password": PASSWORD, "key-store-type": "JKS"},
            [
                "is a Java JKS keystore",
                f"keytool -importkeystore -srckeystore {jks} -destkeystore "
                f"{root / 'server.p12'} -deststoretype PKCS12",
            ],
        ),
        "client-auth without trust": (
            {**pem_keys(pki), "client-auth": "need"},
            ["server.ssl.client-auth is need", "server.ssl.trust-certificate"],
        ),
        "no certificate at all": ({}, ["no server certificate is configured"]),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong keystore password",
        "missing certificate file",
        "missing keystore file",
        "key does not match certificate",
        "unknown alias",
        "encrypted key without password",
        "JKS keystore",
        "client-auth without trust",
        "no certificate at all",
    ],
)
def test_startup_error_exits_2_naming_the_key(
    server_factory: ServerFactory, pki: Pki, case: str
) -> None:
    keys, expected = startup_error_cases(pki)[case]
    server = server_factory(config=ssl_config(keys))
    server.start(expect_ready=False)
    assert server.wait_exit() == 2
    output = server.run_log()
    for text in expected:
        assert text in output
    assert str(server.config_path) in output  # names the file too
    assert "Traceback" not in output
    assert not (server.home / "cfylogs.sqlite3").exists()  # refused before opening the store


def test_encrypted_pem_key_with_key_password(server_factory: ServerFactory, pki: Pki) -> None:
    keys = {
        **pem_keys(pki),
        "certificate-private-key": str(pki.root / "server-key-encrypted.pem"),
        "key-password": PASSWORD,
    }
    server = server_factory(config=ssl_config(keys)).start()
    with https(server, pki) as client:
        assert client.get("/health").status_code == 200


# --- tokens


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


CONSUMER_CALLS = [
    ("POST", "/api/v1/registration"),
    ("GET", "/api/v1/registration"),
    ("DELETE", f"/api/v1/registration/{UNKNOWN}"),
    ("GET", f"/api/v1/logs/{UNKNOWN}"),
    ("DELETE", f"/api/v1/logs/{UNKNOWN}/ack/0"),
]


def test_tokens_guard_every_api_call_but_health(server_factory: ServerFactory, pki: Pki) -> None:
    tokens = {"security": {"ingest_token": INGEST_TOKEN, "consumer_token": CONSUMER_TOKEN}}
    server = server_factory(config=ssl_config(pem_keys(pki), **tokens))
    server.config["server"]["access_log"] = True
    server.start()
    wrong = [{}, bearer("nope"), {"authorization": f"Basic {CONSUMER_TOKEN}"}]
    event = cloudify_log(1)
    with https(server, pki) as client:
        for method, path in CONSUMER_CALLS:
            for headers in [*wrong, bearer(INGEST_TOKEN)]:
                response = client.request(method, path, headers=headers, content=b"{}")
                assert_error(response, 401)
            allowed = client.request(method, path, headers=bearer(CONSUMER_TOKEN), content=b"{}")
            assert allowed.status_code in (200, 404), (method, path, allowed.text)
        for headers in [*wrong, bearer(CONSUMER_TOKEN)]:
            assert_error(client.post("/api/v1/logs", content=event, headers=headers), 401)
        assert client.get("/health").status_code == 200

        client.headers.update(bearer(CONSUMER_TOKEN))
        registration = Api(client).register()
        ingest = client.post("/api/v1/logs", content=event, headers=bearer(INGEST_TOKEN))
        assert ingest.status_code == 200
    plain_url = server.urls["http"] + "/api/v1/logs"
    assert_error(httpx.post(plain_url, content=event), 401)
    ok = httpx.post(plain_url, content=event, headers={"authorization": f"bearer {INGEST_TOKEN}"})
    assert ok.status_code == 200
    with https(server, pki) as client:
        client.headers.update(bearer(CONSUMER_TOKEN))
        assert len(Api(client).drain(registration)) == 2
    output = server.run_log()
    assert "POST /api/v1/logs" in output  # the access log ran...
    assert INGEST_TOKEN not in output and CONSUMER_TOKEN not in output  # ...without tokens
