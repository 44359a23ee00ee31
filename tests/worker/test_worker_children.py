"""Persistent child processes seen from the main process, without a database: a child that dies
is reported with its task and replaced by a fresh one, and the worker lives on."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from async_wait import wait_until
from claimed_rows import claimed
from horsies.codec import task_result_from_json
from horsies_worker.children import Assignment, ChildPool, ChildProcess, ChildStartError
from horsies_worker.spawn import ChildInit

APP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_test_app.py")


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[str, str, bool]] = []
        self.exits: list[tuple[int, str | None, int | None]] = []
        self.held_at_exit: list[list[tuple[str, bool]]] = []
        self.ready: list[int] = []

    def on_result(self, child: ChildProcess, a: Assignment, result_json: str, ok: bool) -> None:
        self.results.append((a.task.id, result_json, ok))

    def on_exit(
        self, child: ChildProcess, held: Sequence[Assignment], exitcode: int | None
    ) -> None:
        running = next((a.task.id for a in held if a.sent), None)
        self.exits.append((child.pid, running, exitcode))
        self.held_at_exit.append([(a.task.id, a.sent) for a in held])

    def on_ready(self, child: ChildProcess) -> None:
        self.ready.append(child.pid)

    def pool(self, size: int, app_attribute: str = "app") -> ChildPool:
        """A pool of ``size`` children of the test app (``<APP_FILE>:<app_attribute>``) whose
        results, exits and readiness this recorder records."""
        locator = f"{APP_FILE}:{app_attribute}"
        init = ChildInit(locator=locator, loglevel="WARNING")
        return ChildPool(
            size, init, on_result=self.on_result, on_exit=self.on_exit, on_ready=self.on_ready
        )


@pytest.mark.timeout(90)
async def test_children_run_tasks_and_a_dead_child_is_reported_and_replaced() -> None:
    rec = Recorder()
    pool = rec.pool(2)
    await asyncio.wait_for(pool.start(), 60)
    try:
        idle = pool.idle_children()
        assert len(idle) == 2
        pids = {c.pid for c in idle}

        # Each child runs a task; results come back through the callback without blocking.
        for index, child in enumerate(idle):
            assignment = Assignment(task=claimed(f"t{index}", "add", f"[{index}, 10]"))
            child.reserve(assignment)
            assert child.send_tasks([assignment])
        await wait_until(lambda: len(rec.results) == 2)
        values = {task_id: task_result_from_json(text).unwrap() for task_id, text, _ in rec.results}
        assert values == {"t0": 10, "t1": 11}
        assert len(pool.idle_children()) == 2

        # A child that dies mid-task is reported at once with its assignment and exit code...
        victim = pool.idle_children()[0]
        victim_pid = victim.pid
        doomed = Assignment(task=claimed("crash", "hard_exit", "[3]"))
        victim.reserve(doomed)
        assert victim.send_tasks([doomed])
        await wait_until(lambda: len(rec.exits) == 1)
        assert rec.exits[0] == (victim_pid, "crash", 3)

        # ... and replaced by a fresh child that serves the next task.
        await wait_until(lambda: len(rec.ready) == 1, timeout=60)
        await wait_until(lambda: len(pool.idle_children()) == 2)
        new_pids = {c.pid for c in pool.children}
        assert victim_pid not in new_pids
        assert len(new_pids & pids) == 1
        replacement = next(c for c in pool.children if c.pid not in pids)
        follow_up = Assignment(task=claimed("after", "pid"))
        replacement.reserve(follow_up)
        assert replacement.send_tasks([follow_up])
        await wait_until(lambda: len(rec.results) == 3)
        assert task_result_from_json(rec.results[2][1]).unwrap() == replacement.pid
    finally:
        await pool.close(timeout=5)
    assert all(not c.alive for c in pool.children)


@pytest.mark.timeout(90)
async def test_close_terminates_busy_children_and_reports_their_tasks() -> None:
    rec = Recorder()
    pool = rec.pool(1)
    await asyncio.wait_for(pool.start(), 60)
    child = pool.idle_children()[0]
    long_task = Assignment(task=claimed("long", "sleep", "[60]"))
    child.reserve(long_task)
    assert child.send_tasks([long_task])
    assert not await pool.wait_until_idle(0.2)
    started = time.monotonic()
    await pool.close(timeout=5)
    assert time.monotonic() - started < 10
    assert [(task_id, code is not None and code < 0) for _, task_id, code in rec.exits] == [
        ("long", True)
    ]
    assert rec.ready == []  # no respawn after close


@pytest.mark.timeout(90)
async def test_child_start_failure_is_reported() -> None:
    rec = Recorder()
    pool = rec.pool(1, "no_such_app")
    with pytest.raises(ChildStartError, match="no_such_app"):
        await asyncio.wait_for(pool.start(), 60)
    await pool.close(timeout=5)


@pytest.mark.timeout(90)
async def test_a_child_runs_its_queue_in_order_writing_each_message_when_it_gets_to_it() -> None:
    """Prefetch mode queues tasks behind a running one: results come back in order, and each
    queued message is written only when the child gets to it (the worker can take it back until
    then, and the pipe never fills up)."""
    rec = Recorder()
    pool = rec.pool(1)
    await asyncio.wait_for(pool.start(), 60)
    try:
        child = pool.idle_children()[0]
        big = "x" * 200_000
        queue = [
            Assignment(task=claimed("first", "sleep", "[0.3]")),
            Assignment(task=claimed("second", "add", "[1, 2]")),
            Assignment(task=claimed("large", "echo", f'["{big}"]')),
            Assignment(task=claimed("after", "add", "[3, 4]")),
        ]
        for assignment in queue:
            child.reserve(assignment)
            assert child.send_tasks([assignment])
        assert [a.written for a in queue] == [True, False, False, False]
        assert child.free_slots(8) == 4
        await wait_until(lambda: child.head_overdue(time.monotonic()), timeout=5)
        assert child.free_slots(8) == 0  # nothing more queues behind a task running long
        assert not child.idle
        await wait_until(lambda: len(rec.results) == 4, timeout=30)
        assert [task_id for task_id, _, _ in rec.results] == ["first", "second", "large", "after"]
        assert child.free_slots(8) == 8
        values = [task_result_from_json(text).unwrap() for _, text, _ in rec.results]
        assert values[1:] == [3, big, 7]
        assert child.idle
    finally:
        await pool.close(timeout=5)


@pytest.mark.timeout(90)
async def test_async_tasks_go_to_a_child_together_and_come_back_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child running async tasks gets the next ones in one message and answers the tasks that
    end in the same turn of its loop in one message; every task still gets its own result."""
    rec = Recorder()
    kinds: list[tuple[str, int]] = []
    handle = ChildProcess._handle_message  # pyright: ignore[reportPrivateUsage]

    def spy(child: ChildProcess, message: tuple[Any, ...]) -> None:
        kinds.append((message[0], len(message[1]) if message[0] == "results" else 1))
        handle(child, message)

    monkeypatch.setattr(ChildProcess, "_handle_message", spy)
    pool = rec.pool(1)
    await asyncio.wait_for(pool.start(), 60)
    try:
        child = pool.idle_children()[0]
        first = Assignment(task=claimed("first", "async_pause", "[0.5]"), concurrent=True)
        child.reserve(first)
        assert child.send_tasks([first])
        batch = [
            Assignment(task=claimed(f"t{i}", "async_pause", "[0.2]"), concurrent=True)
            for i in range(20)
        ]
        for assignment in batch:
            child.reserve(assignment)
        began = time.monotonic()
        assert child.send_tasks(batch)
        assert all(a.written for a in batch)
        await wait_until(lambda: len(rec.results) == 21, timeout=30)
        assert time.monotonic() - began < 0.2 * 20 / 2  # they overlapped
        assert {task_id for task_id, _, ok in rec.results if ok} == {"first"} | {
            f"t{i}" for i in range(20)
        }
        assert all(task_result_from_json(text).is_ok() for _, text, _ in rec.results)
        assert max(n for kind, n in kinds if kind == "results") > 1
        assert sum(n for kind, n in kinds if kind in ("result", "results")) == 21
    finally:
        await pool.close(timeout=5)


async def test_queued_tasks_can_be_taken_back_until_the_child_gets_to_them() -> None:
    rec = Recorder()
    pool = rec.pool(1)
    await asyncio.wait_for(pool.start(), 60)
    try:
        child = pool.idle_children()[0]
        running = Assignment(task=claimed("running", "sleep", "[0.3]"))
        queued = [Assignment(task=claimed(f"q{i}", "add", "[1, 2]")) for i in range(2)]
        for assignment in (running, *queued):
            child.reserve(assignment)
            assert child.send_tasks([assignment])
        assert child.take_back_queued() == queued
        assert list(child.assignments) == [running]
        await wait_until(lambda: len(rec.results) == 1, timeout=30)
        assert [task_id for task_id, _, _ in rec.results] == ["running"]
        assert child.idle
    finally:
        await pool.close(timeout=5)


@pytest.mark.timeout(90)
async def test_a_dead_child_reports_its_whole_queue_in_order(tmp_path: Path) -> None:
    rec = Recorder()
    go = tmp_path / "die-now"
    pool = rec.pool(1)
    await asyncio.wait_for(pool.start(), 60)
    try:
        child = pool.idle_children()[0]
        doomed = Assignment(task=claimed("crash", "hard_exit", json.dumps([3, str(go)])))
        queued = Assignment(task=claimed("queued", "add", "[1, 2]"))
        reserved = Assignment(task=claimed("reserved", "add", "[1, 2]"))
        for assignment in (doomed, queued, reserved):
            child.reserve(assignment)
        assert child.send_tasks([doomed])
        assert child.send_tasks([queued])
        go.touch()
        await wait_until(lambda: len(rec.exits) == 1)
        assert rec.exits[0][1:] == ("crash", 3)
        assert rec.held_at_exit == [[("crash", True), ("queued", True), ("reserved", False)]]
        assert rec.results == []
    finally:
        await pool.close(timeout=5)
