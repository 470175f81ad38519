"""Backoff, Retry-After, error mapping and the consumer policy, without a server."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Generator
from typing import Any

import pytest

from cfylogs.client import Backoff, Batch, ConsumerOptions, ConsumerStats, GiveUp, errors
from cfylogs.client.calls import MAX_RETRY_AFTER_SEC, error_from_answer, retry_after
from cfylogs.client.consumer import Ack, Fetch, Handle, Register, Registered, Sleep, consumer_policy


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100  # spread, not a constant


def test_retry_after_takes_precedence_over_backoff() -> None:
    backoff = Backoff(initial=0.2, maximum=1.0, jitter=0.5, rng=random.Random(1))
    delay = backoff.delay(1, retry_after=7.0)
    assert 7.0 <= delay <= 7.0 + 0.1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("1e9", MAX_RETRY_AFTER_SEC),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_header_in_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after(header) == expected


def test_retry_after_header_as_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert retry_after(header, now=now) == pytest.approx(42.0)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, errors.BadRequest, False),
        (401, errors.Unauthorized, False),
        (403, errors.Unauthorized, False),
        (404, errors.NotFound, False),
        (409, errors.Conflict, False),
        (413, errors.BadRequest, False),
        (429, errors.Unavailable, True),
        (500, errors.ServerError, True),
        (503, errors.Unavailable, True),
    ],
)
def test_error_body_maps_to_a_typed_error(
    status: int, kind: type[errors.ClientError], retryable: bool
) -> None:
    body = b'{"data": null, "error": {"code": 504, "message": "No registration for id x"}}'
    error = error_from_answer(status, {"retry-after": "2"}, body)
    assert type(error) is kind
    assert error.retryable is retryable
    assert (error.status, error.code, error.message) == (status, 504, "No registration for id x")
    assert error.retry_after == 2.0


def test_an_error_without_the_api_body_still_says_what_came_back() -> None:
    error = error_from_answer(502, {}, b"<html>Bad Gateway</html>")
    assert isinstance(error, errors.ServerError)
    assert error.message == "HTTP 502: <html>Bad Gateway</html>"
    assert error.code is None


# --- the consumer policy, driven by hand


def batch(batch_id: int, registration_id: str = "r1") -> Batch:
    return Batch(registration_id, batch_id, (b'{"n":1}',), [{"n": 1}])


class Driver:
    """Steps the policy generator; `stopped` can be flipped by the test."""

    def __init__(self, **options: Any) -> None:
        self.stop = False
        self.stats = ConsumerStats()
        backoff = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
        self.policy: Generator[Any, Any, None] = consumer_policy(
            ConsumerOptions(backoff=backoff, **options), lambda: self.stop, self.stats
        )
        self.step = next(self.policy)

    def answer(self, value: Any = None) -> Any:
        self.step = self.policy.send(value)
        return self.step

    def fail(self, exc: BaseException) -> Any:
        self.step = self.policy.throw(exc)
        return self.step


def test_ack_comes_only_after_the_handler_returned() -> None:
    d = Driver(registration_id="r1")
    assert d.step == Fetch("r1", 30.0, None)
    assert d.answer(batch(0)) == Handle(batch(0))
    assert d.answer(None) == Ack("r1", 0)
    assert d.answer(None) == Fetch("r1", 30.0, None)
    assert (d.stats.batches, d.stats.events) == (1, 1)


def test_a_failed_handler_gets_the_batch_again_and_nothing_is_acked() -> None:
    d = Driver(registration_id="r1")
    d.answer(batch(0))
    assert d.fail(RuntimeError("disk full")) == Sleep(0.1)
    assert d.answer() == Fetch("r1", 30.0, None)
    assert d.answer(batch(0)) == Handle(batch(0))
    assert d.answer() == Ack("r1", 0)
    assert d.stats.handler_failures == 1


def test_a_failed_handler_ends_the_loop_when_told_not_to_retry() -> None:
    d = Driver(registration_id="r1", retry_handler_errors=False)
    d.answer(batch(0))
    with pytest.raises(BrokenPipeError):
        d.fail(BrokenPipeError())


def test_unavailable_is_retried_honouring_retry_after_then_backoff_resets() -> None:
    d = Driver(registration_id="r1")
    busy = errors.Unavailable("store busy", 503, 503, retry_after=5.0)
    assert d.fail(busy) == Sleep(5.0)
    assert d.answer() == Fetch("r1", 30.0, None)
    assert d.fail(errors.TransportError("refused")) == Sleep(0.2)  # second failure in a row
    d.answer()
    assert d.answer(None) == Fetch("r1", 30.0, None)  # an answer resets the count
    assert d.fail(errors.TransportError("refused")) == Sleep(0.1)


def test_a_failed_ack_is_retried_without_handling_the_batch_again() -> None:
    d = Driver(registration_id="r1")
    d.answer(batch(3))
    assert d.answer() == Ack("r1", 3)
    assert d.fail(errors.TransportError("reset")) == Sleep(0.1)
    assert d.answer() == Ack("r1", 3)
    assert d.answer() == Fetch("r1", 30.0, None)


def test_client_errors_that_retrying_cannot_fix_end_the_loop() -> None:
    d = Driver(registration_id="r1")
    with pytest.raises(errors.Unauthorized):
        d.fail(errors.Unauthorized("token refused", 401))


def test_max_attempts_gives_up() -> None:
    d = Driver(registration_id="r1", max_attempts=2)
    d.fail(errors.TransportError("refused"))
    d.answer()
    with pytest.raises(GiveUp):
        d.fail(errors.TransportError("refused"))


def test_a_lost_registration_is_replaced_loudly_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = Driver(registration_id="gone", reregister=True, name="me")
    assert d.fail(errors.NotFound("No registration", 404, 504)) == Register("me")
    assert d.answer("new") == Registered("new")
    assert d.answer() == Fetch("new", 30.0, None)
    assert "NOT delivered" in caplog.text
    assert d.stats.reregistrations == 1


def test_a_lost_registration_is_an_error_by_default() -> None:
    d = Driver(registration_id="gone")
    with pytest.raises(errors.NotFound):
        d.fail(errors.NotFound("No registration", 404, 504))


def test_once_stops_when_nothing_is_pending_and_stop_is_honoured() -> None:
    d = Driver(registration_id="r1", once=True, wait=0.0)
    with pytest.raises(StopIteration):
        d.answer(None)
    d = Driver(registration_id="r1")
    d.stop = True
    with pytest.raises(StopIteration):
        d.answer(None)
