"""``horsies worker``: the click command contributed to the ``horsies`` CLI (entry point group
``horsies.commands``, name ``worker``). Exit codes: 0 after a clean stop (SIGTERM/SIGINT/Ctrl+C),
1 for discovery, configuration, start-up or run-time failures (see docs/worker.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from horsies.banner import render_banner
from horsies.cli import app_command_options, discover_app, log_format_option, run_service
from horsies.logs import configure_logging, get_logger, set_log_context

from horsies_worker.config import (
    DEFAULT_ASYNC_CONCURRENCY,
    DEFAULT_METRICS_HOST,
    default_processes,
)

if TYPE_CHECKING:
    from horsies.app import Horsies

logger = get_logger("worker")

F = TypeVar("F", bound=Callable[..., Any])


def print_banner(app: Horsies) -> None:
    """Print the start-up banner to stdout."""
    click.echo(render_banner(app, role="worker"))


def count_option(
    flag: str,
    *,
    least: int,
    default: int | Callable[[], int],
    help: str,
    show_default: str | bool = True,
) -> Callable[[F], F]:
    """An option counting something, at least ``least``."""
    return click.option(
        flag, type=click.IntRange(min=least), default=default, show_default=show_default, help=help
    )


def _worker_command_line(
    locator: str, *, processes: int, loglevel: str, log_format: str, tuning: dict[str, Any]
) -> list[str]:
    """The ``horsies worker`` command that ``--reload`` runs: these options, without itself."""
    metrics = tuning["metrics_port"]
    return [
        sys.executable,
        "-m",
        "horsies",
        "worker",
        locator,
        "--processes",
        str(processes),
        "--loglevel",
        loglevel,
        "--log-format",
        log_format,
        "--max-claim-batch",
        str(tuning["max_claim_batch"]),
        "--max-claim-per-worker",
        str(tuning["max_claim_per_worker"]),
        "--async-concurrency",
        str(tuning["async_concurrency"]),
        "--shutdown-timeout",
        repr(float(tuning["shutdown_timeout_s"])),
        *(
            []
            if metrics is None
            else ["--metrics-port", str(metrics), "--metrics-host", tuning["metrics_host"]]
        ),
    ]


@click.command("worker")
@app_command_options(default_loglevel="INFO")
@log_format_option()
@count_option(
    "--processes",
    least=1,
    default=default_processes,
    show_default="CPU count",
    help="Number of child processes (= concurrent executions on this worker).",
)
@count_option(
    "--max-claim-batch", least=1, default=2, help="Most tasks claimed per queue in one claim pass."
)
@count_option(
    "--max-claim-per-worker",
    least=0,
    default=0,
    help="Cap on this worker's claimed-not-yet-running tasks; 0 = auto.",
)
@count_option(
    "--async-concurrency",
    least=1,
    default=DEFAULT_ASYNC_CONCURRENCY,
    help="How many async def tasks one child process runs at once.",
)
@click.option(
    "--shutdown-timeout",
    "shutdown_timeout_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to let running tasks finish after SIGTERM/SIGINT before terminating them.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics on this port (0: any free port, logged). Needs pip install "
    '"horsies-worker[metrics]".',
)
@click.option(
    "--metrics-host",
    default=DEFAULT_METRICS_HOST,
    show_default=True,
    help="The address the metrics server binds (0.0.0.0: every interface).",
)
@click.option(
    "--reload",
    is_flag=True,
    help="Development: run the worker anew whenever a Python file under the current directory or "
    'the app\'s directory changes. Needs pip install "horsies-worker[reload]".',
)
def worker_command(
    *,
    module: str | None,
    module_option: str | None,
    processes: int,
    loglevel: str,
    log_format: str,
    reload: bool,
    **tuning: Any,  # the other options, named as run_worker's keywords (WorkerTuning)
) -> None:
    """Run a worker: claim tasks of every configured queue and execute them in child processes.

    MODULE is the app locator: 'pkg.module:app', 'pkg.module', 'path/to/app.py:app' or
    'path/to/app.py'.
    """
    # Loaded when the command runs, not when `horsies --help` lists it.
    from horsies_worker.fork_server import prepare_fork_server

    if not reload:
        # First, while this process runs one thread and no event loop, and has not imported the
        # database driver (the app does): the fork server forked now shares this process's pages
        # with every child it forks.
        prepare_fork_server()
    from horsies_worker.metrics import require_prometheus_client  # as the import above
    from horsies_worker.reload import (  # as the import above
        ReloadSupervisor,
        follow_supervisor,
        require_watchfiles,
        watched_directories,
    )
    from horsies_worker.run import run_worker  # as the import above

    locator = module_option or module
    if not locator:
        raise click.UsageError("missing app locator: pass MODULE or -m/--module")
    configure_logging(loglevel.upper(), log_format=log_format)
    set_log_context(role="reloader" if reload else "worker")
    if tuning["metrics_port"] is not None:
        require_prometheus_client()  # before the app is imported: say at once what is missing
    if reload:
        require_watchfiles()
    else:
        follow_supervisor()
    # Locate the app the way `horsies check` does, so a bad locator is rendered as the same E206
    # error with its help line; run_worker then finds the already imported modules.
    location = discover_app(locator)
    if reload:
        command = _worker_command_line(
            locator, processes=processes, loglevel=loglevel, log_format=log_format, tuning=tuning
        )
        supervisor = ReloadSupervisor(
            command,
            watched_directories(location, Path.cwd()),
            shutdown_timeout_s=tuning["shutdown_timeout_s"],
        )
        run_service(supervisor.run, name="Reloader", logger=logger)
    run_service(
        lambda: run_worker(
            locator,
            processes=processes,
            loglevel=loglevel.upper(),
            configure_logs=False,
            banner=print_banner,
            **tuning,
        ),
        name="Worker",
        logger=logger,
    )
