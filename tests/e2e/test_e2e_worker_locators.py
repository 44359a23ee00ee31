"""Every locator form (file path, dotted module, with or without the attribute) starts a working
worker.

A worker logs "ready" only after each child has re-located the app through the canonical locator,
so readiness proves the children found the same app for every form.
"""

from __future__ import annotations

import signal
import sys

import pytest
from apps.throughput import create_app
from e2e_harness import StartWorker, producer_app
from horsies.app import Horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LOCATORS = [
    ["tests.e2e.apps.throughput"],  # dotted module, the single app is discovered
    ["tests/e2e/apps/throughput.py:app"],  # file path + attribute
    ["tests/e2e/apps/throughput"],  # file path, ".py" appended
    ["-m", "tests.e2e.apps.throughput:app"],  # the -m/--module option
]


app = producer_app(create_app)


def test_each_locator_form_serves_tasks(start_worker: StartWorker, app: Horsies) -> None:
    # Started together so the children spawn in parallel and the test stays short.
    workers = [
        start_worker(
            "throughput",
            ready=False,
            command=[
                sys.executable,
                "-m",
                "horsies",
                "worker",
                *locator,
                "--processes",
                "1",
            ],
        )
        for locator in LOCATORS
    ]
    for worker in workers:
        worker.wait_ready()
    handles = app.tasks["tp.noop"].send_many([() for _ in range(20)])
    assert all(h.get(timeout_ms=30_000).is_ok() for h in handles)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert [worker.wait_exit(30) for worker in workers] == [0, 0, 0, 0]
