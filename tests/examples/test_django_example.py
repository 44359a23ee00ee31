"""examples/django: its view, its task and its management commands against a real PostgreSQL.

In this process, Django runs with the example's own settings module (read with ``DATABASE_URL`` set
to the module's database) and the views are called through Django's test ``Client``: a signup
commits its row and its welcome task together (``assert_sent``), ``run_pending`` runs the task as a
worker would (the ORM in the task, the mail in Django's outbox), and a signup that fails after the
send leaves neither row nor task, from the blocking and the async view alike. As the README says,
in an empty database ``manage.py migrate`` alone is not enough for a signup (its send finds no
horsies schema) and ``manage.py horsies_migrate`` is; ``manage.py test`` passes (the app's own
tests, under Django's runner); ``manage.py horsies_worker`` runs the welcome in a real worker and
stops on SIGTERM.
"""

from __future__ import annotations

import contextlib
import runpy
import signal
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import django
import psycopg
import pytest
from django.apps import apps
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from horsies import Horsies, PostgresConfig, TaskHandle, TaskStatus
from horsies.testing import assert_sent, run_pending, sent_tasks, use_database
from process_harness import ROOT, LoggedProcess, child_env, run_python
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

pytestmark = pytest.mark.timeout(120)

EXAMPLE = ROOT / "examples" / "django"


def _outbox() -> list[Any]:
    """The mails Django's in-memory backend has sent (it gives ``django.core.mail`` an
    ``outbox``)."""
    return cast(Any, mail).outbox


@contextlib.contextmanager
def _default_database(database: dict[str, Any]) -> Iterator[None]:
    """Django's ``default`` alias on ``database`` for the block, as Django's test runner switches
    to its test database: the settings dict replaced, the connection closed on either side."""
    handler: Any = connections

    def close_default() -> None:
        if any(conn.alias == "default" for conn in connections.all(initialized_only=True)):
            connections["default"].close()
            del connections["default"]

    close_default()
    previous = handler.settings["default"]
    handler.settings["default"] = connections.configure_settings({"default": database})["default"]
    try:
        yield
    finally:
        close_default()
        handler.settings["default"] = previous


@contextlib.contextmanager
def _example_django(conninfo: str) -> Iterator[None]:
    """Django set up with examples/django/mysite/settings.py as read with ``DATABASE_URL`` set to
    ``conninfo``, for the block.

    Another test file of this process may have configured Django first (tests/transactions does,
    with no apps and a dummy default database), and settings are configured once per process:
    so the example's settings are laid over whatever is there (``override_settings`` also installs
    its apps), and its default database is switched to, never configured anew.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", conninfo)
        found = runpy.run_path(str(EXAMPLE / "mysite" / "settings.py"))
    example = {name: value for name, value in found.items() if name.isupper()}
    database = example.pop("DATABASES")["default"]
    # Left as it is: override_settings reads every setting back at the end, and an empty
    # SECRET_KEY (Django configured by someone else) raises when read. Nothing here signs.
    del example["SECRET_KEY"]
    if not settings.configured:
        settings.configure()
    if not apps.ready:
        django.setup()
    test_only = {
        "ALLOWED_HOSTS": [*example["ALLOWED_HOSTS"], "testserver"],  # the Client's host
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    with override_settings(**{**example, **test_only}), _default_database(database):
        yield


@pytest.fixture(scope="module")
def project(database_conninfo: str, database_url: str) -> Iterator[Horsies]:
    """The example project in this process, on the module's database (Django's tables migrated,
    horsies' already there); yields its horsies app."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        with _example_django(database_conninfo):
            call_command("migrate", verbosity=0)
            # Only now: the app reads Django's settings when imported.
            from mysite.horsies_app import app

            with use_database(app, database_url):
                yield app
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture
def app(project: Horsies, clean_db: str) -> Horsies:
    """The project with no signups, no tasks and no mails."""
    from signups.models import Signup

    Signup.objects.all().delete()
    cast(Any, mail).outbox = []
    return project


def _post(path: str, data: Mapping[str, str]) -> tuple[int, Any]:
    """POST a form through Django's test client: the status and the JSON body."""
    # Django has no type hints: the type checker takes the client's response for a request.
    response: Any = Client().post(path, dict(data))
    return response.status_code, response.json()


def test_the_horsies_url_names_djangos_database(project: Horsies, database_conninfo: str) -> None:
    from mysite.horsies_app import database_url

    built = conninfo_to_dict(database_url(settings.DATABASES["default"]))
    assert built["dbname"] == conninfo_to_dict(database_conninfo)["dbname"]

    odd = {
        "NAME": "shop db",
        "USER": "ada@work",
        "PASSWORD": "p@ss:w/rd %",
        "HOST": "/var/run/postgresql",
        "PORT": "5433",
        "OPTIONS": {"sslmode": "prefer", "isolation_level": 2, "server_side_binding": True},
    }
    url = database_url(odd)
    PostgresConfig(database_url=url)  # horsies accepts it
    assert conninfo_to_dict(url) == {
        "dbname": "shop db",
        "user": "ada@work",
        "password": "p@ss:w/rd %",
        "host": "/var/run/postgresql",
        "port": "5433",
        "sslmode": "prefer",  # Django's own OPTIONS are not libpq's: left out
    }
    ipv6 = conninfo_to_dict(database_url({"NAME": "db", "HOST": "::1", "OPTIONS": {}}))
    assert ipv6 == {"dbname": "db", "host": "::1"}


def test_a_signup_commits_its_row_and_its_task(app: Horsies) -> None:
    from signups.models import Signup
    from signups.tasks import send_welcome

    status, body = _post("/signups", {"email": "ada@example.org"})
    assert status == 201, body
    signup = Signup.objects.get(email="ada@example.org")
    assert body["id"] == signup.pk
    sent = assert_sent(send_welcome, signup.pk)
    assert sent.task_id == body["task_id"]
    assert sent.status is TaskStatus.PENDING
    assert signup.welcomed_at is None
    assert _outbox() == []


def test_run_pending_runs_the_welcome_as_a_worker_would(app: Horsies) -> None:
    from signups.models import Signup
    from signups.tasks import send_welcome

    _, body = _post("/signups", {"email": "ada@example.org"})
    [ran] = run_pending(app)
    assert (ran.task_name, ran.task_id) == ("signups.send_welcome", body["task_id"])
    assert ran.result.unwrap() == "ada@example.org"
    assert Signup.objects.get(pk=body["id"]).welcomed_at is not None
    assert [m.to for m in _outbox()] == [["ada@example.org"]]
    detail: Any = Client().get(f"/signups/{body['id']}")
    assert detail.json()["welcomed"] is True
    handle: TaskHandle[str] = TaskHandle(body["task_id"], broker=app.get_broker())
    assert handle.get(timeout_ms=5_000).unwrap() == "ada@example.org"
    assert assert_sent(send_welcome, body["id"]).status is TaskStatus.COMPLETED


@pytest.mark.parametrize("path", ["/signups", "/signups/async"])
def test_a_failure_after_the_send_leaves_neither_row_nor_task(app: Horsies, path: str) -> None:
    """An unknown referrer is found after the welcome was sent: the view's transaction rolls
    back the signup and its task together; a known one commits all three changes."""
    from signups.models import Signup
    from signups.tasks import send_welcome

    status, body = _post(path, {"email": "ada@example.org"})
    assert status == 201, body
    ada = body["id"]

    status, body = _post(path, {"email": "bob@example.org", "referred_by": "eve@example.org"})
    assert (status, body) == (400, {"error": "no signup has the address 'eve@example.org'"})
    assert list(Signup.objects.values_list("email", flat=True)) == ["ada@example.org"]
    assert [s.args for s in sent_tasks(app, name=send_welcome)] == [(ada,)]

    status, body = _post(path, {"email": "ada@example.org"})  # fails before the send
    assert status == 409, body
    status, body = _post(path, {"email": "not an address"})  # and never gets there
    assert status == 400, body
    assert list(body["errors"]) == ["email"]
    assert len(sent_tasks(app)) == 1

    status, body = _post(path, {"email": "bob@example.org", "referred_by": "ada@example.org"})
    assert status == 201, body
    assert Signup.objects.get(pk=ada).referrals == 1
    assert_sent(send_welcome, body["id"])
    assert len(sent_tasks(app)) == 2
    assert len(run_pending(app)) == 2


def test_a_send_in_a_nested_block_is_undone_with_its_savepoint(app: Horsies) -> None:
    from django.db import connection, transaction
    from signups.models import Signup
    from signups.tasks import send_welcome

    # Django has no type hints: the type checker cannot tell atomic() from its decorator form.
    atomic: Any = transaction.atomic
    with atomic():
        signup = Signup.objects.create(email="ada@example.org")
        with contextlib.suppress(LookupError), atomic():
            send_welcome.within(connection).send(signup.pk)
            raise LookupError("back to the savepoint")
        kept = send_welcome.within(connection).send(signup.pk)
    assert Signup.objects.filter(pk=signup.pk).exists()
    assert [s.task_id for s in sent_tasks(app)] == [kept.task_id]


# A signup made by `manage.py shell` (the project's settings, a process of its own): the
# response's status and how many signups there are then.
_SIGN_UP = """
from django.test import Client
from signups.models import Signup
client = Client(headers={"host": "localhost"}, raise_request_exception=False)
response = client.post("/signups", {"email": "ada@example.org"})
print("signup:", response.status_code, Signup.objects.count())
"""


def test_horsies_migrate_installs_what_a_send_in_the_transaction_needs(pg_cluster: Any) -> None:
    """A first deploy, in an empty database: after ``manage.py migrate`` alone a signup fails
    (its send finds no horsies schema, E212) and leaves no row; after ``manage.py
    horsies_migrate`` the same signup commits. ``horsies_migrate`` again changes nothing."""
    name = f"django_example_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = child_env({"DATABASE_URL": pg_cluster.conninfo_for(name)})

    def manage(*args: str) -> str:
        done = run_python("manage.py", *args, env=env, cwd=EXAMPLE, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    try:
        manage("migrate")
        refused = manage("shell", "-c", _SIGN_UP)
        assert "signup: 500 0" in refused, refused
        assert "E212" in refused, refused
        assert "horsies schema up to date" in manage("horsies_migrate")
        manage("horsies_migrate")
        assert "signup: 201 1" in manage("shell", "-c", _SIGN_UP)
    finally:
        with psycopg.connect(pg_cluster.admin_conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_manage_py_test_passes(database_conninfo: str) -> None:
    """The app's own tests (signups/tests.py), under Django's runner and its test database."""
    done = run_python(
        "manage.py", "test", "--noinput",
        env=child_env({"DATABASE_URL": database_conninfo}), cwd=EXAMPLE, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 2 tests" in done.stderr, done.stderr


@pytest.mark.e2e
def test_manage_py_horsies_worker_runs_the_welcome_and_stops_on_sigterm(
    app: Horsies, database_conninfo: str, tmp_path: Path
) -> None:
    from signups.models import Signup

    worker = LoggedProcess(
        [sys.executable, "manage.py", "horsies_worker", "--processes", "1"],
        child_env({"DATABASE_URL": database_conninfo}),
        tmp_path / "worker.log",
        cwd=EXAMPLE,
    )
    try:
        worker.wait_ready(timeout=60)
        _, body = _post("/signups", {"email": "ada@example.org"})
        handle: TaskHandle[str] = TaskHandle(body["task_id"], broker=app.get_broker())
        result = handle.get(timeout_ms=30_000)
        assert result.is_ok(), (result, worker.output())
        assert result.ok_value == "ada@example.org"
        assert Signup.objects.get(pk=body["id"]).welcomed_at is not None
        assert "Subject: Welcome" in worker.output()  # the console backend, in the child
        worker.send_signal(signal.SIGTERM)
        assert worker.wait_exit(timeout=30) == 0, worker.output()
    finally:
        worker.reap()
