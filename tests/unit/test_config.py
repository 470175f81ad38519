from __future__ import annotations

from pathlib import Path

import pytest

from cfylogs.config import CONFIG_FILE_NAME, load_settings, settings_table
from cfylogs.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_are_the_originals(tmp_path: Path) -> None:
    s = load_settings(cwd=tmp_path, environ={})
    assert (s.server_port, s.server_http_port, s.buffer_size, s.buffer_timeout_sec) == (
        8200,
        8080,
        1000,
        10,
    )
    assert (s.lease_enabled, s.lease_duration_sec, s.lease_check_every_sec) == (False, 1800, 300)
    assert s.home_directory == Path.home() / ".a4ccfylogs"
    assert s.storage_sync == "full" and s.source == "defaults"


def test_the_original_file_is_read_from_config_then_cwd(tmp_path: Path) -> None:
    write(tmp_path / CONFIG_FILE_NAME, "server:\n  port: 1111\n")
    assert load_settings(cwd=tmp_path, environ={}).server_port == 1111
    write(tmp_path / "config" / CONFIG_FILE_NAME, "server:\n  port: 2222\n")
    assert load_settings(cwd=tmp_path, environ={}).server_port == 2222


def test_original_keys_nested_dotted_and_relaxed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yml",
        "server:\n  port: 9000\n  ssl:\n    keyStore: /k.p12\n    key-store-password: pw\n"
        "home_directory: ${user.home}/relay\nbuffer.size: 50\n"
        "alien_registration:\n  is_leased: true\n  lease_duration_sec: 60\n",
    )
    s = load_settings(path, environ={})
    assert s.server_port == 9000 and s.buffer_size == 50
    assert s.ssl_key_store == Path("/k.p12") and s.ssl_key_store_password == "pw"
    assert s.home_directory == Path.home() / "relay"
    assert s.lease_enabled and s.lease_duration_sec == 60


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yml", "buffer:\n  size: 10\n")
    s = load_settings(path, environ={"CFYLOGS_BUFFER_SIZE": "20", "CFYLOGS_STORAGE_SYNC": "normal"})
    assert s.buffer_size == 20 and s.storage_sync == "normal"


def test_sizes_accept_units(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yml", "server:\n  max_request_bytes: 2MiB\n")
    assert load_settings(path, environ={}).server_max_request_bytes == 2 * 1024**2


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("server:\n  port: 70000\n", "server.port"),
        ("server:\n  port: eighty\n", "server.port"),
        ("buffer:\n  size: 0\n", "buffer.size"),
        ("alien_registration:\n  is_leased: maybe\n", "alien_registration.is_leased"),
        ("storage:\n  sync: sometimes\n", "storage.sync"),
        ("server:\n  max_request_bytes: 12 parsecs\n", "server.max_request_bytes"),
        ('home_directory: "/tmp/a\\0b"\n', "home_directory"),
    ],
)
def test_a_bad_value_names_the_key_and_the_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path / "c.yml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert key in str(info.value) and str(path) in str(info.value)


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CFYLOGS_SERVER_PORT"):
        load_settings(cwd=tmp_path, environ={"CFYLOGS_SERVER_PORT": "x"})


def test_unknown_keys_are_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "c.yml", "spring:\n  banner: off\nserver:\n  port: 1234\n")
    assert load_settings(path, environ={}).server_port == 1234
    assert "spring.banner" in caplog.text


def test_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yml", environ={})
    with pytest.raises(ConfigError, match="YAML"):
        load_settings(write(tmp_path / "bad.yml", "server: [\n"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path / "list.yml", "- 1\n"), environ={})


def test_postgres_needs_a_dsn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage\.postgres\.dsn"):
        load_settings(cwd=tmp_path, environ={"CFYLOGS_STORAGE_BACKEND": "postgres"})


def test_every_setting_is_documented_and_has_an_env_name() -> None:
    table = settings_table()
    assert len({info.env for info in table}) == len(table)
    assert all(info.help and info.env.startswith("CFYLOGS_") for info in table)


def test_secrets_never_appear_in_the_settings_repr(tmp_path: Path) -> None:
    s = load_settings(
        cwd=tmp_path,
        environ={
            "CFYLOGS_SECURITY_INGEST_TOKEN": "tok-ingest-secret",
            "CFYLOGS_SECURITY_CONSUMER_TOKEN": "tok-consumer-secret",
            "CFYLOGS_SERVER_SSL_KEY_STORE_PASSWORD": "pw-secret",
        },
    )
    assert s.security_ingest_token == "tok-ingest-secret"
    assert "secret" not in repr(s)
