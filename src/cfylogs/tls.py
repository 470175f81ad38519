"""SSL mode: the server's `ssl.SSLContext`, built once at start-up from the settings.

The server identity comes from a PKCS12 keystore (`server.ssl.key-store`, the
Spring Boot keys of the original) or from PEM files (`server.ssl.certificate`
and `server.ssl.certificate-private-key`); the CAs that may sign client
certificates come from a PKCS12 truststore and/or a PEM file. Everything is
parsed with `cryptography` first, so that a bad file, a wrong password, a key
that does not match its certificate or an unknown alias stops start-up with a
`ConfigError` (exit 2) naming the key and saying what is wrong, instead of an
OpenSSL error code at the first handshake.

JKS keystores are refused with the `keytool` line that converts them: the only
Python reader (pyjks) has had no release since 2020 and pulls in unmaintained
crypto code, and the conversion is one command, done once.

An expired (or not yet valid) server certificate is a loud warning, not an
error: in SSL mode the plain-HTTP port is what Cloudify's Logstash pushes to,
and Logstash 1.5 drops events when it cannot connect, so refusing to start
would turn an expired certificate into lost events. Started, the relay keeps
storing events; consumers refuse the certificate until it is renewed, and
then receive everything.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shlex
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from cfylogs.config import Settings
from cfylogs.errors import ConfigError

log = logging.getLogger(__name__)

#: Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only); TLS 1.3
#: suites are OpenSSL's defaults, which are all modern.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
#: A certificate this close to its end is announced at start-up.
EXPIRY_WARNING = dt.timedelta(days=30)

_JKS_MAGIC = b"\xfe\xed\xfe\xed"
_JCEKS_MAGIC = b"\xce\xce\xce\xce"
_CLIENT_AUTH = {
    "need": ssl.CERT_REQUIRED,
    "want": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


@dataclass(frozen=True)
class Identity:
    """The server's private key and its certificate chain, leaf first."""

    key: PrivateKeyTypes
    chain: list[x509.Certificate]
    origin: str  # the setting it came from, for messages


def build_server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context of the HTTPS listener, or None when SSL mode is off."""
    if not settings.ssl_enabled:
        return None
    identity = load_identity(settings)
    trusted = load_trusted_cas(settings)
    warn_if_not_valid_now(identity.chain[0], identity.origin)
    for cert in trusted:
        warn_if_not_valid_now(cert, "a trusted CA")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])  # httptools speaks HTTP/1.1 only
    install_identity(context, identity)
    context.verify_mode = _client_auth_mode(settings, trusted)
    if trusted:
        context.load_verify_locations(cadata=_pem(trusted).decode("ascii"))
    return context


def _client_auth_mode(settings: Settings, trusted: Sequence[x509.Certificate]) -> ssl.VerifyMode:
    mode = settings.ssl_client_auth
    if mode != "none" and not trusted:
        # Java would fall back to the JVM's public CAs; here that would let any
        # certificate bought from a public CA in, so the operator must choose.
        raise ConfigError(
            f"{settings.source}: server.ssl.client-auth is {mode} but neither "
            "server.ssl.trust-store nor server.ssl.trust-certificate is set: name the CA "
            "certificates that sign the clients' certificates"
        )
    if mode == "none" and trusted:
        log.warning(
            "%s: server.ssl.client-auth is none: the trust store / trust certificate is "
            "not used (set client-auth to need or want for mutual TLS)",
            settings.source,
        )
    return _CLIENT_AUTH[mode]


# --- the server identity


def load_identity(settings: Settings) -> Identity:
    where = settings.source
    if settings.ssl_key_store and settings.ssl_certificate:
        raise ConfigError(
            f"{where}: set either server.ssl.key-store or server.ssl.certificate, not both"
        )
    if settings.ssl_key_store:
        return _identity_from_keystore(settings, settings.ssl_key_store)
    if settings.ssl_certificate:
        return _identity_from_pem(settings, settings.ssl_certificate)
    raise ConfigError(
        f"{where}: server.ssl.enabled is true but no server certificate is configured: set "
        "server.ssl.key-store (PKCS12) or server.ssl.certificate and "
        "server.ssl.certificate-private-key (PEM)"
    )


def _identity_from_keystore(settings: Settings, path: Path) -> Identity:
    key_name = "server.ssl.key-store"
    data = _read(settings, key_name, path)
    _require_pkcs12(settings, key_name, "server.ssl.key-store-type", path, data)
    # PKCS12 has one password for the store and its keys (Java's keytool
    # refuses to make them differ), so key-password is a second guess only.
    passwords = _unique(settings.ssl_key_store_password, settings.ssl_key_password)
    store = _open_pkcs12(settings, key_name, "server.ssl.key-store-password", path, data, passwords)
    if store.key is None or store.cert is None:
        raise ConfigError(
            f"{settings.source}: {key_name}: {path} holds no private key with its certificate "
            "(is it a truststore?): the keystore must hold the server's key entry"
        )
    _check_alias(settings, path, store.cert, store.additional_certs)
    others = [c.certificate for c in store.additional_certs]
    chain = _chain_of(store.cert.certificate, others)
    _check_key_matches(settings, key_name, store.key, chain[0], path)
    return Identity(store.key, chain, f"{key_name} {path}")


def _check_alias(
    settings: Settings,
    path: Path,
    key_entry: pkcs12.PKCS12Certificate,
    other_entries: Sequence[pkcs12.PKCS12Certificate],
) -> None:
    wanted = settings.ssl_key_alias
    found = _alias(key_entry)
    if wanted is None or (found is not None and found.lower() == wanted.lower()):
        return  # Java compares aliases without case
    cert_aliases = [a for a in (_alias(c) for c in other_entries) if a]
    if any(a.lower() == wanted.lower() for a in cert_aliases):
        problem = f"alias {wanted!r} is a certificate entry, not a key entry"
    else:
        problem = f"no key entry has the alias {wanted!r}"
    raise ConfigError(
        f"{settings.source}: server.ssl.key-alias: {problem} in {path}; its key entry is "
        f"{found!r}. Only the first key entry of a keystore can be used: to use another, "
        f"copy it alone with: keytool -importkeystore -srckeystore {shlex.quote(str(path))} "
        f"-srcalias {shlex.quote(wanted)} -destkeystore server.p12 -deststoretype PKCS12"
    )


def _alias(entry: pkcs12.PKCS12Certificate) -> str | None:
    name = entry.friendly_name
    return name.decode("utf-8", "replace") if name is not None else None


def _chain_of(leaf: x509.Certificate, others: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The leaf followed by its issuers found among `others` (the rest is not sent)."""
    chain = [leaf]
    while chain[-1].issuer != chain[-1].subject:
        issuer = next((c for c in others if c.subject == chain[-1].issuer and c not in chain), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _identity_from_pem(settings: Settings, cert_path: Path) -> Identity:
    where = settings.source
    cert_data = _read(settings, "server.ssl.certificate", cert_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise ConfigError(
            f"{where}: server.ssl.certificate: {cert_path} holds no PEM certificate "
            "(-----BEGIN CERTIFICATE-----)"
        ) from None
    key_path = settings.ssl_certificate_private_key
    if key_path is None:
        raise ConfigError(
            f"{where}: server.ssl.certificate-private-key is not set: name the PEM file of the "
            f"private key of {cert_path}"
        )
    key_name = "server.ssl.certificate-private-key"
    key_data = _read(settings, key_name, key_path)
    key = _load_pem_key(settings, key_path, key_data)
    _check_key_matches(settings, key_name, key, chain[0], cert_path)
    return Identity(key, chain, f"server.ssl.certificate {cert_path}")


def _load_pem_key(settings: Settings, path: Path, data: bytes) -> PrivateKeyTypes:
    key_name = "server.ssl.certificate-private-key"
    password = settings.ssl_key_password
    try:
        return serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        if password is None:
            raise ConfigError(
                f"{settings.source}: {key_name}: {path} is encrypted: set server.ssl.key-password"
            ) from None
        # a password was given for a key that has none: the key is usable as it is
        return serialization.load_pem_private_key(data, None)
    except ValueError:
        problem = (
            "server.ssl.key-password is wrong, or the file is not a PEM private key"
            if password
            else "not a PEM private key (-----BEGIN PRIVATE KEY-----)"
        )
        raise ConfigError(f"{settings.source}: {key_name}: {path}: {problem}") from None
    except Exception as exc:  # unsupported key types and the like
        raise ConfigError(f"{settings.source}: {key_name}: {path}: cannot use it: {exc}") from None


def _check_key_matches(
    settings: Settings, key_name: str, key: PrivateKeyTypes, cert: x509.Certificate, path: Path
) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise ConfigError(
            f"{settings.source}: {key_name}: the private key does not match the certificate "
            f"{cert.subject.rfc4514_string()!r} of {path} (the certificate must come first)"
        )


# --- trusted CAs for client certificates


def load_trusted_cas(settings: Settings) -> list[x509.Certificate]:
    trusted: list[x509.Certificate] = []
    if settings.ssl_trust_certificate:
        path = settings.ssl_trust_certificate
        data = _read(settings, "server.ssl.trust-certificate", path)
        try:
            trusted.extend(x509.load_pem_x509_certificates(data))
        except ValueError:
            raise ConfigError(
                f"{settings.source}: server.ssl.trust-certificate: {path} holds no PEM "
                "certificate (-----BEGIN CERTIFICATE-----)"
            ) from None
    if settings.ssl_trust_store:
        trusted.extend(_certificates_of_truststore(settings, settings.ssl_trust_store))
    return trusted


def _certificates_of_truststore(settings: Settings, path: Path) -> list[x509.Certificate]:
    key_name = "server.ssl.trust-store"
    data = _read(settings, key_name, path)
    _require_pkcs12(settings, key_name, "server.ssl.trust-store-type", path, data)
    passwords = _unique(settings.ssl_trust_store_password)
    store = _open_pkcs12(
        settings, key_name, "server.ssl.trust-store-password", path, data, passwords
    )
    certs = [c.certificate for c in store.additional_certs]
    if store.cert is not None:
        certs.insert(0, store.cert.certificate)
    if not certs:
        raise ConfigError(f"{settings.source}: {key_name}: {path} holds no certificate")
    return certs


# --- files and keystores


def _read(settings: Settings, key_name: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        problem = "file not found"
    except IsADirectoryError:
        problem = "is a directory, not a file"
    except PermissionError:
        problem = f"permission denied (cfylogs runs as uid {os.getuid()})"
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror}"
    raise ConfigError(f"{settings.source}: {key_name}: {path}: {problem}")


def _require_pkcs12(
    settings: Settings, key_name: str, type_key: str, path: Path, data: bytes
) -> None:
    """Refuse JKS/JCEKS (with the conversion line) and PEM where a keystore is expected.

    A declared `JKS` type holding a PKCS12 file is loaded as PKCS12, as Java
    (8u60 and later) does.
    """
    where = settings.source
    if data[:4] in (_JKS_MAGIC, _JCEKS_MAGIC):
        kind = "JKS" if data[:4] == _JKS_MAGIC else "JCEKS"
        raise ConfigError(
            f"{where}: {key_name}: {path} is a Java {kind} keystore, which cfylogs cannot "
            f"read. Convert it once to PKCS12 with:\n  {keytool_convert_line(path, kind)}\n"
            f"then set {key_name} to the new file and {type_key}: PKCS12 "
            "(the passwords stay the same)"
        )
    if data.lstrip()[:10] == b"-----BEGIN":
        pem_keys = (
            "server.ssl.certificate and server.ssl.certificate-private-key"
            if key_name == "server.ssl.key-store"
            else "server.ssl.trust-certificate"
        )
        raise ConfigError(
            f"{where}: {key_name}: {path} is a PEM file, not a keystore: name it with {pem_keys}"
        )


def keytool_convert_line(path: Path, kind: str = "JKS") -> str:
    """The exact command that converts a Java keystore to PKCS12 beside it."""
    target = path.with_suffix(".p12")
    if target == path:
        target = path.with_name(path.stem + "-pkcs12.p12")
    source_type = " -srcstoretype JCEKS" if kind == "JCEKS" else ""
    return (
        f"keytool -importkeystore -srckeystore {shlex.quote(str(path))}{source_type} "
        f"-destkeystore {shlex.quote(str(target))} -deststoretype PKCS12"
    )


def _open_pkcs12(
    settings: Settings,
    key_name: str,
    password_key: str,
    path: Path,
    data: bytes,
    passwords: Sequence[str | None],
) -> pkcs12.PKCS12KeyAndCertificates:
    for password in passwords:
        try:
            return pkcs12.load_pkcs12(data, password.encode() if password is not None else None)
        except ValueError:
            continue
    said = "no password is set" if passwords == [None] else "the password is wrong"
    raise ConfigError(
        f"{settings.source}: {key_name}: cannot open {path}: {said} ({password_key}), "
        "or the file is not a PKCS12 keystore"
    )


def _unique(*passwords: str | None) -> list[str | None]:
    given = list(dict.fromkeys(p for p in passwords if p is not None))
    return list(given) if given else [None]


# --- validity


def warn_if_not_valid_now(
    cert: x509.Certificate, origin: str, now: dt.datetime | None = None
) -> None:
    now = now or dt.datetime.now(dt.UTC)
    subject = cert.subject.rfc4514_string()
    if cert.not_valid_after_utc < now:
        log.warning(
            "!!! the certificate %r of %s EXPIRED on %s: TLS clients will refuse it. Ingest on "
            "the plain-HTTP port keeps working; renew the certificate and restart.",
            subject,
            origin,
            cert.not_valid_after_utc.isoformat(),
        )
    elif cert.not_valid_before_utc > now:
        log.warning(
            "!!! the certificate %r of %s is not valid before %s (check the clock): TLS "
            "clients will refuse it until then",
            subject,
            origin,
            cert.not_valid_before_utc.isoformat(),
        )
    elif cert.not_valid_after_utc - now < EXPIRY_WARNING:
        log.warning(
            "the certificate %r of %s expires on %s: renew it soon",
            subject,
            origin,
            cert.not_valid_after_utc.isoformat(),
        )


# --- loading into OpenSSL


def install_identity(context: ssl.SSLContext, identity: Identity) -> None:
    """`load_cert_chain` only reads files: hand it a short-lived one.

    The key is written encrypted with a one-time password, in a file only we
    can read, in a directory only we can list, removed as soon as OpenSSL
    has read it; the key is never on disk in the clear.
    """
    secret = secrets.token_hex(32).encode()
    key_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )
    with tempfile.TemporaryDirectory(prefix="cfylogs-tls-") as private_dir:
        path = os.path.join(private_dir, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(_pem(identity.chain) + key_pem)
        try:
            context.load_cert_chain(path, password=secret)
        except ssl.SSLError as exc:  # e.g. a key type this OpenSSL refuses
            raise ConfigError(f"{identity.origin}: OpenSSL cannot use it: {exc}") from None


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# --- the peer, for the HTTP layer


def peer_subject(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The RFC 4514 subject of the verified client certificate of a connection, if any."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
