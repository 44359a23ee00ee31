"""What the end of a child process means for the tasks it held, and stopping a running task.

A child exits because it crashed, because the worker stopped it (shutdown, a ``def`` task past its
time limit, a ``def`` task whose stop was requested) or because it was asked to. Every task written
to its pipe was running: it ends with the outcome that says why (``TASK_TIMEOUT``,
``TASK_CANCELLED``, else ``WORKER_CRASHED``, retried per its policy). Tasks held back behind them
never began and go back to PENDING.

A stop request (``TaskHandle.cancel()`` of a running task: a ``task_stop`` notification, or the
heartbeat's answer when the notification was missed) cancels an async task inside its child and
stops the child of a ``def`` task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from horsies.logs import get_logger, task_fields

from horsies_worker.completer import build_outcome, crashed_result_json
from horsies_worker.execution import stopped_result_json, timed_out_result_json
from horsies_worker.orphans import orphaned_processes

if TYPE_CHECKING:
    from horsies_worker.children import Assignment, ChildProcess
    from horsies_worker.config import WorkerConfig
    from horsies_worker.identity import WorkerIdentity
    from horsies_worker.state import WorkerState

__all__ = ["ChildExits"]

logger = get_logger("worker")

_DEAD_KEPT = 64


@dataclass(eq=False)
class ChildExits:
    """The worker's handling of child exits and stop requests."""

    identity: WorkerIdentity
    config: WorkerConfig
    wake: asyncio.Event
    force: asyncio.Event
    state: Callable[[], WorkerState | None]
    shutting_down: Callable[[], bool]
    _dead: deque[int] = field(init=False, default_factory=lambda: deque(maxlen=_DEAD_KEPT))
    """The latest dead children: when their fork server died first, they wait as zombies of
    another parent, and are no task's orphans."""

    def stop(self, task_ids: Iterable[str]) -> None:
        """Stop these tasks if this worker runs them: an async task is cancelled in its child,
        a ``def`` task's child is stopped (and replaced)."""
        state = self.state()
        if state is None:
            return
        wanted = set(task_ids)
        for child, assignment in state.assignments():
            if assignment.task.id not in wanted or not assignment.written or assignment.stopped:
                continue
            assignment.stopped = True
            task = assignment.task
            logger.info("task_stopping: %s (%s)", task.id, task.task_name,
                        extra=task_fields(task.id, task.task_name))  # fmt: skip
            if assignment.concurrent:
                child.cancel_task(assignment)
            else:
                child.kill()

    def on_exit(
        self, child: ChildProcess, assignments: Sequence[Assignment], exitcode: int | None
    ) -> None:
        state = self.state()
        assert state is not None
        sent = [a for a in assignments if a.sent]
        # Written to the pipe: running (the head, or every async task of the child). Held behind
        # them: the child never began those.
        ran = [a for a in sent if a.written]
        if len(ran) < len(sent):
            state.requeue_unstarted(
                [a.task for a in sent if not a.written],
                f"child process {child.pid} exited before starting it",
            )
        reason = self._crash_reason(child, exitcode)
        for assignment in ran:
            task = assignment.task
            if assignment.timed_out and assignment.time_limit_s is not None:
                why = f"ran past its time limit ({assignment.time_limit_s:g}s): child stopped"
                logger.warning("task_timed_out: %s (%s): %s", task.id, task.task_name, why,
                               extra=task_fields(task.id, task.task_name))  # fmt: skip
                result_json = timed_out_result_json(task.task_name, assignment.time_limit_s)
                self._submit(state, assignment, result_json, why)
            elif assignment.stopped:
                why = "stopped while running: cancel() was called"
                self._submit(state, assignment, stopped_result_json(task.task_name), why)
            else:
                logger.error("task_crashed: %s (%s): %s", task.id, task.task_name, reason,
                             extra=task_fields(task.id, task.task_name))  # fmt: skip
                self._submit_crash(state, assignment, child.pid, exitcode, reason)
        if not child.expected_exit:
            logger.warning(
                "child_died: index=%s pid=%s exit_code=%s; starting a replacement",
                child.index,
                child.pid,
                exitcode,
            )
            # Reading every process of the host: off the loop, which serves heartbeats.
            self._dead.append(child.pid)
            state.in_background(_report_orphans(child.pid, set(self._dead)), "horsies-orphans")

    def _crash_reason(self, child: ChildProcess, exitcode: int | None) -> str:
        if self.shutting_down() and child.expected_exit and self.force.is_set():
            return (
                f"Worker child process {child.pid} terminated at shutdown: the worker was "
                "asked to stop a second time (a second SIGINT/SIGTERM) while the task ran"
            )
        if self.shutting_down() and child.expected_exit:
            return (
                f"Worker child process {child.pid} terminated at shutdown: the task was still "
                f"running after the shutdown timeout ({self.config.shutdown_timeout_s:g}s)"
            )
        return (
            f"Worker child process {child.pid} died while running the task (exit code {exitcode})"
        )

    def _submit_crash(
        self,
        state: WorkerState,
        assignment: Assignment,
        child_pid: int,
        exitcode: int | None,
        reason: str,
    ) -> None:
        me = self.identity
        result_json = crashed_result_json(
            task=assignment.task,
            worker_id=me.worker_id,
            hostname=me.hostname,
            child_pid=child_pid,
            exitcode=exitcode,
            reason=reason,
        )
        self._submit(state, assignment, result_json, reason)

    def _submit(
        self, state: WorkerState, assignment: Assignment, result_json: str, reason: str
    ) -> None:
        outcome = build_outcome(assignment.task, result_json, False, failed_reason=reason)
        state.submit_outcome(assignment, outcome)
        # The default mode writes outcomes only in claim-loop round trips: run one now, so the
        # end is recorded at once, not at the next poll or replacement child.
        self.wake.set()


async def _report_orphans(dead_pid: int, dead_children: set[int]) -> None:
    try:
        orphans = await asyncio.to_thread(orphaned_processes, dead_children)
    except Exception as exc:  # psutil may be refused /proc in a sandbox
        logger.debug("orphan_check_failed: %s", exc)
        return
    if orphans:
        logger.warning(
            "orphan_processes: %s process(es) started by tasks outlived their child process "
            "(%s died) and keep running; the worker does not stop them: pids %s",
            len(orphans),
            dead_pid,
            ", ".join(map(str, orphans)),
        )
