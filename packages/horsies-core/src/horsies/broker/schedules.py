"""What the scheduler service does in the database: its schedule state rows, and enqueuing due slots
(see docs/scheduling.md).

Each operation is a generator of :class:`~horsies.broker.steps.Query` steps run by
``PostgresBroker.execute`` / ``execute_async``; the decisions (what is due, which slots to
enqueue, the next run) are pure functions of ``horsies.schedule_calc``.

Duplicate prevention (several schedulers may run at once): :func:`run_due_op` runs in one
transaction that takes the schedule's advisory lock (a scheduler that finds it held skips the
schedule: another one is running it), re-reads the state row, inserts the due tasks and advances
``next_run_at`` only if it is still the value it read. The insert and the advance commit together or
not at all, so a slot is enqueued exactly once, also across crashes and restarts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from horsies.broker.enqueue import EnqueueRequest, enqueue_many_params, enqueue_many_rows
from horsies.broker.limits import limited_rows_query
from horsies.broker.locks import schedule_lock_key
from horsies.broker.sql import schedules as sched_sql
from horsies.broker.sql import tasks as task_sql
from horsies.broker.steps import Op, Pipeline, Query
from horsies.config.schedules import SchedulePattern
from horsies.schedule_calc import next_run_after, plan_due_runs

__all__ = [
    "CATCH_UP_BATCH",
    "DueResult",
    "DueStatus",
    "InitReport",
    "ScheduleRaceLost",
    "ScheduleState",
    "ScheduleTarget",
    "StateSnapshot",
    "initialize_states_op",
    "load_states_op",
    "plan_initialization",
    "run_due_op",
]


CATCH_UP_BATCH: Final = 500
"""Most missed slots enqueued in one transaction; the rest follow at once in further ones."""


@dataclass(frozen=True, slots=True)
class ScheduleTarget:
    """One enabled schedule, resolved against the app: when it runs and the task row it enqueues.

    ``task`` is the template of every row (task name, arguments, queue and priority, and the task's
    own options: retry policy and auto_retry_for in ``task_options``, ``max_retries``,
    ``good_until``, so a run behaves like a ``send()``); its ``task_id`` and ``sent_at`` are ignored
    (each run gets a fresh id and is claimable at once). ``config_hash`` identifies pattern +
    timezone.
    """

    name: str
    pattern: SchedulePattern
    timezone: str
    catch_up_missed: bool
    config_hash: str
    task: EnqueueRequest


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A ``horsies_schedule_state`` row."""

    schedule_name: str
    last_run_at: datetime | None
    next_run_at: datetime | None
    last_task_id: str | None
    run_count: int
    config_hash: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """The database clock and the state rows found, by schedule name."""

    now: datetime
    states: Mapping[str, ScheduleState]


def _state(row: Sequence[Any]) -> ScheduleState | None:
    """A ScheduleState from a ``SCHEDULE_STATE_GET*`` row (``now`` first), None for no row."""
    if row[1] is None:
        return None
    # The columns after ``now`` are ScheduleState's fields, in order.
    return ScheduleState(*row[1:])


def load_states_op(names: Sequence[str]) -> Op[StateSnapshot]:
    """The database clock and the state rows of ``names`` (one statement)."""
    res = yield Query(sched_sql.SCHEDULE_STATE_GET_MANY, {"names": list(names)})
    states = {state.schedule_name: state for state in map(_state, res.rows) if state is not None}
    return StateSnapshot(now=res.rows[0][0], states=states)


# -- start-up --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitReport:
    """What :func:`initialize_states_op` did, by schedule name.

    ``created``: no state row existed, one was inserted (first run = first slot after ``now``);
    ``reset``: the pattern or timezone changed (or the row had no next run), so the next run was
    recalculated from ``now``; ``kept``: the stored next run stands. Each maps to the next run
    planned (for ``kept`` the stored one; a row another scheduler wrote meanwhile counts as kept).
    """

    now: datetime
    created: Mapping[str, datetime]
    reset: Mapping[str, datetime]
    kept: Mapping[str, datetime | None]


def plan_initialization(
    targets: Sequence[ScheduleTarget], snapshot: StateSnapshot
) -> tuple[dict[str, datetime], dict[str, datetime], dict[str, datetime | None]]:
    """(to create, to reset, kept): next runs per schedule name, from the stored rows (pure)."""
    create: dict[str, datetime] = {}
    reset: dict[str, datetime] = {}
    kept: dict[str, datetime | None] = {}
    for target in targets:
        state = snapshot.states.get(target.name)
        if state is None:
            create[target.name] = next_run_after(target.pattern, snapshot.now, target.timezone)
        elif state.config_hash != target.config_hash or state.next_run_at is None:
            reset[target.name] = next_run_after(target.pattern, snapshot.now, target.timezone)
        else:
            kept[target.name] = state.next_run_at
    return create, reset, kept


def _state_rows_params(
    next_runs: Mapping[str, datetime], hashes: Mapping[str, str]
) -> dict[str, list[Any]]:
    names = list(next_runs)
    return {
        "names": names,
        "next_run_ats": [next_runs[name] for name in names],
        "config_hashes": [hashes[name] for name in names],
    }


def initialize_states_op(targets: Sequence[ScheduleTarget]) -> Op[InitReport]:
    """Create missing state rows and reset those whose config hash changed.

    Safe with several schedulers starting at once: inserts skip rows that appeared meanwhile and
    resets apply only while the stored hash still differs. Rows of schedules not in ``targets``
    are left alone.
    """
    snapshot = yield from load_states_op([t.name for t in targets])
    create, reset, kept = plan_initialization(targets, snapshot)
    hashes = {t.name: t.config_hash for t in targets}
    queries: list[Query] = []
    if create:
        queries.append(
            Query(
                sched_sql.SCHEDULE_STATE_INSERT_MANY_IF_ABSENT, _state_rows_params(create, hashes)
            )
        )
    if reset:
        queries.append(
            Query(sched_sql.SCHEDULE_STATE_RESET_MANY_IF_CHANGED, _state_rows_params(reset, hashes))
        )
    done: set[str] = set()
    if len(queries) == 1:
        res = yield queries[0]
        done = {row[0] for row in res.rows}
    elif queries:
        res = yield Pipeline(tuple(queries))
        done = {row[0] for part in res.parts for row in part.rows}
    for name in [*create, *reset]:
        if name not in done:
            # Another scheduler wrote this row between our read and our write: its value stands.
            kept[name] = None
    return InitReport(
        now=snapshot.now,
        created={name: at for name, at in create.items() if name in done},
        reset={name: at for name, at in reset.items() if name in done},
        kept=kept,
    )


# -- running due schedules -------------------------------------------------------------------------


class DueStatus(StrEnum):
    """Outcome of one :func:`run_due_op`."""

    RAN = "ran"
    """Tasks were enqueued and the next run stored."""
    NOT_DUE = "not_due"
    """The stored next run is still in the future (another scheduler may just have run it)."""
    BUSY = "busy"
    """Another scheduler holds the schedule's lock right now: it is running this schedule."""
    CREATED = "created"
    """The state row was missing (or had no next run) and was (re)initialised; nothing enqueued."""


@dataclass(frozen=True, slots=True)
class DueResult:
    """What :func:`run_due_op` did; ``next_run_at`` is the stored next run afterwards (None when
    unknown: ``BUSY``), ``now`` the database clock it decided with."""

    status: DueStatus
    now: datetime
    next_run_at: datetime | None
    task_ids: tuple[str, ...] = ()
    slots: tuple[datetime, ...] = ()


class ScheduleRaceLost(Exception):
    """The state row changed under the lock (a reset or an external write): the transaction is
    rolled back, nothing was enqueued; the schedule is looked at again on the next check."""

    def __init__(self, name: str) -> None:
        super().__init__(f"schedule '{name}': state changed during the run, rolled back")
        self.name = name


def _requests(target: ScheduleTarget, count: int) -> list[EnqueueRequest]:
    template = dataclasses.replace(target.task, task_id=None, sent_at=None)
    return [template] * count


def _insert_runs(target: ScheduleTarget, count: int) -> tuple[list[str], Query]:
    """The ids and the insert of ``count`` runs of the schedule's task (under its limit, if the
    task has one)."""
    requests = _requests(target, count)
    if target.task.limit is not None:
        ids, rows = enqueue_many_rows(requests)
        return ids, limited_rows_query(rows)
    ids, insert_params = enqueue_many_params(requests)
    return ids, Query(task_sql.TASK_INSERT_MANY, insert_params, rows="none")


def run_due_op(target: ScheduleTarget) -> Op[DueResult]:
    """Run one schedule if it is due, in one transaction (run the op with ``transaction=True``).

    1. Take the schedule's advisory lock, or return ``BUSY`` if another scheduler holds it; re-read
       the row and the database clock.
    2. No row (or no next run): initialise it as at start-up, return ``CREATED``. Next run in the
       future: ``NOT_DUE``.
    3. Otherwise plan the runs (without catch-up one run now and the next slot computed from
       now; with catch-up one run per missed slot, at most :data:`CATCH_UP_BATCH` per call, the next
       run following the last), insert one task per run and advance the row, in one round trip.
       Raises :class:`ScheduleRaceLost` (rolling the transaction back) if the row changed anyway.
    """
    parts = (
        yield Pipeline(
            (
                Query(sched_sql.SCHEDULE_TRY_LOCK, {"key": schedule_lock_key(target.name)}),
                Query(sched_sql.SCHEDULE_STATE_GET, {"name": target.name}),
            )
        )
    ).parts
    locked: bool = parts[0].rows[0][0]
    row = parts[1].rows[0]
    now: datetime = row[0]
    if not locked:
        return DueResult(DueStatus.BUSY, now, None)
    state = _state(row)
    if state is None or state.next_run_at is None:
        next_run = next_run_after(target.pattern, now, target.timezone)
        params = _state_rows_params({target.name: next_run}, {target.name: target.config_hash})
        sql = (
            sched_sql.SCHEDULE_STATE_INSERT_MANY_IF_ABSENT
            if state is None
            else sched_sql.SCHEDULE_STATE_RESET_MANY_IF_CHANGED
        )
        yield Query(sql, params)
        return DueResult(DueStatus.CREATED, now, next_run)
    plan = plan_due_runs(
        target.pattern,
        target.timezone,
        state.next_run_at,
        now,
        catch_up_missed=target.catch_up_missed,
        limit=CATCH_UP_BATCH,
    )
    if not plan.slots:
        return DueResult(DueStatus.NOT_DUE, now, state.next_run_at)
    ids, insert = _insert_runs(target, len(plan.slots))
    advanced = (
        yield Pipeline(
            (
                insert,
                Query(
                    sched_sql.SCHEDULE_STATE_ADVANCE_IF_DUE,
                    {
                        "name": target.name,
                        "ran_at": now,
                        "expected_next_run_at": state.next_run_at,
                        "next_run_at": plan.next_run_at,
                        "last_task_id": ids[-1],
                        "runs": len(ids),
                    },
                    rows="none",
                ),
            )
        )
    ).parts[1]
    if advanced.rowcount != 1:
        raise ScheduleRaceLost(target.name)
    return DueResult(
        DueStatus.RAN, now, plan.next_run_at, task_ids=tuple(ids), slots=tuple(plan.slots)
    )
