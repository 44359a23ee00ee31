"""Sends within the producers' own transactions while their connections are cut: four producer
threads each write an order row and send its task in one transaction, then commit or roll back at
random; meanwhile their connections are terminated again and again (``pg_terminate_backend``), so
sends, inserts and commits fail midway.

What it proves, from the orders table, the task table and the ledger:

- **all or nothing**: an order row exists exactly when its task does, whatever broke when;
- every transaction whose commit returned ran its task exactly once, no rolled-back or failed one
  left a task, and a commit whose connection died (its outcome unknown to the producer) left both
  or neither;
- lost 0, duplicated 0, and the worker drains on.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pytest
from horsies.app import Horsies

from tests.reliability.faults import terminate_backends
from tests.reliability.harness import StartWorker
from tests.reliability.ledger import compare
from tests.reliability.workload import SOAK, wait_terminal

pytestmark = pytest.mark.timeout(300 if SOAK else 150)

PRODUCERS = 4
RUN_S = 20.0 if SOAK else 5.0
PRODUCER_APP = "rel-within-producer"
"""The producers' application_name: the cuts hit their connections only."""


@dataclass
class Outcomes:
    """What the producers know of their transactions: ``key -> task id`` by how each ended."""

    committed: dict[str, str] = field(default_factory=dict[str, str])
    rolled_back: dict[str, str] = field(default_factory=dict[str, str])
    broken: dict[str, str] = field(default_factory=dict[str, str])
    """A statement or the commit failed (the connection was cut): the outcome is the database's."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, where: dict[str, str], key: str, task_id: str) -> None:
        with self.lock:
            where[key] = task_id


def _produce(app: Horsies, conninfo: str, worker_no: int, until: float, outcomes: Outcomes) -> None:
    rng = random.Random(worker_no)
    work = app.tasks["rel.work"]
    n = 0
    while time.monotonic() < until:
        n += 1
        key = f"p{worker_no}-{n}"
        task_id = ""
        try:
            with psycopg.connect(
                conninfo, application_name=PRODUCER_APP, connect_timeout=10
            ) as conn:
                conn.execute("INSERT INTO rel_orders (key) VALUES (%s)", (key,))
                handle = work.within(conn).send(key, 0.0)
                task_id = handle.task_id
                if task_id.startswith("<"):
                    # The insert failed (connection cut): the transaction is lost, roll back.
                    conn.rollback()
                    outcomes.add(outcomes.broken, key, "")
                    continue
                if rng.random() < 0.7:
                    conn.commit()
                    outcomes.add(outcomes.committed, key, task_id)
                else:
                    conn.rollback()
                    outcomes.add(outcomes.rolled_back, key, task_id)
        except psycopg.Error:
            outcomes.add(outcomes.broken, key, task_id)


def test_transactions_cut_midway_are_all_or_nothing(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS rel_orders (key text PRIMARY KEY)")
        conn.execute("TRUNCATE rel_orders")
    env = {"RELIABILITY_HARD_CAP": "1"}
    app = make_producer(env)
    start_worker("--processes", "2", env=env)
    outcomes = Outcomes()
    until = time.monotonic() + RUN_S
    threads = [
        threading.Thread(target=_produce, args=(app, ledger, i, until, outcomes), daemon=True)
        for i in range(PRODUCERS)
    ]
    for thread in threads:
        thread.start()
    cuts = 0
    chaos = random.Random(18)
    while any(thread.is_alive() for thread in threads):
        cuts += terminate_backends(ledger, application_name=PRODUCER_APP)
        time.sleep(chaos.uniform(0.05, 0.3))  # pacing of the cuts, not a synchronisation
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()

    with psycopg.connect(ledger, autocommit=True) as conn:
        orders = {row[0] for row in conn.execute("SELECT key FROM rel_orders")}
        stored = dict(
            conn.execute(
                "SELECT args::jsonb ->> 0, id FROM horsies_tasks WHERE task_name = 'rel.work'"
            ).fetchall()
        )
    print(
        f"\n[rel-within] cuts={cuts} committed={len(outcomes.committed)} "
        f"rolled_back={len(outcomes.rolled_back)} broken={len(outcomes.broken)} "
        f"orders={len(orders)} tasks={len(stored)}"
    )
    assert cuts > 0
    assert outcomes.broken, "the cuts never hit a transaction"
    assert outcomes.committed
    assert outcomes.rolled_back
    # All or nothing, whatever broke when.
    assert orders == set(stored), sorted(orders ^ set(stored))[:10]
    assert set(outcomes.committed) <= orders
    assert not set(outcomes.rolled_back) & orders
    for key, task_id in outcomes.committed.items():
        assert stored[key] == task_id
    # Every stored task runs once.
    wait_terminal(ledger, stored, 120)
    report = compare(ledger, stored)
    report.assert_nothing_lost_or_duplicated()
    assert set(report.statuses) == {"COMPLETED"}, report.summary()
