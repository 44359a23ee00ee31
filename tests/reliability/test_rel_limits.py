"""Scenario: a per-key concurrency limit (``Limit("rel-per-key", concurrency=2, on=["tenant"])``)
held by three real workers while whole workers are SIGKILLed (and replaced) and PostgreSQL is
restarted, with tasks without a limit on the same queue.

Load: ``rel.limited`` / ``rel.async_limited`` (both retried after a crash) over eight tenants, two
of them hot (a backlog that keeps them at their limit, so the limit binds), and ``rel.retried``
tasks without a limit. Workers: ``--processes 2 --async-concurrency 3``, two in hard-cap mode and
one in prefetch mode (limited tasks are never prefetched: both start them through
``horsies_claim_and_start_limited``). Each of three rounds (nine with ``HORSIES_SOAK=1``) waits
until a worker (of the round's mode) runs two limited tasks or more, kills its whole process group,
restarts PostgreSQL at once (fast shutdown, down 0.5 or 1 s: the dead worker's rows stay RUNNING
until a reaper takes them back, seconds later), starts a replacement, waits (bounded) until the dead
worker's rows are all taken back, and tops the backlog up again.

What the limit promises, and so what is asserted:

- **The contract, sampled**: a thread polls, in one statement per sample (one snapshot), the
  per-tenant count of rows in flight (CLAIMED or RUNNING) every few ms, reconnecting after each
  restart. No sample may show more than 2 for any tenant. A killed worker's rows stay RUNNING until
  a reaper retries them, and they go on counting against their tenant: the tenant is held back
  meanwhile (conservative, by design), and a retried task only starts once the count says there
  is room, so it never runs beside more than one other task of its tenant *as the database sees
  it*. The sampler counts how often a tenant's count included a dead worker's rows, to show that
  case happened.
- **Exactly, afterwards, from the ledger**: every ledger run of a task lies inside the time its
  row held a slot. A run starts after the claim that counted its row in (under the limit's lock,
  which no other claim of the limit gets before that claim has committed) and records its end
  before its outcome is written (which frees the slot). A run cut short by a kill ran no later
  than the kill (SIGKILL to the whole group: no child executes anything after ``killpg``
  returns), while its row held the slot until a reaper retried it, seconds later; so such a run
  is counted from its start to the kill. Hence the largest number of runs of one tenant executing
  at one instant can never exceed the limit either: it is computed exactly and asserted <= 2, and
  so is the most runs of its tenant executing beside a retried run, itself included. (The rows' own
  ``started_at`` / ``completed_at`` are not used for this: ``completed_at`` is the finishing
  transaction's ``now()``, taken before its commit, while a concurrent claim's ``started_at`` is
  taken after the limit's lock but before it counts, so a claim that rightly saw a slot freed may
  carry a ``started_at`` a few ms before the freeing row's ``completed_at``.) Both rely on the stale
  thresholds (5 s) staying above the outages (<= 1 s down): a longer outage makes live runs look
  crashed, and a retried copy may then run beside the original (docs/reliability.md, "Limits worth
  knowing"); the test fails then anyway, since only tasks running at a kill may be retried.
- **Nothing lost or run twice** (the ledger checks of the other scenarios): every task COMPLETED;
  none ended more often than it had attempts; a task running at a kill was retried; every other
  task started and ended exactly once and was never retried; CLAIMED rows of a killed prefetch
  worker were never started by it; every ledger run that never ended belongs to a killed worker.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.apps.limited_tasks import PER_TENANT
from tests.reliability.harness import LedgerWorker, StartWorker
from tests.reliability.ledger import LedgerRow, compare, ledger_rows
from tests.reliability.server import RestartableServer, restartable_fixtures
from tests.reliability.workload import (
    SOAK,
    Interval,
    held_by,
    max_overlap,
    send_load,
    stop_workers,
    task_states,
    wait_released,
    wait_terminal,
    worker_id,
)

pytestmark = pytest.mark.timeout(300 if SOAK else 150)

STALE_MS = 5_000
"""Stale thresholds: above the outages (a task running through a restart is not a crashed one),
short enough that a kill is recovered within a few seconds."""
ENV = {"RELIABILITY_LIMITS": "1", "RELIABILITY_STALE_MS": str(STALE_MS)}
ARGS = ("--processes", "2", "--async-concurrency", "3")
MODES = ("hard", "soft", "hard")
"""One worker per entry; a replacement takes its victim's mode."""
LIMIT = PER_TENANT.concurrency or 0
LIMIT_NAME = PER_TENANT.name
HOT = ("t0", "t1")
COLD = ("t2", "t3", "t4", "t5", "t6", "t7")
BACKLOG = {"hot": 28, "cold": 3}
"""The PENDING backlog each top-up brings a tenant back to (hot tenants stay at their limit)."""
FREE_PER_TOP_UP = 24
"""Tasks without a limit sent at each top-up."""
ROUNDS = [("hard", 0.5), ("soft", 1.0), ("hard", 0.5)] * (3 if SOAK else 1)
"""One round per entry: a kill of a worker of that mode, then a restart with the server down
that long (seconds)."""
DOWN_S = [down_s for _, down_s in ROUNDS]
RECOVERY_SLACK_S = 10.0
"""Slack on top of stale threshold + check interval + outage: a shared 2-core machine is noisy."""
RECOVERY_BOUND_S = (STALE_MS + 1_000) / 1000 + max(DOWN_S) + RECOVERY_SLACK_S
"""Kill -> the dead worker's rows all taken back, with the restart made in between."""
SAMPLE_S = 0.004


def _mode_env(mode: str) -> dict[str, str]:
    return {**ENV, "RELIABILITY_HARD_CAP": "1"} if mode == "hard" else dict(ENV)


restartable_server, database_url, database_conninfo = restartable_fixtures()


@dataclass
class KeySampler:
    """A thread that polls the limited rows per tenant every few ms, in one statement per sample,
    and rides out restarts (reconnecting, bounded).

    ``peak_in_flight[tenant]``: the most rows of the tenant seen CLAIMED or RUNNING at once (what
    the limit bounds); ``peak_running``: RUNNING only. ``held_back``: samples in which a tenant was
    at the limit with a backlog (the limit was binding). ``dead_held``: samples in which a
    tenant's count included rows of a killed worker (the ids in ``dead``, set by the test).
    """

    conninfo: str
    samples: int = 0
    reconnects: int = 0
    held_back: int = 0
    dead_held: int = 0
    dead_at_limit: int = 0
    """Samples in which a tenant at the limit with a backlog counted a dead worker's rows."""
    peak_running: Counter[str] = field(default_factory=Counter[str])
    peak_in_flight: Counter[str] = field(default_factory=Counter[str])
    dead: frozenset[str] = frozenset()
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    _QUERY = (
        "SELECT limit_key, status, coalesce(claimed_by_worker_id = ANY(%s), false), count(*)"
        " FROM horsies_tasks WHERE limit_name = %s"
        " AND status IN ('PENDING', 'CLAIMED', 'RUNNING') GROUP BY 1, 2, 3"
    )
    _DOWN_LIMIT_S = 60.0

    def __enter__(self) -> KeySampler:
        self._thread = threading.Thread(target=self._run, name="key-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._error is not None:
            raise AssertionError(f"sampler failed: {self._error!r}") from self._error

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        down_since: float | None = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                        if down_since is not None:
                            self.reconnects += 1
                    rows = conn.execute(self._QUERY, (list(self.dead), LIMIT_NAME)).fetchall()
                except psycopg.OperationalError:
                    # The server is restarting: sample again once it is back (bounded).
                    if conn is not None:
                        conn.close()
                    conn = None
                    down_since = down_since or time.monotonic()
                    if time.monotonic() - down_since > self._DOWN_LIMIT_S:
                        raise
                    self._stop.wait(0.05)  # retry pacing while the server is down
                    continue
                down_since = None
                self._record(rows)
                self._stop.wait(SAMPLE_S)
        except BaseException as exc:  # reported by __exit__
            self._error = exc
        finally:
            if conn is not None:
                conn.close()

    def _record(self, rows: Sequence[tuple[Any, ...]]) -> None:
        in_flight: Counter[str] = Counter()
        running: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        for tenant, status, of_dead, count in rows:
            if status == "PENDING":
                pending[tenant] += count
                continue
            in_flight[tenant] += count
            if status == "RUNNING":
                running[tenant] += count
            if of_dead:
                dead[tenant] += count
        for tenant, count in in_flight.items():
            self.peak_in_flight[tenant] = max(self.peak_in_flight[tenant], count)
            self.peak_running[tenant] = max(self.peak_running[tenant], running[tenant])
        at_limit = {t for t, n in in_flight.items() if n >= LIMIT and pending[t]}
        self.held_back += bool(at_limit)
        self.dead_held += bool(dead)
        self.dead_at_limit += any(dead[t] for t in at_limit)
        self.samples += 1


@dataclass
class Load:
    """What the test sent: ledger key -> task id, and each limited key's tenant."""

    ids: dict[str, str] = field(default_factory=dict[str, str])
    tenant_of: dict[str, str] = field(default_factory=dict[str, str])
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    top_ups: int = 0

    def top_up(self, app: Horsies, conninfo: str) -> None:
        """Bring each tenant's PENDING backlog back to ``BACKLOG`` and send a few tasks without a
        limit (a third of the limited ones are ``async def``)."""
        with psycopg.connect(conninfo, autocommit=True) as conn:
            pending = dict(
                conn.execute(
                    "SELECT limit_key, count(*) FROM horsies_tasks"
                    " WHERE limit_name = %s AND status = 'PENDING' GROUP BY 1",
                    (LIMIT_NAME,),
                ).fetchall()
            )
        n = self.top_ups
        self.top_ups += 1
        calls: dict[str, list[tuple[str, float, str]]] = defaultdict(list)
        for tenant in HOT + COLD:
            want = BACKLOG["hot" if tenant in HOT else "cold"] - pending.get(tenant, 0)
            for i in range(max(0, want)):
                key = f"{tenant}-{n}-{i}"
                name = "rel.async_limited" if self.rng.random() < 1 / 3 else "rel.limited"
                calls[name].append((key, self.rng.uniform(0.2, 0.6), tenant))
                self.tenant_of[key] = tenant
        for name, group in calls.items():
            handles = app.tasks[name].send_many(group)
            assert all(h.sent for h in handles), handles[0].get(timeout_ms=0)
            self.ids |= {call[0]: h.task_id for call, h in zip(group, handles, strict=True)}
        free = [(f"free-{n}-{i}", self.rng.uniform(0.01, 0.1)) for i in range(FREE_PER_TOP_UP)]
        self.ids |= send_load(app, "rel.retried", free)


@dataclass
class Kill:
    """One kill: the victim, when it died, what it held then, and how long recovery took."""

    pid: int
    worker: str
    at: datetime
    claimed: list[str]
    running: list[str]
    recovery_s: float = 0.0


def _limited_running(conninfo: str) -> Counter[str]:
    """RUNNING limited rows per worker id."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT claimed_by_worker_id, count(*) FROM horsies_tasks"
            " WHERE limit_name = %s AND status = 'RUNNING' GROUP BY 1",
            (LIMIT_NAME,),
        ).fetchall()
    return Counter({worker: n for worker, n in rows if worker is not None})


def _kill_busiest(
    conninfo: str, live: list[tuple[LedgerWorker, str, str]], mode: str
) -> tuple[LedgerWorker, Kill]:
    """Wait (bounded) until a live worker of ``mode`` runs two limited tasks or more, SIGKILL the
    whole group of the one running the most; returns it and what it held at the kill."""

    def busiest() -> tuple[int] | None:
        running = _limited_running(conninfo)
        candidates = [i for i in range(len(live)) if live[i][2] == mode]
        best = max(candidates, key=lambda i: running[live[i][1]])
        return (best,) if running[live[best][1]] >= 2 else None

    (index,) = wait_until(busiest, 60, "a worker running two limited tasks", interval=0.02)
    victim, victim_id, _ = live.pop(index)
    victim.kill_group()
    at = datetime.now(UTC)  # no child of the group executes anything after this
    held = held_by(conninfo, victim_id)
    return victim, Kill(victim.pid, victim_id, at, held["CLAIMED"], held["RUNNING"])


@dataclass
class Executions:
    """Every run the ledger saw, as an interval (see :func:`_executions`)."""

    runs: list[Interval]
    cut_short: int
    """Runs that never ended, cut short by their worker's kill."""
    unexplained: list[LedgerRow]
    """Starts without an end whose worker was never killed."""


def _executions(rows: Sequence[LedgerRow], kills: Sequence[Kill]) -> Executions:
    """A start paired with the end of the same key in the same child; a start without an end (its
    child was killed) lasts until its worker's kill."""
    killed_at = {kill.pid: kill.at for kill in kills}
    open_runs: dict[tuple[str, int], LedgerRow] = {}
    runs: list[Interval] = []
    cut: list[LedgerRow] = []
    for row in rows:
        slot = (row.key, row.child_pid)
        if row.phase == "start":
            if (earlier := open_runs.pop(slot, None)) is not None:  # a reused pid
                cut.append(earlier)
            open_runs[slot] = row
        elif (begin := open_runs.pop(slot, None)) is not None:
            runs.append(Interval(row.key, row.worker_pid, row.child_pid, begin.at, row.at))
    cut.extend(open_runs.values())
    unexplained = [row for row in cut if row.worker_pid not in killed_at]
    for row in cut:
        if row.worker_pid in killed_at:
            end = max(row.at, killed_at[row.worker_pid])
            runs.append(Interval(row.key, row.worker_pid, row.child_pid, row.at, end))
    return Executions(runs, len(cut) - len(unexplained), unexplained)


def _peak_beside(run: Interval, tenant_runs: Sequence[Interval]) -> int:
    """The most runs of the tenant executing at one instant while ``run`` executed (itself
    included)."""
    inside = [
        Interval(r.key, r.worker_pid, r.child_pid, max(r.start, run.start), min(r.end, run.end))
        for r in tenant_runs
        if r.start < run.end and run.start < r.end
    ]
    return max_overlap(inside)


def test_a_per_key_limit_holds_through_kills_and_restarts(
    restartable_server: RestartableServer,
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
) -> None:
    """Per-tenant in-flight never above 2 (sampled throughout, and exactly from the ledger
    afterwards) while workers are killed and PostgreSQL restarts; nothing lost or run twice."""
    server = restartable_server
    app = make_producer(ENV)
    workers = [start_worker(*ARGS, env=_mode_env(mode), ready=False) for mode in MODES]
    live = [(w, worker_id(w), mode) for w, mode in zip(workers, MODES, strict=True)]
    load = Load()
    kills: list[Kill] = []
    outages: list[float] = []
    began = time.monotonic()
    with KeySampler(ledger) as sampler:
        load.top_up(app, ledger)
        for mode, down_s in ROUNDS:
            victim, kill = _kill_busiest(ledger, live, mode)
            sampler.dead = sampler.dead | {kill.worker}
            outages.append(server.restart(down_s=down_s))
            replacement = start_worker(*ARGS, env=_mode_env(mode), ready=False)
            kill.recovery_s = wait_released(ledger, kill.worker, RECOVERY_BOUND_S)
            kills.append(kill)
            live.append((replacement, worker_id(replacement), mode))
            assert victim.proc.returncode is not None
            load.top_up(app, ledger)
        wait_terminal(ledger, load.ids, 120)
    elapsed = time.monotonic() - began
    stop_workers(worker for worker, _, _ in live)

    report = compare(ledger, load.ids)
    states = task_states(ledger, load.ids.values())
    key_of = {task_id: key for key, task_id in load.ids.items()}
    rows = ledger_rows(ledger)
    executions = _executions(rows, kills)
    by_tenant: dict[str, list[Interval]] = defaultdict(list)
    for run in executions.runs:
        if run.key in load.tenant_of:
            by_tenant[load.tenant_of[run.key]].append(run)
    ledger_peak = {tenant: max_overlap(r) for tenant, r in sorted(by_tenant.items())}
    running_keys = {key_of[t] for kill in kills for t in kill.running}
    retried_peak = max(
        (
            _peak_beside(run, by_tenant[load.tenant_of[run.key]])
            for run in executions.runs
            if run.key in load.tenant_of and states[load.ids[run.key]].retry_count
        ),
        default=0,
    )
    claimed_keys = {key_of[t] for kill in kills for t in kill.claimed}
    retried = Counter(
        "limited" if key in load.tenant_of else "free"
        for key, task_id in load.ids.items()
        if states[task_id].retry_count
    )
    print(
        f"\n[rel-limits] tasks={len(load.ids)} limited={len(load.tenant_of)} "
        f"free={len(load.ids) - len(load.tenant_of)} tenants={len(HOT + COLD)} "
        f"limit={LIMIT} workers={len(MODES)}x2 ({'/'.join(MODES)}) kills={len(kills)} "
        f"replacements={len(kills)} pg_restarts={server.restarts} "
        f"outage_s={[round(o, 2) for o in outages]} "
        f"recovery_s={[round(k.recovery_s, 2) for k in kills]} elapsed={elapsed:.1f}s "
        f"samples={sampler.samples} sampler_reconnects={sampler.reconnects} "
        f"peak_in_flight={dict(sorted(sampler.peak_in_flight.items()))} "
        f"peak_running_max={max(sampler.peak_running.values(), default=0)} "
        f"held_back_samples={sampler.held_back} dead_held_samples={sampler.dead_held} "
        f"dead_at_limit_samples={sampler.dead_at_limit} ledger_peak={ledger_peak} "
        f"retried_run_peak={retried_peak} "
        f"running_at_kill={len(running_keys)} claimed_at_kill={len(claimed_keys)} "
        f"retried={dict(retried)} cut_short={executions.cut_short} "
        f"lost={report.lost} duplicated={report.duplicated} statuses={dict(report.statuses)}"
    )

    # Nothing lost or run twice; every task completed.
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses == {"COMPLETED": len(load.ids)}, report.summary()
    unexplained = executions.unexplained
    assert not unexplained, f"runs that never ended, of a worker never killed: {unexplained[:5]}"
    # The limit: sampled (the contract) and exactly from the ledger's executions.
    assert sampler.samples > 500, "the sampler barely ran"
    assert max(sampler.peak_in_flight.values()) <= LIMIT, sampler.peak_in_flight
    assert max(ledger_peak.values()) <= LIMIT, ledger_peak
    assert retried_peak <= LIMIT, retried_peak  # a retried run beside at most LIMIT - 1 others
    # The scenario did what it is about: the limit bound, kills hit limited tasks that were then
    # retried, and a dead worker's rows held their tenants' slots until the reaper took them back.
    assert sampler.held_back > 0, "no tenant was ever held back by its limit"
    assert sampler.dead_held > 0, "no sample saw a dead worker's rows"
    assert retried["limited"] > 0, "no limited task was retried after a kill"
    assert max(ledger_peak[t] for t in HOT) == LIMIT, ledger_peak
    assert all(kill.recovery_s <= RECOVERY_BOUND_S for kill in kills)

    for kill in kills:
        for task_id in kill.claimed:
            # Never started by the killed worker: CLAIMED rows are not on any child yet.
            key = key_of[task_id]
            assert not [r for r in rows if r.key == key and r.worker_pid == kill.pid], key
        for task_id in kill.running:
            assert states[task_id].retry_count >= 1, (key_of[task_id], states[task_id])
    for key, task_id in load.ids.items():
        if key in running_keys:
            continue
        # Not running at a kill: started and ended exactly once, never retried (the outages stay
        # below the stale thresholds, so no live run looked crashed).
        assert states[task_id].retry_count == 0, (key, states[task_id])
        assert report.starts[key] == 1, (key, report.starts[key])
        assert report.ends[key] == 1, (key, report.ends[key])
