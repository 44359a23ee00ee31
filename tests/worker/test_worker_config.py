"""WorkerConfig derivation from the app: queues in claim order, caps, and the default number of
processes (the machine's CPU count)."""

from __future__ import annotations

import os

import pytest
from horsies.app import Horsies
from horsies.config import AppConfig, CustomQueueConfig, PostgresConfig, QueueMode
from horsies_worker.config import QueueSpec, WorkerConfig, default_processes

URL = "postgresql+psycopg://u:p@localhost:5432/db"


def test_default_processes_is_cpu_count() -> None:
    assert default_processes() == (os.cpu_count() or 1)
    assert WorkerConfig(locator="m:app").processes == (os.cpu_count() or 1)


def test_default_mode_serves_the_default_queue() -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=URL)))
    config = WorkerConfig.from_app(app, locator="m:app", processes=3)
    assert config.queues == [QueueSpec("default", 100, None)]
    assert config.processes == 3
    assert config.queue_mode == QueueMode.DEFAULT
    assert not config.soft_cap


def test_custom_queues_sorted_by_priority_ties_keep_config_order() -> None:
    app = Horsies(
        AppConfig(
            broker=PostgresConfig(database_url=URL),
            queue_mode=QueueMode.CUSTOM,
            custom_queues=[
                CustomQueueConfig(name="low", priority=50, max_concurrency=3),
                CustomQueueConfig(name="high_a", priority=1, max_concurrency=2),
                CustomQueueConfig(name="high_b", priority=1, max_concurrency=7),
            ],
            cluster_wide_cap=9,
        )
    )
    config = WorkerConfig.from_app(app, locator="m:app")
    assert config.queue_names == ["high_a", "high_b", "low"]
    assert config.queues[0] == QueueSpec("high_a", 1, 2)
    assert config.cluster_wide_cap == 9


def test_soft_cap_settings_come_from_the_app() -> None:
    app = Horsies(
        AppConfig(broker=PostgresConfig(database_url=URL), prefetch_buffer=4, claim_lease_ms=5000)
    )
    config = WorkerConfig.from_app(app, locator="m:app", processes=2)
    assert config.soft_cap
    assert config.prefetch_buffer == 4
    assert config.claim_lease_ms == 5000
    # With max_claim_per_worker 0 (automatic), the snapshots report the number of processes.
    assert config.effective_max_claim_per_worker == 2


def test_file_task_modules_add_their_directory_to_sys_path_roots(
    tmp_path: os.PathLike[str],
) -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=URL)))
    module = os.path.join(os.fspath(tmp_path), "tasks_mod.py")
    app.discover_tasks([module, "pkg.tasks", "pkg.tasks"])
    config = WorkerConfig.from_app(app, locator="m:app", sys_path_roots=["/x"])
    assert config.task_modules == [module, "pkg.tasks"]
    assert config.sys_path_roots == ["/x", os.path.realpath(os.fspath(tmp_path))]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"processes": 0},
        {"max_claim_batch": 0},
        {"max_claim_per_worker": -1},
        {"shutdown_timeout_s": -1.0},
        {"poll_interval_s": 0.0},
        {"loglevel": "LOUD"},
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WorkerConfig(locator="m:app", **kwargs)  # type: ignore[arg-type]


def test_loglevel_is_case_insensitive() -> None:
    assert WorkerConfig(locator="m:app", loglevel="debug").loglevel == "DEBUG"
