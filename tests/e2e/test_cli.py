"""`cfylogs serve` start-up: config errors exit 2 with the key and the file; state problems too."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ServerFactory


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cfylogs", "--version"], capture_output=True, text=True, check=True
    )
    from cfylogs import __version__

    assert __version__ in out.stdout


def test_bad_value_exits_2_naming_key_and_file(server_factory: ServerFactory) -> None:
    server = server_factory(config={"buffer": {"size": "lots"}})
    server.start(expect_ready=False)
    assert server.wait_exit() == 2
    log = server.run_log()
    assert "buffer.size" in log and str(server.config_path) in log


def test_environment_override_is_validated_too(server_factory: ServerFactory) -> None:
    server = server_factory(env={"CFYLOGS_SERVER_PORT": "99999"})
    server.start(expect_ready=False)
    assert server.wait_exit() == 2
    assert "CFYLOGS_SERVER_PORT" in server.run_log()


def test_environment_override_applies(server_factory: ServerFactory) -> None:
    server = server_factory(env={"CFYLOGS_BUFFER_SIZE": "2"}).start()
    with server.client() as client:
        from tests.support import Api

        api = Api(client)
        registration_id = api.register()
        api.push({"a": 1}, {"a": 2}, {"a": 3})
        assert len(api.fetch(registration_id)["entries"]) == 2


def test_a_second_server_on_the_same_home_exits_2(server_factory: ServerFactory) -> None:
    first = server_factory().start()
    second = server_factory(config={"home_directory": str(first.home)})
    second.start(expect_ready=False)
    assert second.wait_exit() == 2
    assert "in use by another cfylogs" in second.run_log()


def test_a_file_that_is_not_a_database_exits_2_and_is_kept(server_factory: ServerFactory) -> None:
    server = server_factory()
    server.home.mkdir(parents=True)
    junk = b"this is not an sqlite database, and must not be wiped" * 100
    (server.home / "cfylogs.sqlite3").write_bytes(junk)
    server.start(expect_ready=False)
    assert server.wait_exit() == 2
    assert "cannot be used" in server.run_log()
    assert (server.home / "cfylogs.sqlite3").read_bytes() == junk


def test_sigint_exits_0(server_factory: ServerFactory) -> None:
    import signal

    server = server_factory().start()
    assert server.stop(signal.SIGINT) == 0
    assert "stopped" in server.run_log()
