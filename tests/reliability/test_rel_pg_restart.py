"""Scenario 3: PostgreSQL restarted (fast shutdown, down for a moment, started again on the same
data directory and socket) in the middle of sends, claims, runs and result waits.

The module runs on its own restartable server (``tests.reliability.server``), never on the
session's shared one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.harness import StartWorker
from tests.reliability.server import RestartableServer, restartable_fixtures
from tests.reliability.traffic import (
    Producer,
    Waiters,
    assert_failed_sends_are_clear,
    assert_nothing_lost,
    first_finished_after,
    new_keys,
    status_counts,
    wait_all_terminal,
)

pytestmark = pytest.mark.timeout(150)

# Stale thresholds well above an outage: a task running through a restart is not a crashed one.
ENV = {"RELIABILITY_STALE_MS": "20000"}
DOWN_S = (0.5, 1.0, 2.5)
"""How long the server stays down at each restart of the load test."""


restartable_server, database_url, database_conninfo = restartable_fixtures()


def test_restart_under_load_loses_nothing(
    restartable_server: RestartableServer,
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
) -> None:
    """Two workers (hard-cap exchange path and prefetch claim path) drain a producer's steady
    stream while PostgreSQL is restarted three times (down 0.5, 1 and 2.5 s), each time with tasks
    running, tasks pending and ``get()`` waiters blocked.

    Proves: every send either returned a task id or a clear error that stored nothing; every task
    with an id completes exactly once (tasks running across a restart finish after reconnect, and
    their outcome is written then); workers reconnect by themselves; waiters blocked in ``get()``
    through a restart return the task's result.
    """
    server = restartable_server
    app = make_producer(ENV)
    broker = app.get_broker()
    work = app.tasks["rel.work"]
    workers = [
        start_worker("--processes", "2", env={**ENV, "RELIABILITY_HARD_CAP": "1"}, ready=False),
        start_worker("--processes", "2", env=ENV, ready=False),
    ]
    for worker in workers:
        worker.wait_ready()

    before = {key: work.send(key, 0.5) for key in new_keys(12, "before")}
    assert all(h.task_id != "<error>" for h in before.values())
    waiters = [Waiters(before, timeout_ms=90_000)]
    producer = Producer(work, durations=(0.01, 0.01, 0.3), interval_s=0.02).start()
    wait_until(lambda: producer.sent >= 50, 60, "producer under way")

    recoveries: list[float] = []
    outages: list[float] = []
    across_restart: list[tuple[Waiters, float]] = []
    for n, down_s in enumerate(DOWN_S):
        # Tasks that cannot finish before the outage, each with a get() blocked on it.
        across = {key: work.send(key, down_s + 0.5) for key in new_keys(4, f"across{n}")}
        group = Waiters(across, timeout_ms=90_000)
        waiters.append(group)
        group.wait_blocked(broker)
        wait_until(lambda: status_counts(ledger).get("RUNNING", 0) >= 2, 30, "tasks running")
        outages.append(server.restart(down_s=down_s))
        assert server.down_at is not None
        across_restart.append((group, server.down_at))
        recoveries.append(_recovery(ledger, producer))
    producer.stop()

    results = {key: r for group in waiters for key, r in group.join(90).items()}
    ids = {key: h.task_id for group in waiters for key, h in group.handles.items()} | producer.ok
    report = wait_all_terminal(ledger, ids, 90)
    print(
        f"\n[scenario 3] restart under load: tasks={report.sent} restarts={server.restarts}"
        f" outage_s={[round(o, 2) for o in outages]}"
        f" up_to_first_finish_s={[round(r, 2) for r in recoveries]}"
        f" sends_ok={len(producer.ok)} send_errors={len(producer.errors)}"
        f" longest_send_s={max(producer.call_s):.2f} get_waiters={len(results)}"
        f" lost={report.lost} duplicated={report.duplicated} statuses={dict(report.statuses)}"
    )
    for message in sorted(set(producer.errors.values()))[:3]:
        print(f"  send error: {message}")
    assert_nothing_lost(report)
    assert_failed_sends_are_clear(ledger, producer.errors)
    assert {key: r.ok_value if r.is_ok() else r for key, r in results.items()} == {
        key: key for key in results
    }
    for group, down_at in across_restart:
        assert min(group.returned_at.values()) > down_at, "a waiter returned before the restart"


def _recovery(ledger: str, producer: Producer) -> float:
    """Right after the server is back: seconds until the first task finished, once sends flow
    again."""
    up_wall, sent_at_up = time.time(), producer.sent
    recovery = wait_until(
        lambda: first_finished_after(ledger, up_wall), 60, "a task finished after restart"
    )
    wait_until(lambda: producer.sent > sent_at_up + 50, 60, "sends succeed again")
    return recovery


def test_outage_longer_than_pool_timeout(
    restartable_server: RestartableServer,
    ledger: str,
    start_worker: StartWorker,
    make_producer: Callable[..., Horsies],
) -> None:
    """The database stays down longer than the producer's ``pool_timeout`` (1 s).

    Proves: ``send`` then returns, after about ``pool_timeout``, an ``"<error>"`` handle whose
    message says the database is unreachable and why (the driver's reason, not just a pool
    timeout), and stores nothing; ``get()`` with a deadline inside the outage returns
    ``BROKER_ERROR`` carrying that reason at its deadline (not ``pool_timeout`` later); a ``get()``
    blocked with a longer deadline returns the result once the server is back; the same producer
    sends again without being recreated; nothing sent before the outage is lost.
    """
    server = restartable_server
    app = make_producer({**ENV, "RELIABILITY_POOL_TIMEOUT_S": "1"})
    broker = app.get_broker()
    work = app.tasks["rel.work"]
    before = {key: work.send(key, 0.0) for key in new_keys(6, "before")}
    patient = Waiters(before, timeout_ms=60_000)
    patient.wait_blocked(broker)

    server.stop()
    try:
        key = new_keys(1, "down")[0]
        t0 = time.monotonic()
        failed = work.send(key, 0.0)
        send_s = time.monotonic() - t0
        impatient = next(iter(before.values()))
        t0 = time.monotonic()
        short = broker.get_result(impatient.task_id, timeout_ms=1_500)
        get_s = time.monotonic() - t0
    finally:
        server.start()
    assert failed.task_id == "<error>"
    message = failed.get().unwrap_err().message or ""
    assert "database unreachable" in message, message
    assert "No such file or directory" in message or "refused" in message, message
    assert send_s < 10, send_s
    error = short.unwrap_err()
    assert error.error_code == "BROKER_ERROR", error
    assert "database unreachable" in str(error.exception), error.exception
    assert get_s < 5, get_s

    start_worker("--processes", "2", env=ENV)
    after = {k: work.send(k, 0.0) for k in new_keys(6, "after")}
    assert all(h.task_id != "<error>" for h in after.values())
    results = patient.join(60)
    report = wait_all_terminal(ledger, {k: h.task_id for k, h in (before | after).items()}, 60)
    print(
        f"\n[scenario 3] outage > pool_timeout: tasks={report.sent} send_error_after_s={send_s:.2f}"
        f" get_error_after_s={get_s:.2f} waiters_ok={sum(r.is_ok() for r in results.values())}"
        f" lost={report.lost} duplicated={report.duplicated}\n  send error: {message}"
    )
    assert_nothing_lost(report)
    assert_failed_sends_are_clear(ledger, {key: message})
    assert all(r.is_ok() for r in results.values()), results
