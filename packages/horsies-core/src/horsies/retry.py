"""Retry policy, task options and the pure retry decision.

A failed task is retried only when it has a `RetryPolicy` (retries left) *and* its error matches an
entry of `auto_retry_for` (error code, or the class name of the raised exception or of any of its
base classes). `decide_retry` combines both rules and returns the delay before the next attempt.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, Self, cast

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from horsies.errors import ErrorCode, TaskDefinitionError
from horsies.logs import get_logger
from horsies.results import TaskError, TaskResult
from horsies.tracing import without_carrier

_log = get_logger("tasks")

__all__ = [
    "RetryPolicy",
    "TaskOptions",
    "decide_retry",
    "error_matches",
    "is_retried_stored",
    "is_retryable",
    "retry_delay_for_stored",
    "retry_delay_seconds",
    "stored_options",
    "time_limit_for_stored",
]

MAX_RETRIES_LIMIT = 20
MAX_INTERVAL_SECONDS = 86_400
JITTER_FRACTION = 0.25

IntervalSeconds = Annotated[int, Field(ge=1, le=MAX_INTERVAL_SECONDS)]


class RetryPolicy(BaseModel):
    """How many times a failed task is retried and how long to wait before each attempt.

    Prefer the constructors: `RetryPolicy.fixed([5, 30, 120])` (one delay per retry) or
    `RetryPolicy.exponential(30, max_retries=5)` (30, 60, 120, ... seconds). With `jitter` (the
    default) every delay moves randomly by up to ±25 %. A policy alone never retries anything: list
    the errors to retry in the task's `auto_retry_for`.

    Rules (a violation raises pydantic's `ValidationError`, a `ValueError`): `max_retries` 1-20;
    `intervals` 1-20 items of 1-86400 seconds; "fixed" needs exactly one interval per retry,
    "exponential" exactly one interval (the base delay).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(default=3, ge=1, le=MAX_RETRIES_LIMIT)
    intervals: list[IntervalSeconds] = Field(
        default_factory=lambda: [60, 300, 900], min_length=1, max_length=MAX_RETRIES_LIMIT
    )
    backoff_strategy: Literal["fixed", "exponential"] = "fixed"
    jitter: bool = True

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.backoff_strategy == "fixed" and len(self.intervals) != self.max_retries:
            raise ValueError(
                f"fixed backoff needs one interval per retry: got {len(self.intervals)} "
                f"interval(s) for max_retries={self.max_retries}"
            )
        if self.backoff_strategy == "exponential" and len(self.intervals) != 1:
            raise ValueError(
                "exponential backoff needs exactly one interval (the base delay), "
                f"got {len(self.intervals)}"
            )
        return self

    @classmethod
    def fixed(cls, intervals: Iterable[int], *, jitter: bool = True) -> RetryPolicy:
        """One retry per entry of `intervals`, waiting that many seconds before it."""
        delays = list(intervals)
        return cls(
            max_retries=len(delays), intervals=delays, backoff_strategy="fixed", jitter=jitter
        )

    @classmethod
    def exponential(
        cls, base_seconds: int, *, max_retries: int, jitter: bool = True
    ) -> RetryPolicy:
        """`max_retries` retries waiting `base_seconds * 2**(n-1)` seconds before retry n."""
        return cls(
            max_retries=max_retries,
            intervals=[base_seconds],
            backoff_strategy="exponential",
            jitter=jitter,
        )


def retry_delay_seconds(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> int:
    """Seconds to wait before retry number `attempt` (1 = first retry).

    fixed: `intervals[attempt-1]` (the last interval if `attempt` goes beyond the list);
    exponential: `intervals[0] * 2**(attempt-1)`, uncapped. Jitter adds a uniform offset within
    ±25 % of that base. The result is `max(1, int(delay))`. Pass `rng` for reproducible jitter.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if policy.backoff_strategy == "exponential":
        base: float = policy.intervals[0] * 2 ** (attempt - 1)
    else:
        base = policy.intervals[min(attempt, len(policy.intervals)) - 1]
    delay = base
    if policy.jitter:
        spread = base * JITTER_FRACTION
        delay = base + (rng or random).uniform(-spread, spread)
    return max(1, int(delay))


def _as_name(entry: object) -> str:
    if isinstance(entry, Enum):
        return str(entry.value)
    if isinstance(entry, str):
        return str.__str__(entry)
    return str(entry)


class TaskOptions(BaseModel):
    """Per-task retry and expiry options, stored with every task row (`task_options` column).

    `auto_retry_for` lists error codes (`LibraryErrorCode` members are stored as their values) and
    exception class names that trigger a retry; `retry_policy` says how often and when;
    `good_until` is an absolute deadline after which the task is no longer claimed;
    `time_limit_s` bounds how long one run may take once it started.
    `to_json()` / `from_json()` give the stored JSON form; `from_json` leaves out a trace carrier
    a send appended (`horsies.tracing`), so other keys of the text are ignored, not refused.
    """

    model_config = ConfigDict(frozen=True)

    auto_retry_for: list[str] | None = None
    retry_policy: RetryPolicy | None = None
    good_until: datetime | None = None
    time_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The longest one run may take, in seconds; past it the run is stopped (``TASK_TIMEOUT``)."""

    @field_validator("auto_retry_for", mode="before")
    @classmethod
    def _enum_members_as_values(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            entries = cast("Iterable[object]", value)
            return [entry.value if isinstance(entry, Enum) else entry for entry in entries]
        return value

    @classmethod
    def checked(cls, **fields: Any) -> TaskOptions:
        """The options ``fields`` make, or `TaskDefinitionError` (E102) with a note for each field
        that is wrong (as ``@app.task`` and ``with_options`` report them)."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            error = TaskDefinitionError("invalid task options", code=ErrorCode.TASK_INVALID_OPTIONS)
            for detail in exc.errors(include_url=False):
                field_name = ".".join(str(part) for part in detail["loc"]) or "options"
                error = error.with_note(f"{field_name}: {detail['msg']}")
            raise error from exc

    @property
    def max_retries(self) -> int:
        """`retry_policy.max_retries`, or 0 without a policy (the row's `max_retries`)."""
        return self.retry_policy.max_retries if self.retry_policy is not None else 0

    def to_json(self) -> str:
        """The `task_options` column form: `{"auto_retry_for", "retry_policy", "good_until"}`,
        and `"time_limit_s"` when the task has one."""
        policy = self.retry_policy
        payload: dict[str, object] = {
            "auto_retry_for": self.auto_retry_for,
            "retry_policy": None if policy is None else policy.model_dump(),
            "good_until": None if self.good_until is None else self.good_until.isoformat(),
        }
        if self.time_limit_s is not None:
            payload["time_limit_s"] = self.time_limit_s
        return orjson.dumps(payload).decode()

    @classmethod
    def from_json(cls, text: str | bytes | None) -> TaskOptions:
        """Parse the `task_options` column; NULL or empty text gives default options.

        Raises `ValueError` for invalid JSON, a non-object payload or invalid values.
        """
        if isinstance(text, bytes):
            text = text.decode()
        text = without_carrier(text)
        if text is None or not text.strip():
            return cls()
        data = orjson.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"task options must be a JSON object, got {type(data).__name__}")
        return cls.model_validate(data)


def _exception_names(exception: BaseException | Mapping[str, Any] | None) -> Iterator[str]:
    """Class names an exception answers to: its own class and every base class, so that
    ``"ConnectionError"`` in ``auto_retry_for`` also catches ``ConnectionRefusedError``."""
    if exception is None:
        return
    if isinstance(exception, BaseException):
        for cls in type(exception).__mro__:
            if cls is not object:
                yield cls.__name__
        return
    for key in ("type", "exception_type"):
        name = exception.get(key)
        if isinstance(name, str):
            yield name
    bases = exception.get("bases")
    if isinstance(bases, list):
        for base in bases:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(base, str):
                yield base


def error_matches(error: TaskError, auto_retry_for: Iterable[str | Enum]) -> bool:
    """True when an `auto_retry_for` entry names this error.

    An entry matches the error code (a `LibraryErrorCode` member or any string code), or the class
    name of the exception carried by the error or of any of its base classes, so
    `"ConnectionError"` matches a `ConnectionRefusedError`. Works for a live exception and for the
    stored form (`type` / `bases`, or `exception_type`).
    """
    wanted = {_as_name(entry) for entry in auto_retry_for}
    if not wanted:
        return False
    code = error.error_code
    if code is not None and _as_name(code) in wanted:
        return True
    return any(name in wanted for name in _exception_names(error.exception))


def is_retryable(error: TaskError, auto_retry_for: Iterable[str | Enum] | None) -> bool:
    """Same as `error_matches`, with `None` (no `auto_retry_for`) meaning "never"."""
    return auto_retry_for is not None and error_matches(error, auto_retry_for)


def decide_retry(
    result: TaskResult[Any, Any],
    *,
    retry_count: int,
    max_retries: int,
    options: TaskOptions,
    rng: random.Random | None = None,
) -> int | None:
    """Delay in seconds before retrying a finished attempt, or None when it must not be retried.

    A result is retried only if it is an error, retries remain (`retry_count < max_retries`, the
    row's counters), the options carry a retry policy and a non-empty `auto_retry_for`, and the
    error matches it (`error_matches`). The delay is for attempt `retry_count + 1`.
    """
    policy = _retrying_policy(result, retry_count, max_retries, options)
    return None if policy is None else retry_delay_seconds(policy, retry_count + 1, rng)


def _retrying_policy(
    result: TaskResult[Any, Any], retry_count: int, max_retries: int, options: TaskOptions
) -> RetryPolicy | None:
    """The policy that retries a finished attempt (the rules of `decide_retry`), or None."""
    if result.is_ok():
        return None
    if max_retries <= 0 or retry_count >= max_retries:
        return None
    policy = options.retry_policy
    if policy is None or not options.auto_retry_for:
        return None
    error = result.err
    if not isinstance(error, TaskError) or not error_matches(error, options.auto_retry_for):
        return None
    return policy


def retry_delay_for_stored(
    result: TaskResult[Any, Any],
    *,
    retry_count: int,
    max_retries: int,
    options_json: str | None,
    rng: random.Random | None = None,
) -> float | None:
    """`decide_retry` for a task row: its stored options JSON, retry count and retry limit. The
    one retry decision of the library: the worker takes it for a finished execution, the reaper
    for a run whose worker went silent. Options that cannot be read are never retried."""
    options = stored_options(options_json)
    if options is None:
        return None
    delay = decide_retry(
        result, retry_count=retry_count, max_retries=max_retries, options=options, rng=rng
    )
    return None if delay is None else float(delay)


def is_retried_stored(
    result: TaskResult[Any, Any], *, retry_count: int, max_retries: int, options_json: str | None
) -> bool:
    """True when `retry_delay_for_stored` retries this result: the same decision without drawing
    its delay (a worker child records it on the run's span; its main process decides)."""
    options = stored_options(options_json)
    return options is not None and (
        _retrying_policy(result, retry_count, max_retries, options) is not None
    )


def stored_options(options_json: str | None) -> TaskOptions | None:
    """The `TaskOptions` of a task row's ``task_options`` text, or None (logged) when it cannot be
    read. Rows of one task carry the same text once a send's trace carrier is left out, so each
    text is parsed once."""
    return _parsed_options(without_carrier(options_json))


@functools.lru_cache(maxsize=512)
def _parsed_options(options_json: str | None) -> TaskOptions | None:
    try:
        return TaskOptions.from_json(options_json)
    except Exception as exc:
        # Said once per text (the result is cached): no retry and no time limit apply to it.
        _log.warning(
            "unreadable task_options %r: not retrying, no time limit (%s)", options_json, exc
        )
        return None


def time_limit_for_stored(options_json: str | None) -> float | None:
    """The time limit (seconds) stored in a task row's options; None without one."""
    options = stored_options(options_json)
    return None if options is None else options.time_limit_s
