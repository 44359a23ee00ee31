"""Scenario 9: soak. Tasks and workflows flow through two workers while a fault loop
(``chaos.Chaos``) SIGKILLs a worker's whole process group at seeded random moments (a replacement
is started each time), freezes one (SIGSTOP past the stale thresholds, then SIGCONT: a reaper
fails or retries what it ran meanwhile, and its late results must change nothing) and cuts the
workers' and producers' connections (``pg_terminate_backend``).

With ``HORSIES_SOAK=1``: 100,000 tasks sent in batches over about 14 minutes, plus workflows
(chains, fan-outs and nested ones with child workflows), then the drain: about 15 minutes. Without
it, a shortened run (2,000 tasks, a few workflows, ~20 s) that is part of the normal test suite.
Sizes can be tuned with ``HORSIES_SOAK_TASKS``, ``HORSIES_SOAK_MINUTES`` and
``HORSIES_SOAK_SEED`` (soak mode only); run it as
``HORSIES_SOAK=1 uv run pytest tests/reliability/test_rel_soak.py -s``.

What it proves, from the ledger and the tables (killed workers are recovered by the others'
reapers, crashed tasks are retried when they ask for it, workflows are reconciled):

- no task lost (every accepted send ends terminal, a COMPLETED task really ran), none finished
  twice (ledger ends <= attempts);
- the only failure is ``WORKER_CRASHED``, and only for tasks without a crash retry (``rel.work``);
  tasks with ``auto_retry_for=["WORKER_CRASHED"]`` (``rel.retried``, and the async
  ``rel.async_retried``) all COMPLETED;
- a send that reported an error either wrote its whole batch (found afterwards, and it ran) or
  nothing; a workflow start interrupted by a cut is retried with the same id (idempotent start);
- every workflow ends: the retried ones COMPLETED with every node COMPLETED, the others COMPLETED
  or FAILED with ``WORKER_CRASHED``; no node is left non-terminal, none ran when SKIPPED.

It prints one line: tasks, statuses, workflows, kills, restarts, cuts, recovery times, lost,
duplicated.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from horsies.app import Horsies
from horsies.workflows.definition import WorkflowDefinition
from process_harness import wait_until

from tests.reliability.apps.wf_ledger_app import (
    LedgerChain,
    LedgerFan,
    LedgerNested,
    settled_nodes,
)
from tests.reliability.chaos import Chaos, ChaosPlan, ChaosReport
from tests.reliability.harness import StartWorker
from tests.reliability.ledger import LedgerReport, compare
from tests.reliability.workload import SOAK


@dataclass(frozen=True)
class SoakSize:
    """One run's size and fault rhythm."""

    tasks: int
    batch: int
    send_s: float
    """Sends (and workflow starts) are spread evenly over this long; faults happen meanwhile."""
    workflows: int
    workflow_size: int
    kill_every: tuple[float, float]
    cut_every: tuple[float, float]
    freeze_every: tuple[float, float]
    drain_s: float
    """Bound for everything to end once the sends and faults stop."""
    seed: int = 9

    @property
    def timeout_s(self) -> float:
        return 120 + self.send_s + self.drain_s


CI = SoakSize(
    tasks=2_000,
    batch=100,
    send_s=8.0,
    workflows=3,
    workflow_size=20,
    kill_every=(2.0, 4.0),
    cut_every=(0.5, 2.0),  # the first cut always comes before the first kill
    freeze_every=(2.0, 3.0),
    drain_s=90.0,
)


def _soak_size() -> SoakSize:
    minutes = float(os.environ.get("HORSIES_SOAK_MINUTES", "14"))
    return SoakSize(
        tasks=int(os.environ.get("HORSIES_SOAK_TASKS", "100000")),
        batch=500,
        send_s=minutes * 60,
        workflows=max(6, int(minutes * 6)),
        workflow_size=50,
        kill_every=(20.0, 40.0),
        cut_every=(8.0, 20.0),
        freeze_every=(25.0, 50.0),
        drain_s=600.0,
        seed=int(os.environ.get("HORSIES_SOAK_SEED", "9")),
    )


SIZE = _soak_size() if SOAK else CI
PROCESSES = ("--processes", "2")
TASKS = ("rel.work", "rel.retried", "rel.async_retried")
"""Sent in turn: a crash fails the first (WORKER_CRASHED) and is retried for the others, a def
task and an async def task that runs beside others in its child."""
RETRIED = ("rel.retried", "rel.async_retried")
SECONDS = (0.0, 0.01, 0.0, 0.03)
"""Task durations, by batch: short, but long enough that kills interrupt running tasks."""
DEFINITIONS: tuple[type[WorkflowDefinition[Any]], ...] = (LedgerChain, LedgerFan, LedgerNested)
START_ATTEMPTS = 5

pytestmark = pytest.mark.timeout(SIZE.timeout_s)


@dataclass
class Sent:
    """What the producer side did."""

    ids: dict[str, str] = field(default_factory=dict[str, str])
    """Ledger key -> task id of every accepted send."""
    failed_batches: list[list[str]] = field(default_factory=list[list[str]])
    """Keys of batches whose send reported an error."""
    workflows: dict[str, bool] = field(default_factory=dict[str, bool])
    """Workflow id -> whether its nodes are retried after a crash."""
    start_errors: Counter[str] = field(default_factory=Counter[str])
    """Exception type -> how many workflow starts raised it (then retried with the same id)."""

    def send_batch(self, app: Horsies, run: str, number: int, size: int) -> None:
        name = TASKS[number % len(TASKS)]
        keys = [f"{run}:b{number}:{i}" for i in range(size)]
        seconds = SECONDS[number % len(SECONDS)]
        handles = app.tasks[name].send_many([(key, seconds) for key in keys])
        if any(h.task_id.startswith("<") for h in handles):
            self.failed_batches.append(keys)
        else:
            self.ids.update({key: h.task_id for key, h in zip(keys, handles, strict=True)})

    def start_workflow(self, app: Horsies, run: str, number: int) -> None:
        definition = DEFINITIONS[number % len(DEFINITIONS)]
        retried = number % 2 == 0
        spec = definition.build_with(
            app, tag=f"{run}:w{number}", size=SIZE.workflow_size, retried=retried
        )
        workflow_id = str(uuid.uuid4())
        for attempt in range(START_ATTEMPTS):
            try:
                spec.start(workflow_id=workflow_id)  # idempotent: same id, started once
                break
            except Exception as exc:  # a cut connection: try again with the same id
                self.start_errors[type(exc).__name__] += 1
                if attempt == START_ATTEMPTS - 1:
                    raise
        self.workflows[workflow_id] = retried

    def resolve_failed_batches(self, conninfo: str) -> tuple[int, int]:
        """Look the keys of failed sends up in the task table: a batch is either wholly stored
        (its tasks join ``ids``: they must run) or absent. Returns (stored, absent) batches."""
        stored = absent = 0
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for keys in self.failed_batches:
                rows = conn.execute(
                    "SELECT args::jsonb ->> 0, id FROM horsies_tasks"
                    " WHERE args::jsonb ->> 0 = ANY(%s)",
                    (keys,),
                ).fetchall()
                assert len(rows) in (0, len(keys)), f"a failed batch is half stored: {len(rows)}"
                if rows:
                    stored += 1
                    self.ids.update((str(key), str(task_id)) for key, task_id in rows)
                else:
                    absent += 1
        return stored, absent


def _produce(app: Horsies, sent: Sent, run: str) -> None:
    """Send SIZE.tasks tasks in batches and SIZE.workflows workflows, evenly over SIZE.send_s."""
    batches = -(-SIZE.tasks // SIZE.batch)
    steps = batches + SIZE.workflows
    every = max(1, batches // max(1, SIZE.workflows))
    began = time.monotonic()
    step = workflows = 0
    for number in range(batches):
        size = min(SIZE.batch, SIZE.tasks - number * SIZE.batch)
        sent.send_batch(app, run, number, size)
        step += 1
        if number % every == every - 1 and workflows < SIZE.workflows:
            sent.start_workflow(app, run, workflows)
            workflows += 1
            step += 1
        # Pacing, not synchronisation: spread the load over the fault window.
        time.sleep(max(0.0, began + SIZE.send_s * step / steps - time.monotonic()))
    while workflows < SIZE.workflows:
        sent.start_workflow(app, run, workflows)
        workflows += 1


def _wait_drained(conninfo: str, sent: Sent) -> None:
    """Every accepted task and every workflow terminal (bounded by SIZE.drain_s)."""
    task_ids = list(sent.ids.values())
    workflow_ids = list(sent.workflows)

    def drained() -> bool:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM horsies_tasks WHERE id = ANY(%s)"
                "        AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED')),"
                "       (SELECT count(*) FROM horsies_workflows WHERE id = ANY(%s)"
                "        AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED'))",
                (task_ids, workflow_ids),
            ).fetchone()
        return row is not None and row[0] == 0 and row[1] == 0

    try:
        wait_until(drained, SIZE.drain_s, "every task and workflow to end", interval=0.5)
    except AssertionError:
        print(compare(conninfo, sent.ids).summary())
        raise


def _workflow_outcomes(conninfo: str, sent: Sent) -> tuple[Counter[str], dict[str, str]]:
    """Workflow status counts, and ``key -> task_id`` of every task node (checked with the tasks).

    Asserts: every node settled; retried workflows COMPLETED (so every node COMPLETED); the
    others COMPLETED, or FAILED with a WORKER_CRASHED error (SUBWORKFLOW_FAILED for a nested one
    whose child failed that way), and only WORKER_CRASHED failed task nodes."""
    nodes, node_ids = settled_nodes(conninfo, list(sent.workflows))
    statuses: Counter[str] = Counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, error::jsonb ->> 'error_code' FROM horsies_workflows"
            " WHERE id = ANY(%s)",
            (list(sent.workflows),),
        ).fetchall()
    assert len(rows) == len(sent.workflows)
    for workflow_id, status, code in rows:
        statuses[status] += 1
        outcome = (workflow_id, status, code)
        if sent.workflows[workflow_id]:
            assert status == "COMPLETED", outcome
        elif status != "COMPLETED":
            assert status == "FAILED", outcome
            assert code in ("WORKER_CRASHED", "SUBWORKFLOW_FAILED"), outcome
    failed_codes = {n.error_code for n in nodes if n.status == "FAILED" and n.key is not None}
    assert failed_codes <= {"WORKER_CRASHED"}, failed_codes
    return statuses, node_ids


def _check_tasks(conninfo: str, report: LedgerReport, ids: dict[str, str]) -> None:
    """Nothing lost or finished twice; the only failure is WORKER_CRASHED, never for a task that
    is retried after a crash."""
    report.assert_nothing_lost_or_duplicated()
    assert set(report.statuses) <= {"COMPLETED", "FAILED"}, report.summary()
    assert set(report.error_codes) <= {"WORKER_CRASHED"}, report.summary()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM horsies_tasks"
            " WHERE id = ANY(%s) AND task_name = ANY(%s) GROUP BY status",
            (list(ids.values()), list(RETRIED)),
        ).fetchall()
    assert {status for status, _ in rows} == {"COMPLETED"}, rows


def test_soak_tasks_and_workflows_survive_random_kills_and_cuts(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    """Tasks and workflows under random worker kills and connection cuts: nothing lost, nothing
    finished twice, only WORKER_CRASHED failures and only where no crash retry applies, every
    workflow at its documented terminal state."""
    app = make_producer()
    workers = [start_worker(*PROCESSES, ready=False) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    run = uuid.uuid4().hex[:8]
    sent = Sent()
    began = time.monotonic()
    chaos = Chaos(
        ledger,
        workers,
        lambda: start_worker(*PROCESSES, ready=False),
        ChaosPlan(
            seed=SIZE.seed,
            kill_every=SIZE.kill_every,
            cut_every=SIZE.cut_every,
            freeze_every=SIZE.freeze_every,
        ),
    )
    with chaos:
        _produce(app, sent, run)
    faults: ChaosReport = chaos.report
    assert faults.kills >= 1, faults.summary()
    assert faults.cuts >= 1, faults.summary()
    assert faults.freezes >= 1, faults.summary()
    stored, absent = sent.resolve_failed_batches(ledger)
    _wait_drained(ledger, sent)
    elapsed = time.monotonic() - began

    workflow_statuses, node_ids = _workflow_outcomes(ledger, sent)
    ids = sent.ids | node_ids
    report = compare(ledger, ids)
    _check_tasks(ledger, report, ids)

    print(
        f"\n[scenario 9 / {'soak' if SOAK else 'short'}] {elapsed:.0f}s tasks={report.sent} "
        f"(sent={len(sent.ids)} + nodes={len(node_ids)}) ran={sum(report.ends.values())} "
        f"statuses={dict(report.statuses)} codes={dict(report.error_codes)} "
        f"workflows={dict(workflow_statuses)} workers_alive={len(chaos.workers)} "
        f"{faults.summary()} send_errors={len(sent.failed_batches)} batches "
        f"(stored={stored} absent={absent}) start_errors={dict(sent.start_errors)} "
        f"lost={report.lost} duplicated={report.duplicated} "
        f"failed_never_started={len(report.failed_never_started)}"
    )
