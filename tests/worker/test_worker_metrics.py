"""The worker's metrics module on its own: prometheus-client is loaded only by a worker asked for
metrics (a real worker process, with and without), a missing extra is an E210 error, outcomes
get their label, database errors are told from bugs, the gauges follow a database read, and the
options reach the worker (configuration, ``--reload``'s command line)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from horsies.broker.claims import ClaimedTask
from horsies.broker.errors import BrokerError
from horsies.broker.finish import TaskOutcome
from horsies.broker.monitoring import ClusterGauges, QueueBacklog
from horsies.errors import ConfigurationError, ErrorCode
from horsies_worker.cli import _worker_command_line
from horsies_worker.config import WorkerConfig
from horsies_worker.metrics import WorkerMetrics, outcome_label
from process_harness import child_env, run_python

_REAL_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from horsies_worker.run import prepare_worker
    from horsies_worker.worker import Worker

    async def main(port):
        app, config = prepare_worker(
            "tests.e2e.apps.metrics:app", processes=1, loglevel="WARNING", metrics_port=port
        )
        worker = Worker(app, config, install_signal_handlers=False)
        run = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.ready.wait(), 60)
        loaded = "prometheus_client" in sys.modules
        worker.request_stop()
        await asyncio.wait_for(run, 60)
        print(json.dumps(loaded))

    asyncio.run(main(None if sys.argv[1] == "off" else int(sys.argv[1])))
    """
)


@pytest.mark.parametrize(("port", "loaded"), [("off", False), ("0", True)])
def test_only_a_worker_asked_for_metrics_imports_prometheus_client(
    database_url: str, port: str, loaded: bool
) -> None:
    env = child_env({"HORSIES_E2E_DATABASE_URL": database_url})
    result = run_python("-c", _REAL_WORKER, port, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) is loaded


def test_the_worker_modules_import_no_prometheus_client() -> None:
    code = (
        "import sys, horsies_worker, horsies_worker.cli, horsies_worker.run, "
        "horsies_worker.worker, horsies_worker.metrics; "
        "assert 'prometheus_client' not in sys.modules"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_metrics_without_the_extra_raise_e210(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError) as raised:
        WorkerMetrics()
    assert raised.value.code == ErrorCode.CLI_COMMAND_UNAVAILABLE
    assert "prometheus-client" in str(raised.value)


def _outcome(ok: bool, retry_delay_s: float | None = None) -> TaskOutcome:
    return TaskOutcome(task_id="t", result_json="{}", ok=ok, retry_delay_s=retry_delay_s)


def test_outcome_labels() -> None:
    assert outcome_label(_outcome(True)) == "ok"
    assert outcome_label(_outcome(True), cancelled=True) == "ok"  # an ok result is kept
    assert outcome_label(_outcome(False)) == "failed"
    assert outcome_label(_outcome(False, 1.0)) == "retried"
    assert outcome_label(_outcome(False, 1.0), cancelled=True) == "cancelled"  # never retried


def _value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_recording_and_gauges() -> None:
    metrics = WorkerMetrics()
    metrics.expect(["default"], [("default", "idle")])
    assert _value(metrics, "horsies_tasks_started_total", queue="default", task="idle") == 0
    task = ClaimedTask(
        id="t", task_name="work", queue_name="q", priority=100, args=None, kwargs=None,
        retry_count=0, max_retries=0, task_options=None, sent_at=None,  # type: ignore[arg-type]
    )  # fmt: skip
    metrics.task_started(task)
    metrics.task_finished(task, _outcome(False, 2.0), 0.25)
    assert _value(metrics, "horsies_tasks_started_total", queue="q", task="work") == 1
    labels = {"queue": "q", "task": "work"}
    assert _value(metrics, "horsies_tasks_finished_total", outcome="retried", **labels) == 1
    assert _value(metrics, "horsies_tasks_finished_total", outcome="ok", **labels) == 0
    assert _value(metrics, "horsies_task_run_seconds_sum", **labels) == 0.25
    metrics.database_error("heartbeat", BrokerError("connection to the database lost"))
    metrics.database_error("heartbeat", ValueError("a bug, not the database"))
    assert _value(metrics, "horsies_database_errors_total", operation="heartbeat") == 1
    assert _value(metrics, "horsies_database_errors_total", operation="claim") == 0
    metrics.cluster(ClusterGauges([QueueBacklog("default", 4, 12.5)], workers_alive=3))
    assert _value(metrics, "horsies_queue_depth", queue="default") == 4
    assert _value(metrics, "horsies_queue_oldest_pending_seconds", queue="default") == 12.5
    assert _value(metrics, "horsies_workers_alive") == 3
    metrics.cluster(ClusterGauges([QueueBacklog("default", 0, None)], workers_alive=3))
    assert _value(metrics, "horsies_queue_oldest_pending_seconds", queue="default") == 0


def test_two_workers_in_one_process_keep_their_own_registries() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.claimed(0.01)
    assert _value(first, "horsies_claim_seconds_count") == 1
    assert _value(second, "horsies_claim_seconds_count") == 0


def test_the_metrics_port_is_checked() -> None:
    assert WorkerConfig(locator="m:app").metrics_port is None
    assert WorkerConfig(locator="m:app", metrics_port=0).metrics_host == "127.0.0.1"
    with pytest.raises(ValueError, match="metrics_port"):
        WorkerConfig(locator="m:app", metrics_port=70_000)


def test_reload_passes_the_metrics_options_on() -> None:
    tuning = {
        "max_claim_batch": 2,
        "max_claim_per_worker": 0,
        "async_concurrency": 10,
        "shutdown_timeout_s": 30.0,
        "metrics_port": 9100,
        "metrics_host": "0.0.0.0",
    }
    line = _worker_command_line("m:app", processes=2, loglevel="INFO", log_format="text",
                                tuning=tuning)  # fmt: skip
    assert line[-4:] == ["--metrics-port", "9100", "--metrics-host", "0.0.0.0"]
    without = _worker_command_line("m:app", processes=2, loglevel="INFO", log_format="text",
                                   tuning={**tuning, "metrics_port": None})  # fmt: skip
    assert "--metrics-port" not in without
