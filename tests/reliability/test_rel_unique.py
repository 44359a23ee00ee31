"""Unique tasks under load and cut connections: four producer threads send tasks on five unique
keys (scope ``active``) as fast as they can while a worker drains them, and every connection of the
database but the test's own is cut again and again.

What it proves, from the task table and the ledger:

- a key never has two live tasks: for each key, each task was created after the one before it had
  ended (the holder's release and the next insert are decided by the database);
- a send that answered with an existing task named a task of that very key;
- every created task ran exactly once: lost 0, duplicated 0.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
import pytest
from horsies import Unique
from horsies.app import Horsies

from tests.reliability.faults import terminate_backends
from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare
from tests.reliability.workload import SOAK, wait_terminal

pytestmark = pytest.mark.timeout(300 if SOAK else 150)

PRODUCERS = 4
KEYS = 5
RUN_S = 20.0 if SOAK else 5.0
# Stale thresholds above the cut storm: a task whose heartbeats were cut is not a crashed one.
ENV = {"RELIABILITY_HARD_CAP": "1", "RELIABILITY_STALE_MS": "20000"}


@dataclass
class Sends:
    created: dict[str, str] = field(default_factory=dict[str, str])
    """Ledger key -> id of the tasks the sends created."""
    answered: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])
    """(unique key, task id) of the sends answered with an existing task."""
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _produce(app: Horsies, number: int, until: float, sends: Sends) -> None:
    rng = random.Random(number)
    work = app.tasks["rel.work"]
    n = 0
    while time.monotonic() < until:
        n += 1
        unique_key = f"slot{rng.randrange(KEYS)}"
        ledger_key = f"{unique_key}-{number}-{n}"
        handle = work.with_options(unique=Unique(key=unique_key)).send(ledger_key, 0.01)
        with sends.lock:
            if not handle.sent:
                sends.failed += 1  # a cut connection that could not be ridden out: nothing stored
            elif handle.created:
                sends.created[ledger_key] = handle.task_id
            else:
                sends.answered.append((f"rel.work:{unique_key}", handle.task_id))


def test_a_unique_key_never_has_two_live_tasks(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    app = make_producer(ENV)
    start_worker("--processes", "2", env=ENV)
    sends = Sends()
    until = time.monotonic() + RUN_S
    threads = [
        threading.Thread(target=_produce, args=(app, i, until, sends), daemon=True)
        for i in range(PRODUCERS)
    ]
    for thread in threads:
        thread.start()
    cuts = 0
    chaos = random.Random(17)
    while any(thread.is_alive() for thread in threads):
        cuts += terminate_backends(ledger)
        time.sleep(chaos.uniform(0.2, 0.6))  # pacing of the cuts, not a synchronisation
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    wait_terminal(ledger, sends.created, 120)

    with psycopg.connect(ledger, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, args::jsonb ->> 0, created_at, started_at, completed_at FROM horsies_tasks"
            " WHERE task_name = 'rel.work' ORDER BY created_at"
        ).fetchall()
    print(
        f"\n[rel-unique] cuts={cuts} created={len(sends.created)} "
        f"answered={len(sends.answered)} failed_sends={sends.failed} rows={len(rows)}"
    )
    assert cuts > 0
    assert sends.answered, "no send ever met a held key"
    # Only the created tasks exist.
    assert {row[0] for row in rows} == set(sends.created.values())
    by_key: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    slot_of = {}
    for task_id, ledger_key, _, started_at, completed_at in rows:
        slot = f"rel.work:{ledger_key.split('-')[0]}"
        slot_of[task_id] = slot
        by_key[slot].append((started_at, completed_at))
    # created_at is the send transaction's start, which may come before the end of the task it
    # waited for (its release of the key blocks on the finishing row, then sees it ended); the
    # next task's start, by a transaction that began after it was stored, cannot.
    for slot, spans in by_key.items():
        for (_, ended), (started, _) in itertools.pairwise(spans):
            assert ended is not None
            assert started is not None
            assert started > ended, f"{slot}: a task was stored while another was live"
    for slot, task_id in sends.answered:
        assert slot_of[task_id] == slot
    report = compare(ledger, sends.created)
    report.assert_nothing_lost_or_duplicated()
    assert set(report.statuses) == {"COMPLETED"}, report.summary()
