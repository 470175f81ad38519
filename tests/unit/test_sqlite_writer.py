"""The embedded store's writer thread: a failure outside a transaction answers its callers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cfylogs.errors import StorageUnavailable
from cfylogs.storage.sqlite import SqliteStorage


async def test_a_group_failing_outside_its_transaction_is_answered_503_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStorage(tmp_path / "home")
    await store.open()
    try:
        await store.register("r", None, None, 1.0)
        run_group = store._run_group
        failures = iter([RuntimeError("injected: an OS error outside the transaction")])

        def failing_once(ops: Any) -> None:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            run_group(ops)

        # What cannot be provoked from outside (a bug, an OS error while handling a full disk)
        monkeypatch.setattr(store, "_run_group", failing_once)
        with pytest.raises(StorageUnavailable):
            await store.append([b'{"n":1}'], 2.0)  # answered, not left hanging
        assert (await store.append([b'{"n":2}'], 3.0)).stored == 1
        batch = await store.fetch("r", 10, 1 << 20, 4.0)
        assert batch is not None and list(batch.entries) == [b'{"n":2}']
        assert (await store.status()).ok
    finally:
        await store.close()
