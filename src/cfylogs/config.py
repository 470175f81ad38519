"""Settings: declared once, read from the compat YAML file, then the environment.

Every setting is one field of `Settings` with its dotted key (the name used in
`alien4cloud-cfy-logs-config.yml`), its kind (how a raw value is checked and
converted), its default and its help. The file is looked up as the Java
server did (`./config/`, then `./`) unless `--config` names one; each
setting's environment variable (`CFYLOGS_` + the key in capitals, dots and
dashes as underscores) overrides the file. An unknown key is a warning; a bad
value raises `ConfigError` naming the key and where it came from.

Keys are matched the way Spring Boot's relaxed binding does for the original
file: case, `-` and `_` do not matter (`key-store`, `keyStore` and `key_store`
are the same key), and a nested mapping equals a dotted key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cfylogs.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "alien4cloud-cfy-logs-config.yml"
ENV_PREFIX = "CFYLOGS_"


# --- kinds: how a raw value (from YAML or from an environment string) is checked


class Kind:
    """Converts a raw value, or raises ValueError with a message for the operator."""

    def parse(self, raw: Any) -> Any:
        raise NotImplementedError

    describe = "a value"


@dataclass(frozen=True)
class Int(Kind):
    minimum: int | None = None
    maximum: int | None = None

    @property
    def describe(self) -> str:  # type: ignore[override]
        lo = "" if self.minimum is None else f" >= {self.minimum}"
        hi = "" if self.maximum is None else f" <= {self.maximum}"
        return f"an integer{lo}{hi}"

    def parse(self, raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError(f"expected {self.describe}, got {raw!r}")
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"\s*[-+]?\d+\s*", raw):
            value = int(raw)
        else:
            raise ValueError(f"expected {self.describe}, got {raw!r}")
        return self.check(value)

    def check(self, value: int) -> int:
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"expected {self.describe}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"expected {self.describe}, got {value}")
        return value


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


@dataclass(frozen=True)
class Size(Int):
    """A number of bytes: an integer, or a string such as `16MiB` or `500MB`."""

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "a size in bytes (e.g. 1048576, 16MiB, 2GB)" + (
            "" if self.minimum is None else f" >= {self.minimum}"
        )

    def parse(self, raw: Any) -> int:
        if isinstance(raw, str):
            match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", raw)
            if match is None or match.group(2).lower() not in _SIZE_UNITS:
                raise ValueError(f"expected {self.describe}, got {raw!r}")
            return self.check(int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
        return super().parse(raw)


@dataclass(frozen=True)
class Bool(Kind):
    describe = "true or false"

    def parse(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(raw, str) and raw.strip().lower() in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")


@dataclass(frozen=True)
class Str(Kind):
    allow_empty: bool = True
    describe = "a string"

    def parse(self, raw: Any) -> str:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(f"expected a string, got {raw!r}")
        value = str(raw)
        if not self.allow_empty and not value.strip():
            raise ValueError("must not be empty")
        return value


@dataclass(frozen=True)
class OptStr(Kind):
    """A string that may be left unset (None)."""

    describe = "a string"

    def parse(self, raw: Any) -> str | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        return Str().parse(raw)


@dataclass(frozen=True)
class PathKind(Kind):
    """A file system path; `~` and `${user.home}` expand, as in the original."""

    optional: bool = False
    describe = "a path"

    def parse(self, raw: Any) -> Path | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.optional:
                return None
            raise ValueError("expected a path, got nothing")
        if not isinstance(raw, str):
            raise ValueError(f"expected a path, got {raw!r}")
        if "\x00" in raw:
            raise ValueError("a path cannot hold a NUL character")
        return Path(expand_path(raw))


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def describe(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.choices)

    def parse(self, raw: Any) -> str:
        value = str(raw).strip().lower() if isinstance(raw, str | int) else None
        value = dict(self.aliases).get(value or "", value)
        if value not in self.choices:
            raise ValueError(f"expected {self.describe}, got {raw!r}")
        return value


def expand_path(raw: str) -> str:
    home = str(Path.home())
    value = raw.replace("${user.home}", home).replace("${user.dir}", os.getcwd())
    return os.path.expanduser(value)


def setting(key: str, default: Any, kind: Kind, help: str, secret: bool = False) -> Any:
    """Declare a setting; the field's metadata is the settings table.

    A secret is left out of the settings' repr, so it cannot reach a log line.
    """
    return field(
        default=default, repr=not secret, metadata={"key": key, "kind": kind, "help": help}
    )


# --- the settings table


@dataclass(frozen=True)
class Settings:
    """Every setting of cfylogs. Field order is the order of the reference docs."""

    server_port: int = setting(
        "server.port", 8200, Int(0, 65535), "Main port; HTTPS when server.ssl.enabled."
    )
    server_address: str = setting(
        "server.address", "0.0.0.0", Str(allow_empty=False), "Listen address."
    )
    server_http_port: int = setting(
        "server.http.port",
        8080,
        Int(0, 65535),
        "Plain-HTTP port kept open for Logstash (POST /api/v1/logs only) when SSL is on.",
    )
    server_max_request_bytes: int = setting(
        "server.max_request_bytes",
        16 * 1024**2,
        Size(1024),
        "Largest request body accepted, after decompression (413 beyond).",
    )
    server_max_ingest_bytes_in_flight: int = setting(
        "server.max_ingest_bytes_in_flight",
        64 * 1024**2,
        Size(0),
        "Request body bytes received and held in memory at once (about 2.5 times that in all, "
        "with decoding); beyond, connections stop reading their bodies until room is given "
        "back, and are never refused (0: no limit).",
    )
    server_max_url_bytes: int = setting(
        "server.max_url_bytes",
        8 * 1024,
        Size(256, 1024**2),
        "Longest request URL (path and query) accepted (414 beyond).",
    )
    server_max_header_bytes: int = setting(
        "server.max_header_bytes",
        64 * 1024,
        Size(1024, 16 * 1024**2),
        "Largest header block of a request accepted (431 beyond).",
    )
    server_max_headers: int = setting(
        "server.max_headers",
        100,
        Int(8, 10_000),
        "Most header lines in a request (431 beyond).",
    )
    server_keep_alive_sec: int = setting(
        "server.keep_alive_sec",
        30,
        Int(1, 3600),
        "Idle time before a keep-alive connection is closed.",
    )
    server_shutdown_timeout_sec: int = setting(
        "server.shutdown_timeout_sec",
        30,
        Int(1, 3600),
        "On SIGTERM/SIGINT, how long requests in flight may take to finish.",
    )
    server_access_log: bool = setting(
        "server.access_log", False, Bool(), "Log one line per request."
    )

    ssl_enabled: bool = setting("server.ssl.enabled", False, Bool(), "Serve the API over HTTPS.")
    ssl_key_store: Path | None = setting(
        "server.ssl.key-store",
        None,
        PathKind(optional=True),
        "Keystore file (PKCS12; a JKS file is refused with the keytool line to convert it).",
    )
    ssl_key_store_password: str | None = setting(
        "server.ssl.key-store-password", None, OptStr(), "Keystore password.", secret=True
    )
    ssl_key_store_type: str | None = setting(
        "server.ssl.key-store-type",
        None,
        Choice(("pkcs12", "jks"), aliases=(("p12", "pkcs12"), ("pfx", "pkcs12"))),
        "PKCS12 or JKS (guessed from the file when unset).",
    )
    ssl_key_password: str | None = setting(
        "server.ssl.key-password",
        None,
        OptStr(),
        "Password of the key inside the keystore.",
        secret=True,
    )
    ssl_key_alias: str | None = setting(
        "server.ssl.key-alias", None, OptStr(), "Alias of the key entry to use in the keystore."
    )
    ssl_certificate: Path | None = setting(
        "server.ssl.certificate", None, PathKind(optional=True), "Server certificate chain (PEM)."
    )
    ssl_certificate_private_key: Path | None = setting(
        "server.ssl.certificate-private-key",
        None,
        PathKind(optional=True),
        "Private key of the server certificate (PEM).",
    )
    ssl_trust_store: Path | None = setting(
        "server.ssl.trust-store",
        None,
        PathKind(optional=True),
        "Truststore (PKCS12) of the CAs whose client certificates are accepted.",
    )
    ssl_trust_store_password: str | None = setting(
        "server.ssl.trust-store-password", None, OptStr(), "Truststore password.", secret=True
    )
    ssl_trust_store_type: str | None = setting(
        "server.ssl.trust-store-type",
        None,
        Choice(("pkcs12", "jks"), aliases=(("p12", "pkcs12"), ("pfx", "pkcs12"))),
        "PKCS12 or JKS (guessed from the file when unset).",
    )
    ssl_trust_certificate: Path | None = setting(
        "server.ssl.trust-certificate",
        None,
        PathKind(optional=True),
        "CA certificates (PEM) whose client certificates are accepted.",
    )
    ssl_client_auth: str = setting(
        "server.ssl.client-auth",
        "none",
        Choice(("need", "want", "none")),
        "Mutual TLS: need (required), want (optional) or none.",
    )

    home_directory: Path = setting(
        "home_directory",
        Path(expand_path("${user.home}/.a4ccfylogs")),
        PathKind(),
        "Where the embedded store keeps its data.",
    )
    buffer_size: int = setting("buffer.size", 1000, Int(1, 100_000), "Most entries in one batch.")
    buffer_timeout_sec: int = setting(
        "buffer.timeout_sec",
        10,
        Int(0),
        "Accepted for compatibility; entries are durable and visible at once.",
    )
    buffer_max_batch_bytes: int = setting(
        "buffer.max_batch_bytes",
        8 * 1024**2,
        Size(1024),
        "Most bytes of entries in one batch (a single larger event still goes alone).",
    )

    lease_enabled: bool = setting(
        "alien_registration.is_leased", False, Bool(), "Expire registrations that stop polling."
    )
    lease_duration_sec: int = setting(
        "alien_registration.lease_duration_sec",
        1800,
        Int(1),
        "Idle time before a leased registration expires.",
    )
    lease_check_every_sec: int = setting(
        "alien_registration.lease_expiration_frequency_sec",
        300,
        Int(1),
        "How often leases are checked.",
    )
    lease_revive_expired: bool = setting(
        "alien_registration.revive_expired",
        True,
        Bool(),
        "Re-create an expired registration under its id when it is named again.",
    )
    lease_expired_retention_sec: int = setting(
        "alien_registration.expired_retention_sec",
        7 * 24 * 3600,
        Int(0),
        "How long an expired registration is kept after its lease ran out, so that it can be "
        "revived under its id; then it is deleted, counted and logged (0: kept for ever).",
    )

    storage_backend: str = setting(
        "storage.backend",
        "sqlite",
        Choice(
            ("sqlite", "postgres"), aliases=(("embedded", "sqlite"), ("postgresql", "postgres"))
        ),
        "sqlite (embedded, under home_directory) or postgres (shared).",
    )
    storage_sync: str = setting(
        "storage.sync",
        "full",
        Choice(("full", "normal", "off")),
        "full: fsync before answering 200; normal: survives a crash of cfylogs, not of the "
        "machine; off: leave it to the OS.",
    )
    storage_max_backlog_bytes: int = setting(
        "storage.max_backlog_bytes",
        1024**3,
        Size(0),
        "Per registration, most bytes of unacknowledged events kept (0: no cap).",
    )
    storage_max_backlog_events: int = setting(
        "storage.max_backlog_events",
        0,
        Int(0),
        "Per registration, most unacknowledged events kept (0: no cap).",
    )
    storage_backlog_policy: str = setting(
        "storage.backlog_policy",
        "drop_oldest",
        Choice(("drop_oldest", "reject")),
        "Over a cap: drop_oldest (that registration loses its oldest events, ingest goes on) "
        "or reject (503 to producers).",
    )
    storage_min_free_bytes: int = setting(
        "storage.min_free_bytes",
        256 * 1024**2,
        Size(0),
        "Refuse ingest (503) while less disk space is free (0: only when the disk is full).",
    )
    storage_disk_reserve_bytes: int = setting(
        "storage.disk_reserve_bytes",
        4 * 1024**2,
        Size(0),
        "Embedded store: disk space booked in a file, given up when the disk is full so that "
        "consumers can still acknowledge (0: none).",
    )
    server_request_timeout_sec: int = setting(
        "server.request_timeout_sec",
        60,
        Int(1, 3600),
        "Longest a client may take to send a request's headers and body (then 408 and the "
        "connection is closed).",
    )
    ingest_accept: str = setting(
        "ingest.accept",
        "any",
        Choice(("any", "cloudify")),
        "any: every JSON object goes to consumers; cloudify: only Cloudify logs and events, "
        "the rest to the dead letters (see docs/RELIABILITY.md).",
    )
    ingest_max_dead_letters: int = setting(
        "ingest.max_dead_letters",
        100_000,
        Int(0),
        "Most dead letters kept; beyond, the oldest are deleted, counted and logged (0: no cap).",
    )
    storage_postgres_dsn: str | None = setting(
        "storage.postgres.dsn",
        None,
        OptStr(),
        "PostgreSQL connection string (libpq format), e.g. "
        "`host=db port=5432 dbname=cfylogs user=cfylogs password=...`; never logged.",
        secret=True,
    )
    storage_postgres_pool_size: int = setting(
        "storage.postgres.pool_size",
        10,
        Int(1),
        "Most connections one relay opens to PostgreSQL (one more listens for new events).",
    )
    storage_postgres_timeout_sec: int = setting(
        "storage.postgres.timeout_sec",
        5,
        Int(1, 60),
        "Longest a request waits for PostgreSQL (a connection, locks, statements, the commit) "
        "before it is answered 503, whatever the database does (docs/HA.md); keep it under "
        "Logstash's socket_timeout (10 s).",
    )

    security_ingest_token: str | None = setting(
        "security.ingest_token",
        None,
        OptStr(),
        "If set, POST /api/v1/logs requires `Authorization: Bearer <token>`.",
        secret=True,
    )
    security_consumer_token: str | None = setting(
        "security.consumer_token",
        None,
        OptStr(),
        "If set, every other API call requires `Authorization: Bearer <token>`.",
        secret=True,
    )

    console_enabled: bool = setting(
        "console.enabled",
        True,
        Bool(),
        "Serve the web console (/ui/ and /api/v1/console*); off: those paths answer 404.",
    )

    log_level: str = setting(
        "logging.level",
        "info",
        Choice(("debug", "info", "warning", "error"), aliases=(("warn", "warning"),)),
        "Least severe level logged.",
    )
    log_format: str = setting(
        "logging.format", "text", Choice(("text", "json")), "text, or one JSON object per line."
    )

    #: Where the settings came from, for messages (not a setting).
    source: str = field(default="defaults", metadata={"key": None})


@dataclass(frozen=True)
class SettingInfo:
    name: str
    key: str
    kind: Kind
    default: Any
    help: str
    #: Kept out of reprs, logs and error messages.
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + re.sub(r"[.\-]", "_", self.key).upper()


def settings_table() -> list[SettingInfo]:
    return [
        SettingInfo(
            f.name, f.metadata["key"], f.metadata["kind"], f.default, f.metadata["help"], not f.repr
        )
        for f in dataclasses.fields(Settings)
        if f.metadata.get("key")
    ]


def _normalise(key: str) -> str:
    return ".".join(re.sub(r"[-_]", "", part).lower() for part in key.split("."))


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def find_config_file(
    explicit: str | os.PathLike[str] | None, cwd: Path | None = None
) -> Path | None:
    """`--config`, else `$CFYLOGS_CONFIG`, else ./config/<file>, else ./<file>."""
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(ENV_PREFIX + "CONFIG")
    if from_env:
        return Path(from_env)
    base = cwd or Path.cwd()
    for candidate in (base / "config" / CONFIG_FILE_NAME, base / CONFIG_FILE_NAME):
        try:
            if candidate.is_file():
                return candidate
        except PermissionError:  # e.g. a working directory this user may not search
            raise ConfigError(
                f"{candidate}: cannot look for the config file here (permission denied); "
                "name it with --config or $CFYLOGS_CONFIG"
            ) from None
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config file is not UTF-8 text ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return dict(_flatten(data))


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge defaults, the config file, the environment and `overrides` (by key)."""
    environ = os.environ if environ is None else environ
    table = {_normalise(info.key): info for info in settings_table()}
    values: dict[str, Any] = {}

    path = find_config_file(config_path, cwd)
    source = str(path) if path else "defaults"
    if path is not None:
        for raw_key, raw in _read_file(path).items():
            info = table.get(_normalise(raw_key))
            if info is None and raw is None and _is_section(_normalise(raw_key), table):
                continue  # a section with every key commented out (`cfylogs init` writes them)
            if info is None:
                log.warning("%s: unknown setting %r is ignored", path, raw_key)
                continue
            values[info.name] = _parse(info, raw, f"{path}: {raw_key}")
    else:
        log.info("no %s found in ./config or ./; using defaults", CONFIG_FILE_NAME)

    for info in table.values():
        if info.env in environ:
            values[info.name] = _parse(info, environ[info.env], f"environment {info.env}")
    for key, raw in (overrides or {}).items():
        info = table.get(_normalise(key))
        if info is None:
            raise ConfigError(f"unknown setting {key!r}")
        values[info.name] = _parse(info, raw, f"option for {key}")

    settings = Settings(**values, source=source)
    _check_consistency(settings)
    return settings


def _is_section(key: str, table: Mapping[str, SettingInfo]) -> bool:
    return any(known.startswith(key + ".") for known in table)


def _parse(info: SettingInfo, raw: Any, where: str) -> Any:
    try:
        return info.kind.parse(raw)
    except ValueError as exc:
        reason = f"expected {info.kind.describe} (value not shown)" if info.secret else exc
        raise ConfigError(f"{where}: invalid value for {info.key}: {reason}") from None


def _check_consistency(s: Settings) -> None:
    where = s.source
    if s.storage_backend == "postgres" and not s.storage_postgres_dsn:
        raise ConfigError(
            f"{where}: storage.postgres.dsn is required when storage.backend is postgres "
            f"(or set {ENV_PREFIX}STORAGE_POSTGRES_DSN)"
        )
    if s.ssl_enabled and s.server_port != 0 and s.server_port == s.server_http_port:
        raise ConfigError(
            f"{where}: server.port and server.http.port must differ when server.ssl.enabled is true"
        )
