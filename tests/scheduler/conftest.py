"""Fixtures of the end-to-end scheduler tests (the helpers they use are in ``sched_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from db_rows import Db
from sched_harness import StartScheduler, scheduler_factory


@pytest.fixture
def start_scheduler(database_url: str, tmp_path: Path) -> Iterator[StartScheduler]:
    """Factory: ``start_scheduler(spec, *args)`` starts a ``horsies scheduler`` (see
    ``sched_harness.scheduler_factory``); every scheduler started is stopped after the test."""
    with scheduler_factory(database_url, tmp_path) as start:
        yield start


@pytest.fixture
def sched_db(database_url: str, clean_db: str) -> Db:
    """Direct reads of the emptied test database."""
    del clean_db
    return Db(database_url)
