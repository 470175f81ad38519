"""tests/fixtures copies the reference events for a lone clone: it must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import FIXTURES

COPY = Path(__file__).resolve().parents[1] / "fixtures"


def test_the_copy_matches_the_reference_events() -> None:
    if FIXTURES == COPY:
        pytest.skip("shared/fixtures is not beside this clone: the copy is all there is")
    for name in ("cloudify_log.json", "cloudify_event.json"):
        assert (COPY / name).read_bytes() == (FIXTURES / name).read_bytes(), name
