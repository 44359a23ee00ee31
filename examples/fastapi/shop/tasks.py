"""The shop's horsies app and its tasks: what ``horsies worker shop.tasks:app`` runs.

It imports neither FastAPI nor SQLAlchemy: a worker host needs only horsies and the tasks' own
dependencies.
"""

from __future__ import annotations

import os

from horsies import AppConfig, Horsies, PostgresConfig, TaskError, TaskResult

# One database holds the shop's tables and horsies' tables: an order and the task that confirms
# it can then commit in one transaction.
app = Horsies(AppConfig(broker=PostgresConfig(database_url=os.environ["DATABASE_URL"])))


@app.task("shop.send_confirmation")
def send_confirmation(order_id: int, email: str, summary: str) -> TaskResult[str, TaskError]:
    """Mail the confirmation of an order; the result is what was sent."""
    # A real shop hands the message to its mail service here. This one only turns down the
    # addresses no mail service would take, so that a failed task can be seen too.
    if email.endswith(".invalid"):
        return TaskResult(
            err=TaskError(error_code="MAIL_REJECTED", message=f"no mail server accepts {email}")
        )
    return TaskResult(ok=f"to {email}: order {order_id} confirmed, {summary}")
