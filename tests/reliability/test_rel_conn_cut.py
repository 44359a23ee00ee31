"""Scenario 4: connections cut (``pg_terminate_backend``) under the workers, their listeners, the
producer and the ``get()`` waiters, while tasks flow.

Runs on the session's shared server: ``faults.terminate_backends`` only cuts backends of this
module's own database.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from horsies.app import Horsies
from process_harness import wait_until

from tests.reliability.faults import terminate_backends
from tests.reliability.harness import StartWorker
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

# Stale thresholds above the cut storm: a task whose heartbeats were cut is not a crashed one.
ENV = {"RELIABILITY_STALE_MS": "20000"}
LISTENER_CUTS = 3
STORM_S = 3.0
"""How long every connection but ours is cut again and again."""
STORM_INTERVAL_S = 0.15


def test_connection_cuts_lose_nothing(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    """Two workers (hard-cap exchange path and prefetch claim path) drain a producer's stream;
    first only the LISTEN connections are cut, then, for a few seconds, every connection of the
    database except the test's own (workers' pools and listeners, task children, the producer's
    pool and listener) again and again.

    Proves: every send either returned a task id or a clear error that stored nothing; nothing is
    lost and no task finishes twice (outcomes whose write was cut are written again, once); the
    listeners re-LISTEN and waiters whose notification was lost re-read and return the result;
    workers keep draining after the storm.
    """
    app = make_producer(ENV)
    broker = app.get_broker()
    work = app.tasks["rel.work"]
    workers = [
        start_worker("--processes", "2", env={**ENV, "RELIABILITY_HARD_CAP": "1"}, ready=False),
        start_worker("--processes", "2", env=ENV, ready=False),
    ]
    for worker in workers:
        worker.wait_ready()
    producer = Producer(work, durations=(0.01, 0.01, 0.2), interval_s=0.02).start()
    waiters: list[Waiters] = []

    # Listener cuts: each with get() waiters blocked on tasks that finish around the cut.
    listener_cuts = 0
    for n in range(LISTENER_CUTS):
        group = Waiters(
            {key: work.send(key, 0.3) for key in new_keys(4, f"listen{n}")}, timeout_ms=60_000
        )
        waiters.append(group)
        group.wait_blocked(broker)
        listener_cuts += terminate_backends(ledger, application_name="horsies-listener")
        group.join(60)

    # The storm: everything but our own connection, again and again.
    group = Waiters({key: work.send(key, 0.5) for key in new_keys(8, "storm")}, timeout_ms=90_000)
    waiters.append(group)
    group.wait_blocked(broker)
    wait_until(lambda: status_counts(ledger).get("RUNNING", 0) >= 2, 30, "tasks running")
    rounds = cut = 0
    storm_end = time.monotonic() + STORM_S
    while time.monotonic() < storm_end:
        cut += terminate_backends(ledger)
        rounds += 1
        time.sleep(STORM_INTERVAL_S)  # the fault's rhythm, not a synchronisation
    calm_wall, sent_at_calm = time.time(), producer.sent
    recovery = wait_until(
        lambda: first_finished_after(ledger, calm_wall), 60, "a task finished after the storm"
    )
    wait_until(lambda: producer.sent > sent_at_calm + 30, 60, "sends flow after the storm")
    producer.stop()

    results = {key: r for g in waiters for key, r in g.join(90).items()}
    ids = {key: h.task_id for g in waiters for key, h in g.handles.items()} | producer.ok
    report = wait_all_terminal(ledger, ids, 90)
    print(
        f"\n[scenario 4] connection cuts: tasks={report.sent} listener_cuts={listener_cuts}"
        f" storm_rounds={rounds} backends_cut={cut}"
        f" calm_to_first_finish_s={recovery:.2f} sends_ok={len(producer.ok)}"
        f" send_errors={len(producer.errors)} get_waiters={len(results)}"
        f" lost={report.lost} duplicated={report.duplicated} statuses={dict(report.statuses)}"
    )
    for message in sorted(set(producer.errors.values()))[:3]:
        print(f"  send error: {message}")
    assert listener_cuts >= 2 * LISTENER_CUTS  # two workers' listeners at least, each time
    assert_nothing_lost(report)
    assert_failed_sends_are_clear(ledger, producer.errors)
    assert {key: r.ok_value if r.is_ok() else r for key, r in results.items()} == {
        key: key for key in results
    }
    assert all(worker.alive for worker in workers)
