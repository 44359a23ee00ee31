"""``python manage.py horsies_worker``: run a horsies worker for the project's tasks, with the
settings every other ``manage.py`` command uses, until SIGTERM or Ctrl+C.

The worker runs in this process (``horsies.run_worker``); its children import ``mysite.worker``,
which sets Django up for them. The same worker from the shell (with ``--reload`` for development,
which this command does not offer): ``horsies worker mysite.worker:app``, from this folder.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from horsies import run_worker

WORKER_APP = "mysite.worker:app"


class Command(BaseCommand):
    help = "Run a horsies worker for this project's tasks until SIGTERM/SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--processes", type=int, help="child processes (default: CPU count)")
        parser.add_argument("--async-concurrency", type=int, help="async tasks per child")
        parser.add_argument("--loglevel", default="INFO")
        parser.add_argument("--log-format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        tuning: dict[str, Any] = {}
        if options["async_concurrency"] is not None:
            tuning["async_concurrency"] = options["async_concurrency"]
        # A locator, not the app object: each child imports it anew, Django set up first.
        run_worker(
            WORKER_APP,
            processes=options["processes"],
            loglevel=options["loglevel"],
            log_format=options["log_format"],
            **tuning,
        )
