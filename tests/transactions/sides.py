"""What the tests of sends made within the caller's transaction share: their app, a workflow,
the kinds of connection, and a *side* (one open transaction of the caller's: ``within`` is what
the test passes to ``within()``, ``add_order`` writes an app row in the same transaction,
``commit``/``rollback`` end it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from horsies import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.workflows.nodes import TaskNode
from psycopg.conninfo import conninfo_to_dict

SYNC_KINDS = ["psycopg", "psycopg-autocommit", "sqlalchemy", "sqlalchemy-session", "django"]
ASYNC_KINDS = ["psycopg-async", "sqlalchemy-async", "sqlalchemy-async-session"]


def make_app(database_url: str) -> Horsies:
    """The app of these tests: ``tx.add`` and ``tx.note`` (a run that leaves a line in a file)."""
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))

    @app.task("tx.add")
    def add(a: int, b: int) -> TaskResult[int, TaskError]:
        return TaskResult(ok=a + b)

    @app.task("tx.note")
    def note(path: str, text: str) -> TaskResult[str, TaskError]:
        """Append ``text`` to the file ``path``: a run leaves a trace the test can count."""
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
        return TaskResult(ok=text)

    return app


def flow(app: Horsies, a: int) -> Any:
    """A workflow of two ``tx.add`` nodes, the second fed by the first."""
    add = app.tasks["tx.add"]
    first = TaskNode(fn=add, args=(a, 1))
    second = TaskNode(fn=add, args=(10,), waits_for=[first], args_from={"b": first})
    return app.workflow("tx_flow", [first, second], output=second)


@dataclass
class Side:
    """One open transaction of the caller's."""

    within: object
    add_order: Callable[[str], None]
    commit: Callable[[], None]
    rollback: Callable[[], None]


@dataclass
class AsyncSide:
    """One open transaction of the caller's, on an asyncio connection."""

    within: object
    add_order: Callable[[str], Any]
    commit: Callable[[], Any]
    rollback: Callable[[], Any]


def django_connection(conninfo: str) -> Any:
    """A Django connection to the test database, registered under an alias of its own."""
    import django
    from django.apps import apps
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True, DATABASES={})
    if not apps.ready:
        django.setup()
    from django.db import connections

    info = conninfo_to_dict(conninfo)
    alias = f"horsies_tx_{info['dbname']}"
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": info.get("dbname"),
        "USER": info.get("user"),
        "PASSWORD": info.get("password", ""),
        "HOST": info.get("host"),
        "PORT": info.get("port", ""),
    }
    # configure_settings fills in Django's defaults (and insists on a "default" alias).
    configured = connections.configure_settings({"default": database, alias: database})
    cast(Any, connections).settings[alias] = configured[alias]
    return connections[alias]
