"""What a clean database costs a test, with ``horsies.testing``: a fresh copy of the migrated
template (``horsies_fresh_database_url``) against emptying the process's database
(``horsies_database_url``), and emptying by TRUNCATE for comparison.

    uv run python bench/testing_databases.py        # about 15 seconds; -n to change the rounds

Each figure is the median of ``-n`` rounds, in milliseconds, on a throw-away embedded server (or
the server ``HORSIES_TEST_DATABASE_URL`` names). A round of the copy creates the database, opens
the first connection to it and drops it again; a round of emptying first lets a test's worth of
rows in (five tasks and a two-node workflow, not timed), then empties the database.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import psycopg
from horsies import AppConfig, Horsies, PostgresConfig, TaskError, TaskNode, TaskResult
from horsies.testing import ThrowawayServer, throwaway_server, use_database

_TRUNCATE_ALL = (
    "TRUNCATE horsies_workflow_tasks, horsies_workflows, horsies_tasks, horsies_heartbeats, "
    "horsies_worker_states, horsies_schedule_state"
)


def _median_ms(rounds: int, prepare: Callable[[], None], timed: Callable[[], None]) -> float:
    samples: list[float] = []
    for _ in range(rounds):
        prepare()
        started = time.perf_counter()
        timed()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _fresh_copy(server: ThrowawayServer) -> None:
    url = server.create_database()
    with psycopg.connect(PostgresConfig(database_url=url).conninfo) as conn:
        conn.execute("SELECT 1")
    server.drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description="What a clean database costs a test.")
    parser.add_argument("-n", "--rounds", type=int, default=50, help="rounds of each figure")
    rounds = parser.parse_args().rounds

    app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://unused@/unused")))

    @app.task("bench.add")
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    first = TaskNode(fn=add, args=(1, 2))
    second = TaskNode(fn=add, waits_for=[first], args=(3, 4))
    spec = app.workflow("bench.pair", [first, second])

    with throwaway_server() as server, server.database() as url, use_database(app, url):
        conninfo = PostgresConfig(database_url=url).conninfo

        def a_tests_rows() -> None:
            for i in range(5):
                add.send(i, i)
            spec.start()

        def truncate() -> None:
            with psycopg.connect(conninfo) as conn:
                conn.execute(_TRUNCATE_ALL)

        copy_ms = _median_ms(rounds, lambda: None, lambda: _fresh_copy(server))
        empty_ms = _median_ms(rounds, a_tests_rows, lambda: server.empty_database(url))
        truncate_ms = _median_ms(rounds, a_tests_rows, truncate)
    print(f"fresh copy of the template (create, connect, drop): {copy_ms:7.1f} ms")
    print(f"emptying the database (DELETE, the default):       {empty_ms:7.1f} ms")
    print(f"emptying by TRUNCATE instead:                       {truncate_ms:7.1f} ms")


if __name__ == "__main__":
    main()
