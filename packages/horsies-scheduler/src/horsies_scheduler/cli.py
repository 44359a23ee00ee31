"""``horsies scheduler``: the click command contributed to the ``horsies`` CLI (entry point group
``horsies.commands``, name ``scheduler``). Exit codes: 0 after a stop by SIGTERM/SIGINT/Ctrl+C,
1 for discovery, configuration, validation and start-up failures (see docs/scheduling.md).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from horsies.banner import render_banner
from horsies.cli import app_command_options, discover_app, log_format_option, run_service
from horsies.logs import configure_logging, get_logger, set_log_context

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["print_banner", "scheduler_command"]

logger = get_logger("scheduler")


def print_banner(app: Horsies) -> None:
    """Print the start-up banner and the configured schedules to stdout."""
    lines = [render_banner(app, role="scheduler")]
    config = app.config.schedule
    if config is not None:
        enabled = len(config.enabled_schedules())
        lines.append("")
        lines.append(f"[schedules] ({enabled}/{len(config.schedules)} enabled)")
        lines.extend(f"  . {schedule.describe()}" for schedule in config.schedules)
    click.echo("\n".join(lines))


@click.command("scheduler")
@app_command_options(default_loglevel="INFO")
@log_format_option()
def scheduler_command(
    *, module: str | None, module_option: str | None, loglevel: str, log_format: str
) -> None:
    """Run the scheduler: enqueue the app's scheduled tasks when they come due.

    MODULE is the app locator: 'pkg.module:app', 'pkg.module', 'path/to/app.py:app' or
    'path/to/app.py'. The schedules come from AppConfig(schedule=ScheduleConfig(...)). Several
    schedulers may run at once: each slot is still enqueued once. Stops on SIGTERM/SIGINT.
    """
    # Loaded when the command runs, not when `horsies --help` lists it.
    from horsies_scheduler.service import run_scheduler

    configure_logging(loglevel.upper(), log_format=log_format)
    set_log_context(role="scheduler")
    # Locate the app the way `horsies check` does (a bad locator is the same error there).
    app = discover_app(module_option or module).app
    app.set_role("scheduler")
    config = app.config.schedule
    if config is None:
        logger.error(
            "No schedule configuration: attach one with "
            "AppConfig(..., schedule=ScheduleConfig(schedules=[...]))"
        )
        sys.exit(1)
    if not config.enabled:
        logger.warning("Scheduling is disabled (ScheduleConfig(enabled=False)): not starting")
        sys.exit(1)
    run_service(
        lambda: run_scheduler(
            app, loglevel=loglevel.upper(), configure_logs=False, banner=print_banner
        ),
        name="Scheduler",
        logger=logger,
    )
