"""Fixtures of the reliability suite: the ledger, real ``horsies worker`` processes of the ledger
app (``harness.LedgerWorker``) and a producer app.

Scenario modules start workers with ``start_worker(*cli_args, env={...})``; ``env`` configures the
ledger app (see ``apps/ledger_app.py``). Every wait is bounded; teardown stops only the processes
started here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from process_harness import ROOT, StartedProcesses

# Workers import the app as ``tests.reliability.apps.ledger_app``; the tests use the same name.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from horsies.app import Horsies

from tests.reliability.apps.ledger_app import create_app
from tests.reliability.harness import LedgerWorker, StartWorker
from tests.reliability.ledger import create_ledger


@pytest.fixture
def ledger(database_conninfo: str, clean_db: str) -> str:
    """Empty horsies tables and an empty ledger; returns the database's libpq URL."""
    create_ledger(database_conninfo)
    return clean_db


@pytest.fixture
def start_worker(database_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Factory: ``start_worker("--processes", "2", env={...}, ready=True)``."""
    started = StartedProcesses[LedgerWorker](tmp_path)

    def start(*args: str, env: Mapping[str, str] | None = None, ready: bool = True) -> LedgerWorker:
        worker = LedgerWorker(database_url, started.next_log("worker"), list(args), env or {})
        return started.add(worker, ready=ready)

    yield start
    started.reap_all()


@pytest.fixture
def make_producer(database_url: str) -> Iterator[Callable[..., Horsies]]:
    """Factory: ``make_producer({"RELIABILITY_QUEUE_MODE": "custom"})`` -> the test's app."""
    apps: list[Horsies] = []

    def make(env: Mapping[str, str] | None = None) -> Horsies:
        app = create_app(database_url, dict(env or {}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.get_broker().close()


@pytest.fixture(scope="module")
def producer(database_url: str) -> Iterator[Horsies]:
    """The ledger app with its default configuration, shared by a module's tests."""
    app = create_app(database_url, {})
    yield app
    app.get_broker().close()
