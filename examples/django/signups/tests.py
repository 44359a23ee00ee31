"""The signups app's tests under Django's own runner: ``python manage.py test``.

Django's test database is made after the project's horsies app was created, and Django's
migrations do not make horsies' tables: so the class installs them there once and every test
points the app at that database. ``TransactionTestCase``, not ``TestCase``: a ``TestCase`` never
commits, and horsies' own connections (``sent_tasks``, ``run_pending``, ``handle.get()``) see only
committed tasks. The flush between tests empties Django's tables only: tasks of earlier tests stay,
so each test looks at what it sent itself.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.test import TransactionTestCase
from horsies.testing import assert_sent, run_pending, sent_tasks, use_database
from mysite.horsies_app import app, database_url

from signups.models import Signup
from signups.tasks import send_welcome


class SignupTests(TransactionTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        call_command("horsies_migrate", verbosity=0)

    def setUp(self) -> None:
        self.enterContext(use_database(app, database_url(settings.DATABASES["default"])))

    def sign_up(self, **form: str) -> Any:
        # Django has no type hints: the type checker takes the client's response for a request.
        response: Any = self.client.post("/signups", form)
        return response

    def test_a_signup_commits_its_welcome_and_the_welcome_runs(self) -> None:
        response = self.sign_up(email="ada@example.org")
        assert response.status_code == 201
        signup = Signup.objects.get(email="ada@example.org")
        assert_sent(send_welcome, signup.pk)
        ran = [r for r in run_pending(app) if r.task_id == response.json()["task_id"]]
        assert [r.result.unwrap() for r in ran] == ["ada@example.org"]
        signup.refresh_from_db()
        assert signup.welcomed_at is not None

    def test_an_unknown_referrer_leaves_neither_signup_nor_task(self) -> None:
        before = len(sent_tasks(app))
        response = self.sign_up(email="bob@example.org", referred_by="eve@example.org")
        assert response.status_code == 400
        assert not Signup.objects.exists()
        assert len(sent_tasks(app)) == before
