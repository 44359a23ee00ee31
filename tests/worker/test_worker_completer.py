"""Outcome building and batched persistence: retry decisions (auto_retry_for matches an error
code or an exception type name; WORKER_CRASHED is retried when listed) and the outcome of a dead
child."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from horsies.broker.claims import ClaimedTask
from horsies.broker.finish import Finished, TaskOutcome
from horsies.codec import task_result_from_json, task_result_to_json
from horsies.results import LibraryErrorCode, TaskError, TaskResult
from horsies.retry import RetryPolicy, TaskOptions
from horsies_worker.completer import Completer, build_outcome, crashed_result_json


def claimed(
    *,
    retry_count: int = 0,
    max_retries: int = 0,
    options: TaskOptions | None = None,
    attempt: int = 1,
) -> ClaimedTask:
    return ClaimedTask(
        id="task-1",
        task_name="t",
        queue_name="default",
        priority=100,
        args="[]",
        kwargs="{}",
        retry_count=retry_count,
        max_retries=max_retries,
        task_options=options.to_json() if options is not None else None,
        sent_at=datetime.now(UTC),
        attempt=attempt,
    )


def err_json(code: str, exception: BaseException | None = None) -> str:
    return task_result_to_json(
        TaskResult(err=TaskError(error_code=code, message="m", exception=exception))
    )


POLICY = RetryPolicy.fixed([7, 11], jitter=False)


def test_ok_result_completes() -> None:
    outcome = build_outcome(claimed(), task_result_to_json(TaskResult(ok=1)), True)
    assert outcome.ok
    assert outcome.retry_delay_s is None
    assert outcome.attempt == 1


def test_listed_error_code_is_retried_with_the_policy_delay() -> None:
    options = TaskOptions(retry_policy=POLICY, auto_retry_for=["RATE_LIMITED"])
    task = claimed(retry_count=1, max_retries=2, options=options, attempt=2)
    outcome = build_outcome(task, err_json("RATE_LIMITED"), False)
    assert not outcome.ok
    assert outcome.retry_delay_s == 11  # second retry uses the second interval
    assert outcome.attempt == 2  # pins the outcome to the claim that produced it


def test_exception_base_class_name_matches_after_encoding() -> None:
    # An exception type name in auto_retry_for: "ConnectionError" catches ConnectionRefusedError,
    # even after the trip through JSON.
    options = TaskOptions(retry_policy=POLICY, auto_retry_for=["ConnectionError"])
    task = claimed(max_retries=2, options=options)
    text = err_json("UNHANDLED_EXCEPTION", ConnectionRefusedError("nope"))
    assert build_outcome(task, text, False).retry_delay_s == 7


def test_unlisted_error_or_exhausted_retries_fail() -> None:
    options = TaskOptions(retry_policy=POLICY, auto_retry_for=["RATE_LIMITED"])
    assert build_outcome(claimed(max_retries=2, options=options), err_json("OTHER"), False) == (
        TaskOutcome(
            task_id="task-1",
            result_json=err_json("OTHER"),
            ok=False,
            retry_delay_s=None,
            attempt=1,
        )
    )
    exhausted = claimed(retry_count=2, max_retries=2, options=options)
    assert build_outcome(exhausted, err_json("RATE_LIMITED"), False).retry_delay_s is None


def test_no_options_never_retry() -> None:
    assert build_outcome(claimed(max_retries=3), err_json("X"), False).retry_delay_s is None


def crash_json(task: ClaimedTask) -> str:
    return crashed_result_json(
        task=task,
        worker_id="w",
        hostname="h",
        child_pid=123,
        exitcode=-9,
        reason="Worker child process 123 died while running the task (exit code -9)",
    )


def test_crashed_result_describes_the_dead_child() -> None:
    error = task_result_from_json(crash_json(claimed())).unwrap_err()
    assert error.error_code == LibraryErrorCode.WORKER_CRASHED
    assert error.data["worker_pid"] == 123
    assert error.data["exit_code"] == -9
    assert error.data["signal"] == 9
    assert error.data["worker_id"] == "w"


def test_crash_keeps_failed_reason_unless_retried() -> None:
    reason = "child died"
    plain = claimed()
    outcome = build_outcome(plain, crash_json(plain), False, failed_reason=reason)
    assert outcome.failed_reason == reason
    assert outcome.retry_delay_s is None
    # A crash is retried too: WORKER_CRASHED listed in auto_retry_for → retried like any other
    # listed error.
    options = TaskOptions(retry_policy=POLICY, auto_retry_for=["WORKER_CRASHED"])
    retried = claimed(max_retries=2, options=options)
    outcome = build_outcome(retried, crash_json(retried), False, failed_reason=reason)
    assert outcome.retry_delay_s == 7
    assert outcome.failed_reason is None


class FakeBroker:
    """Records finish_async batches; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.gate = asyncio.Event()
        self.gate.set()

    async def finish_async(
        self,
        outcomes: Sequence[TaskOutcome],
        *,
        worker_id: str | None,
        notify_capacity: bool = True,
    ) -> Finished:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        self.batches.append([o.task_id for o in outcomes])
        return Finished({o.task_id for o in outcomes})


def outcome(task_id: str, attempt: int | None = None) -> TaskOutcome:
    return TaskOutcome(task_id=task_id, result_json="{}", ok=True, attempt=attempt)


async def test_outcomes_arriving_during_a_write_are_batched_together() -> None:
    broker = FakeBroker()
    flushed: list[set[str]] = []
    completer = Completer(
        broker,  # type: ignore[arg-type]
        "w",
        on_flushed=lambda _outcomes, finished, _undecided: flushed.append(finished),
    )
    runner = asyncio.create_task(completer.run())
    broker.gate.clear()
    completer.submit(outcome("a"))
    await asyncio.sleep(0)  # the writer takes "a" and blocks in finish_async
    for name in ("b", "c", "d"):
        completer.submit(outcome(name))
    broker.gate.set()
    assert await completer.wait_idle(5)
    completer.close()
    await asyncio.wait_for(runner, 5)
    assert broker.batches == [["a"], ["b", "c", "d"]]
    assert flushed == [{"a"}, {"b", "c", "d"}]


@pytest.mark.timeout(30)
async def test_failed_write_is_retried_and_nothing_is_lost() -> None:
    broker = FakeBroker(failures=2)
    completer = Completer(broker, "w")  # type: ignore[arg-type]
    runner = asyncio.create_task(completer.run())
    completer.submit(outcome("x"))
    completer.submit(outcome("y"))
    assert await completer.wait_idle(10)
    completer.close()
    await asyncio.wait_for(runner, 5)
    assert broker.batches == [["x", "y"]]


async def test_close_drains_the_queue_first() -> None:
    broker = FakeBroker()
    completer = Completer(broker, "w", max_batch=2)  # type: ignore[arg-type]
    for name in "abcde":
        completer.submit(outcome(name))
    completer.close()
    await asyncio.wait_for(completer.run(), 5)
    assert broker.batches == [["a", "b"], ["c", "d"], ["e"]]
    assert completer.pending == 0


def test_a_caller_can_take_write_and_settle_or_restore_batches() -> None:
    flushed: list[tuple[list[str], set[str]]] = []
    completer = Completer(
        FakeBroker(),  # type: ignore[arg-type]
        "w",
        max_batch=2,
        on_flushed=lambda outcomes, finished, _undecided: flushed.append(
            ([o.task_id for o in outcomes], finished)
        ),
    )
    for name, attempt in (("a", 1), ("b", 3), ("c", None)):
        completer.submit(outcome(name, attempt))
    first = completer.take()
    assert [o.task_id for o in first] == ["a", "b"]
    # In flight first, then queued; an outcome without attempt counts as attempt 0.
    assert completer.pending_keys() == [("a", 1), ("b", 3), ("c", 0)]
    assert completer.pending == 3
    completer.restore(first)  # the write failed: written first next time
    assert completer.pending_keys() == [("a", 1), ("b", 3), ("c", 0)]
    again = completer.take()
    assert [o.task_id for o in again] == ["a", "b"]
    completer.settle(again, {"a"})  # "b" lost its race
    assert flushed == [(["a", "b"], {"a"})]
    assert completer.pending_keys() == [("c", 0)]
    last = completer.take()
    completer.settle(last, {"c"})
    assert completer.pending == 0
    assert completer.take() == []
