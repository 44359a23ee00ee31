"""The tasks of the signups app."""

from __future__ import annotations

from django.core.mail import send_mail
from django.db import close_old_connections
from django.utils import timezone
from horsies import TaskError, TaskResult
from mysite.horsies_app import app

from signups.models import Signup


@app.task("signups.send_welcome")
def send_welcome(signup_id: int) -> TaskResult[str, TaskError]:
    """Mail the welcome and note when it went; the result is the address it went to.

    The row is always there: the task was committed in the transaction that wrote it.
    """
    # Django closes its database connections at the end of each request; a worker runs tasks,
    # not requests, so a task that uses the ORM does the same around its run (a connection
    # broken or past CONN_MAX_AGE is not carried into the next task).
    close_old_connections()
    try:
        signup = Signup.objects.get(pk=signup_id)
        body = f"Hello {signup.email}, thank you for signing up."
        send_mail("Welcome", body, None, [signup.email])
        Signup.objects.filter(pk=signup_id).update(welcomed_at=timezone.now())
    finally:
        close_old_connections()
    return TaskResult(ok=signup.email)
