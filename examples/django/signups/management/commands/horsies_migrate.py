"""``python manage.py horsies_migrate``: install or upgrade horsies' tables in one of Django's
databases (``default`` unless ``--database`` names another). Run it at each deploy, next to
``migrate``: a send within Django's transaction never installs them (it is refused with E212 until
they exist)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from horsies import AppConfig, Horsies, PostgresConfig
from mysite.horsies_app import database_url


class Command(BaseCommand):
    help = "Install or upgrade horsies' tables in a database of DATABASES (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default="default", help="an alias of DATABASES")

    def handle(self, *args: Any, **options: Any) -> None:
        # The URL is read from the settings now, not from the project's app, whose URL was fixed
        # when it was imported: under Django's test runner this is the test database.
        config = PostgresConfig(database_url=database_url(settings.DATABASES[options["database"]]))
        broker = Horsies(AppConfig(broker=config)).get_broker()
        try:
            broker.ensure_schema_initialized_sync()
        finally:
            broker.close()
        if options["verbosity"]:
            self.stdout.write(f"horsies schema up to date in {config.masked_url}")
