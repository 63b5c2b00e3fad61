"""The retry policy's decisions (no I/O): what is retried, how long it waits, when it
stops."""

from __future__ import annotations

from shared.adapters.graph.errors import GraphFailure, parse_retry_after
from shared.adapters.graph.throttle import RetryPolicy

POLICY = RetryPolicy(max_attempts=3, max_elapsed_s=10.0, max_wait_s=5.0, backoff_s=0.5)


def failure(status: int | None, retry_after: float | None = None) -> GraphFailure:
    return GraphFailure(status=status, code=None, message="", retry_after_s=retry_after)


def test_retry_after_is_honoured_for_429_503_504() -> None:
    for status in (429, 503, 504):
        assert POLICY.delay_before_retry(failure(status, 2), attempt=1, elapsed_s=0) == 2


def test_other_statuses_are_not_retried() -> None:
    for status in (400, 401, 403, 404, 409, 410, 500):
        assert POLICY.delay_before_retry(failure(status, 1), attempt=1, elapsed_s=0) is None


def test_backoff_without_retry_after_grows() -> None:
    first = POLICY.delay_before_retry(failure(503), attempt=1, elapsed_s=0)
    second = POLICY.delay_before_retry(failure(503), attempt=2, elapsed_s=0)
    assert first is not None
    assert second is not None
    assert 0.5 <= first <= 0.625
    assert 1.0 <= second <= 1.25


def test_bounded_by_attempts_wait_and_elapsed_time() -> None:
    assert POLICY.delay_before_retry(failure(429, 1), attempt=3, elapsed_s=0) is None
    assert POLICY.delay_before_retry(failure(429, 6), attempt=1, elapsed_s=0) is None
    assert POLICY.delay_before_retry(failure(429, 2), attempt=1, elapsed_s=9) is None
    assert RetryPolicy.no_retries().delay_before_retry(failure(429, 1), 1, 0) is None


def test_no_answer_is_retried_only_when_repeating_is_safe() -> None:
    assert POLICY.delay_before_retry(failure(None), 1, 0, idempotent=True) is not None
    assert POLICY.delay_before_retry(failure(None), 1, 0, idempotent=False) is None


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
