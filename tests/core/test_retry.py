"""RetryPolicy, retry delays, TaskOptions and the retry decision (auto_retry_for
matches an error code or an exception type name; WORKER_CRASHED is retried when listed)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import orjson
import pytest
from horsies.codec import task_result_from_json, task_result_to_json
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import (
    RetryPolicy,
    TaskOptions,
    decide_retry,
    error_matches,
    is_retryable,
    retry_delay_seconds,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

# --------------------------------------------------------------------------------------------
# RetryPolicy
# --------------------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 3
    assert policy.intervals == [60, 300, 900]
    assert policy.backoff_strategy == "fixed"
    assert policy.jitter is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": 0, "intervals": []},
        {"max_retries": 21, "intervals": [1] * 21},
        {"max_retries": 1, "intervals": [0]},
        {"max_retries": 1, "intervals": [86_401]},
        {"max_retries": 1, "intervals": [-5]},
        {"max_retries": 2, "intervals": [10]},  # fixed: one interval per retry
        {"max_retries": 2, "intervals": [10, 20, 30]},
        {"max_retries": 3, "intervals": [10, 20], "backoff_strategy": "exponential"},
        {"max_retries": 3, "intervals": [10], "backoff_strategy": "linear"},
        {"max_retries": "many", "intervals": [10]},
        {"max_retries": 1, "intervals": [10], "unknown": True},
    ],
)
def test_invalid_policies_raise_validation_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**kwargs)
    with pytest.raises(ValueError):  # ValidationError is a ValueError
        RetryPolicy(**kwargs)


def test_limits_are_inclusive() -> None:
    assert RetryPolicy(max_retries=20, intervals=[86_400] * 20).max_retries == 20
    assert RetryPolicy(max_retries=1, intervals=[1]).intervals == [1]
    exp = RetryPolicy(max_retries=20, intervals=[1], backoff_strategy="exponential")
    assert exp.max_retries == 20


def test_fixed_constructor() -> None:
    policy = RetryPolicy.fixed([5, 30, 120])
    assert policy == RetryPolicy(
        max_retries=3, intervals=[5, 30, 120], backoff_strategy="fixed", jitter=True
    )
    assert RetryPolicy.fixed([5], jitter=False).jitter is False
    with pytest.raises(ValidationError):
        RetryPolicy.fixed([])


def test_exponential_constructor() -> None:
    policy = RetryPolicy.exponential(30, max_retries=5)
    assert policy == RetryPolicy(
        max_retries=5, intervals=[30], backoff_strategy="exponential", jitter=True
    )
    assert RetryPolicy.exponential(30, max_retries=2, jitter=False).jitter is False


def test_exponential_max_retries_is_keyword_only_and_required() -> None:
    with pytest.raises(TypeError):
        RetryPolicy.exponential(30)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RetryPolicy.exponential(30, 5)  # type: ignore[misc]


def test_policy_is_immutable() -> None:
    policy = RetryPolicy.fixed([1, 2])
    with pytest.raises(ValidationError):
        policy.max_retries = 5  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# retry_delay_seconds
# --------------------------------------------------------------------------------------------


def test_fixed_delays_without_jitter() -> None:
    policy = RetryPolicy.fixed([5, 30, 120], jitter=False)
    assert [retry_delay_seconds(policy, n) for n in (1, 2, 3)] == [5, 30, 120]
    assert retry_delay_seconds(policy, 7) == 120  # beyond the list: the last interval


def test_exponential_delays_without_jitter() -> None:
    policy = RetryPolicy.exponential(30, max_retries=5, jitter=False)
    assert [retry_delay_seconds(policy, n) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert retry_delay_seconds(policy, 20) == 30 * 2**19  # no upper cap


def test_jitter_stays_within_25_percent() -> None:
    policy = RetryPolicy.fixed([100])
    rng = random.Random(1)
    delays = [retry_delay_seconds(policy, 1, rng) for _ in range(2000)]
    assert min(delays) >= 75
    assert max(delays) <= 125
    assert len(set(delays)) > 20  # it actually varies
    assert all(type(delay) is int for delay in delays)


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy.exponential(10, max_retries=4)
    first = [retry_delay_seconds(policy, n, random.Random(7)) for n in range(1, 5)]
    second = [retry_delay_seconds(policy, n, random.Random(7)) for n in range(1, 5)]
    assert first == second


def test_delay_is_at_least_one_second() -> None:
    policy = RetryPolicy.fixed([1])
    rng = random.Random(3)
    assert min(retry_delay_seconds(policy, 1, rng) for _ in range(500)) == 1


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempt"):
        retry_delay_seconds(RetryPolicy(), 0)


@given(
    st.sampled_from(["fixed", "exponential"]),
    st.lists(st.integers(1, 86_400), min_size=1, max_size=20),
    st.integers(1, 20),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_delay_bounds_property(
    strategy: str, intervals: list[int], attempt: int, jitter: bool, seed: int
) -> None:
    if strategy == "fixed":
        policy = RetryPolicy.fixed(intervals, jitter=jitter)
        base = intervals[min(attempt, len(intervals)) - 1]
    else:
        policy = RetryPolicy.exponential(intervals[0], max_retries=attempt, jitter=jitter)
        base = intervals[0] * 2 ** (attempt - 1)
    delay = retry_delay_seconds(policy, attempt, random.Random(seed))
    if jitter:
        assert max(1, int(base * 0.75)) <= delay <= max(1, int(base * 1.25))
    else:
        assert delay == max(1, base)


# --------------------------------------------------------------------------------------------
# TaskOptions
# --------------------------------------------------------------------------------------------


def test_options_json_shape() -> None:
    options = TaskOptions(
        auto_retry_for=[LibraryErrorCode.WORKER_CRASHED, "ConnectionError"],
        retry_policy=RetryPolicy.fixed([5, 30], jitter=False),
        good_until=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    text = options.to_json()
    assert text == (
        '{"auto_retry_for":["WORKER_CRASHED","ConnectionError"],'
        '"retry_policy":{"max_retries":2,"intervals":[5,30],"backoff_strategy":"fixed",'
        '"jitter":false},"good_until":"2030-01-02T03:04:05+00:00"}'
    )
    assert type(options.auto_retry_for[0]) is str  # type: ignore[index]


def test_empty_options_json() -> None:
    assert orjson.loads(TaskOptions().to_json()) == {
        "auto_retry_for": None,
        "retry_policy": None,
        "good_until": None,
    }


def test_options_round_trip() -> None:
    options = TaskOptions(
        auto_retry_for=["A", "B"],
        retry_policy=RetryPolicy.exponential(10, max_retries=3),
        good_until=dt.datetime(2031, 5, 6, 7, 8, 9),
    )
    assert TaskOptions.from_json(options.to_json()) == options
    assert TaskOptions.from_json(options.to_json().encode()) == options


def test_options_from_null_or_empty_text_are_defaults() -> None:
    assert TaskOptions.from_json(None) == TaskOptions()
    assert TaskOptions.from_json("") == TaskOptions()
    assert TaskOptions.from_json("{}") == TaskOptions()


def test_options_from_json_rejects_bad_payloads() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        TaskOptions.from_json("[1]")
    with pytest.raises(ValueError):
        TaskOptions.from_json("{not json")
    with pytest.raises(ValidationError):
        TaskOptions.from_json('{"retry_policy": {"max_retries": 0, "intervals": [1]}}')


def test_options_validation_rejects_wrong_types() -> None:
    with pytest.raises(ValidationError):
        TaskOptions(auto_retry_for=[1, 2])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        TaskOptions(retry_policy="fast")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TaskOptions(good_until="soon")  # type: ignore[arg-type]


def test_options_max_retries() -> None:
    assert TaskOptions().max_retries == 0
    assert TaskOptions(retry_policy=RetryPolicy.fixed([1, 2, 3])).max_retries == 3


# --------------------------------------------------------------------------------------------
# error_matches: an error code, or the name of the exception type (or one of its bases)
# --------------------------------------------------------------------------------------------


def _unhandled(exc: BaseException) -> TaskError:
    return TaskError(
        error_code=LibraryErrorCode.UNHANDLED_EXCEPTION,
        message=str(exc),
        data={"exception_type": type(exc).__name__},
        exception=exc,
    )


def _stored(error: TaskError) -> TaskError:
    return task_result_from_json(task_result_to_json(TaskResult(err=error))).unwrap_err()


def test_matches_library_code_given_as_enum_or_string() -> None:
    error = TaskError(error_code=LibraryErrorCode.WORKER_CRASHED)
    assert error_matches(error, [LibraryErrorCode.WORKER_CRASHED])
    assert error_matches(error, ["WORKER_CRASHED"])
    assert error_matches(_stored(error), [LibraryErrorCode.WORKER_CRASHED])


def test_matches_domain_code() -> None:
    assert error_matches(TaskError(error_code="RATE_LIMITED"), ["RATE_LIMITED"])
    assert not error_matches(TaskError(error_code="RATE_LIMITED"), ["OTHER"])


def test_matches_exception_class_name_and_its_bases() -> None:
    error = _unhandled(ConnectionRefusedError("no"))
    for entry in ("ConnectionRefusedError", "ConnectionError", "OSError", "Exception"):
        assert error_matches(error, [entry])
        assert error_matches(_stored(error), [entry])
    assert error_matches(error, ["UNHANDLED_EXCEPTION"])
    assert not error_matches(error, ["TimeoutError"])
    assert not error_matches(_stored(error), ["ValueError"])


def test_matches_serialized_dicts_without_bases() -> None:
    assert error_matches(TaskError(exception={"type": "KeyError"}), ["KeyError"])
    assert error_matches(TaskError(exception={"exception_type": "KeyError"}), ["KeyError"])
    assert not error_matches(TaskError(exception={"type": "KeyError"}), ["LookupError"])


def test_empty_list_and_no_info_never_match() -> None:
    assert not error_matches(_unhandled(ValueError("x")), [])
    assert not error_matches(TaskError(), ["ValueError", "X"])


def test_is_retryable_treats_none_as_never() -> None:
    error = TaskError(error_code="X")
    assert not is_retryable(error, None)
    assert is_retryable(error, ["X"])


# --------------------------------------------------------------------------------------------
# decide_retry
# --------------------------------------------------------------------------------------------

POLICY = RetryPolicy.fixed([5, 30, 120], jitter=False)
OPTIONS = TaskOptions(auto_retry_for=["ConnectionError", "RATE_LIMITED"], retry_policy=POLICY)


def _failed(error: TaskError) -> TaskResult[Any, TaskError]:
    return TaskResult(err=error)


def test_matching_error_with_retries_left_gets_the_next_delay() -> None:
    result = _failed(_unhandled(ConnectionResetError("reset")))
    assert decide_retry(result, retry_count=0, max_retries=3, options=OPTIONS) == 5
    assert decide_retry(result, retry_count=1, max_retries=3, options=OPTIONS) == 30
    assert decide_retry(result, retry_count=2, max_retries=3, options=OPTIONS) == 120


def test_exhausted_retries_are_not_retried() -> None:
    result = _failed(TaskError(error_code="RATE_LIMITED"))
    assert decide_retry(result, retry_count=3, max_retries=3, options=OPTIONS) is None
    assert decide_retry(result, retry_count=0, max_retries=0, options=OPTIONS) is None


def test_ok_results_are_never_retried() -> None:
    ok: TaskResult[Any, TaskError] = TaskResult(ok=1)
    assert decide_retry(ok, retry_count=0, max_retries=3, options=OPTIONS) is None


def test_non_matching_error_is_not_retried() -> None:
    result = _failed(_unhandled(ValueError("bad")))
    assert decide_retry(result, retry_count=0, max_retries=3, options=OPTIONS) is None


def test_policy_without_auto_retry_for_never_retries() -> None:
    options = TaskOptions(retry_policy=POLICY)
    result = _failed(TaskError(error_code="RATE_LIMITED"))
    assert decide_retry(result, retry_count=0, max_retries=3, options=options) is None
    empty = TaskOptions(retry_policy=POLICY, auto_retry_for=[])
    assert decide_retry(result, retry_count=0, max_retries=3, options=empty) is None


def test_auto_retry_for_without_policy_never_retries() -> None:
    options = TaskOptions(auto_retry_for=["RATE_LIMITED"])
    result = _failed(TaskError(error_code="RATE_LIMITED"))
    assert decide_retry(result, retry_count=0, max_retries=3, options=options) is None


def test_worker_crashed_is_retried_when_listed() -> None:
    options = TaskOptions(auto_retry_for=[LibraryErrorCode.WORKER_CRASHED], retry_policy=POLICY)
    crashed = _failed(TaskError(error_code=LibraryErrorCode.WORKER_CRASHED, message="died"))
    assert decide_retry(crashed, retry_count=0, max_retries=3, options=options) == 5
    assert decide_retry(crashed, retry_count=0, max_retries=3, options=OPTIONS) is None


def test_stored_error_is_matched_after_the_database_trip() -> None:
    stored = _stored(_unhandled(ConnectionAbortedError("x")))
    assert decide_retry(_failed(stored), retry_count=0, max_retries=3, options=OPTIONS) == 5


def test_decide_retry_applies_jitter_with_the_given_rng() -> None:
    options = TaskOptions(auto_retry_for=["X"], retry_policy=RetryPolicy.fixed([100, 100]))
    result = _failed(TaskError(error_code="X"))
    delays = {
        decide_retry(result, retry_count=1, max_retries=2, options=options, rng=random.Random(s))
        for s in range(50)
    }
    assert all(d is not None and 75 <= d <= 125 for d in delays)
    assert len(delays) > 1
