"""Peer: Celery on Redis, run by ``bench/run.py`` from its own virtualenv (``bench/.venvs/celery``).

``python celery_peer.py measure SOCKET SIZES_JSON`` prints one JSON line with its figures. SOCKET
is the unix socket of the Redis server that run.py started for this peer
(``bench/redis_server.py``); it is Celery's broker and its result backend, the common setup.

Settings: Celery's defaults (``celery_peer_app.py``), the worker ``celery worker --pool prefork
--concurrency 2`` (two forked children, comparable to ``horsies worker --processes 2``), so
prefetch multiplier 4 and acks on receipt (``task_acks_late=False``); mingle, gossip and heartbeats
on. Every send goes with a result backend as a user's would, so it also subscribes to the task's
result channel (and unsubscribes when its AsyncResult is dropped). W1 is ``delay()`` one at a time;
W1b ``group(noop.s() ...).apply_async()``, Celery's one call for many tasks (one message each, on
one producer: not one round trip, not all or nothing); W1c 64 threads calling ``delay()`` (Celery
has no asyncio API); W2 counts results in the backend's database and takes finish times from their
``date_done`` (the worker's clock, set when the result is stored); W3 ``delay().get()``, which waits
on the result channel (pub/sub). No workflows are measured (W4).
"""
# pyright: reportMissingImports=false, reportUnknownMemberType=false, reportUnknownVariableType=false, reportUnknownArgumentType=false, reportAttributeAccessIssue=false

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

PEERS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PEERS_DIR.parent))

import celery  # noqa: E402
import harness  # noqa: E402
import redis  # noqa: E402
from celery import group  # noqa: E402

QUEUE_KEY = "celery"
"""The default queue's list in the broker's database (its bindings live in other keys)."""
RESULT_PATTERN = "celery-task-meta-*"
_CONCURRENCY = 64
_RESULT_TIMEOUT_S = 30
_READ_CHUNK = 1_000


def _finish_span(results: redis.Redis) -> tuple[float, float]:
    """First and last ``date_done`` of the stored results, as epochs; BenchError on a failure."""
    keys = results.keys(RESULT_PATTERN)
    done: list[float] = []
    for start in range(0, len(keys), _READ_CHUNK):
        for raw in results.mget(keys[start : start + _READ_CHUNK]):
            meta = json.loads(raw)
            if meta["status"] != "SUCCESS":
                raise harness.BenchError(f"a no-op ended {meta['status']}: {meta['traceback']}")
            done.append(datetime.fromisoformat(meta["date_done"]).timestamp())
    return min(done), max(done)


def finished_probe(results: redis.Redis, n: int) -> harness.FinishedProbe:
    """Results stored so far; the finish span is read (every result) only once all ``n`` are."""

    def probe() -> tuple[int, float | None, float | None]:
        count = int(results.dbsize())
        if count < n:
            return count, None, None
        first, last = _finish_span(results)
        return count, first, last

    return probe


def _persistence(server: redis.Redis) -> str:
    config = server.config_get("appendonly") | server.config_get("appendfsync")
    save = server.config_get("save")["save"]
    if config["appendonly"] == "no":
        return f"RDB snapshots (save {save}), no AOF: a send is in memory when it returns"
    return f"AOF appendfsync {config['appendfsync']}, RDB snapshots (save {save})"


def measure(sock: str, sizes: dict[str, int]) -> dict[str, Any]:
    import celery_peer_app

    noop: Any = celery_peer_app.noop  # a Task (the checker does not see celery's types)
    broker = redis.Redis(unix_socket_path=sock, db=0)
    results = redis.Redis(unix_socket_path=sock, db=1)
    figures: dict[str, float] = {}

    def reset() -> None:
        # Only the queue's list: flushing the broker's database would drop kombu's bindings,
        # which the producer does not declare again, and later messages would go nowhere.
        broker.delete(QUEUE_KEY)
        results.flushdb()

    def sends(count: int) -> None:
        for _ in range(count):
            noop.delay()

    # W1: one delay() at a time, no worker running.
    sends(20)
    figures["w1_rate"] = harness.timed_rate(sizes["sends"], lambda: sends(sizes["sends"]))
    reset()

    # W1b: one group of the whole list; median of three.
    n = sizes["bulk"]
    rates: list[float] = []
    for _ in range(3):
        rates.append(harness.timed_rate(n, lambda: group(noop.s() for _ in range(n)).apply_async()))
        if broker.llen(QUEUE_KEY) != n:
            raise harness.BenchError(f"the group queued {broker.llen(QUEUE_KEY)} of {n}")
        reset()
    figures["w1b_rate"] = statistics.median(rates)

    # W1c: 64 threads of one process calling delay().
    with ThreadPoolExecutor(_CONCURRENCY) as pool:

        def concurrent(count: int) -> None:
            ids = list(pool.map(lambda _: noop.delay().id, range(count), timeout=300))
            if len(ids) != count:
                raise harness.BenchError(f"{len(ids)} of {count} concurrent sends returned")

        concurrent(200)
        n = sizes["concurrent"]
        figures["w1c_rate"] = harness.timed_rate(n, lambda: concurrent(n))
    reset()

    # W2: N queued, then the worker starts; W3 on the same worker once it is idle.
    n = sizes["drain"]
    sends(n)
    if broker.llen(QUEUE_KEY) != n:
        raise harness.BenchError(f"{broker.llen(QUEUE_KEY)} of {n} tasks queued for the drain")
    log_path = Path(os.environ.get("BENCH_PEER_LOG", "/dev/null"))
    command = [sys.executable, "-m", "celery", "-A", "celery_peer_app", "worker"]
    command += ["--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(PEERS_DIR)}
    with log_path.open("a") as log:
        started_epoch = time.time()
        with harness.worker_process(command, env=env, log=log, cwd=PEERS_DIR) as proc:
            figures.update(
                harness.measure_drain(
                    proc, started_epoch, n, finished_probe(results, n), log_path=log_path
                )
            )
            results.flushdb()
            samples: list[float] = []
            for i in range(sizes["latency"] + 10):
                started = time.perf_counter()
                noop.delay().get(timeout=_RESULT_TIMEOUT_S)  # raises if the task failed
                if i >= 10:
                    samples.append((time.perf_counter() - started) * 1000)
            figures.update(harness.latency_figures(samples))
    conf = celery_peer_app.app.conf
    server_version = broker.info("server")["redis_version"]
    settings = (
        f"Redis {server_version} as broker and result backend, unix socket, {_persistence(broker)};"
        " worker --pool prefork --concurrency 2, defaults: prefetch multiplier"
        f" {conf.worker_prefetch_multiplier}, task_acks_late={conf.task_acks_late}, mingle,"
        " gossip and heartbeat on; W1b: group().apply_async(); W1c: 64 threads calling delay()"
    )
    broker.close()
    results.close()
    return {"version": celery.__version__, "figures": figures, "settings": settings}


def main() -> None:
    harness.exit_on_sigterm()
    os.environ["BENCH_CELERY_REDIS_SOCKET"] = sys.argv[2]  # read by celery_peer_app
    result = measure(sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
