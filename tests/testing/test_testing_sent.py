"""sent_tasks and assert_sent: what the code under test sent, read back without running it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from horsies import Horsies, TaskStatus
from horsies.testing import assert_sent, run_pending, sent_tasks
from orders_app import add, checkout, place_order, send_receipt

pytestmark = pytest.mark.timeout(60)


def test_sent_tasks_lists_every_send_in_order_with_decoded_arguments(
    horsies_app: Horsies, horsies_database_url: str
) -> None:
    checkout(42)
    receipt = send_receipt.send(43, "x@example.org", lines=[])
    sent = sent_tasks(horsies_app)
    assert [(s.task_name, s.args, s.kwargs) for s in sent] == [
        ("orders.place", (42,), {}),
        ("orders.send_receipt", (42,), {"email": "buyer@example.org", "lines": ["tea"]}),
        ("orders.send_receipt", (43, "x@example.org"), {"lines": []}),
    ]
    assert all(s.status is TaskStatus.PENDING for s in sent)
    assert {(s.queue_name, s.priority) for s in sent} == {("default", 100)}
    assert sent[2].task_id == receipt.task_id
    assert sent[0].sent_at <= datetime.now(UTC)

    assert [s.task_id for s in sent_tasks(horsies_app, name=send_receipt)] == [
        s.task_id for s in sent[1:]
    ]
    assert sent_tasks(horsies_database_url, name="orders.place") == sent[:1]
    assert sent_tasks(horsies_app, queue="default") == sent
    assert sent_tasks(horsies_app, queue="other") == []


def test_assert_sent_matches_the_call_as_the_function_receives_it(horsies_app: Horsies) -> None:
    checkout(42)
    add.send(2)
    found = assert_sent(send_receipt, 42, "buyer@example.org", ("tea",))
    assert found.kwargs == {"email": "buyer@example.org", "lines": ["tea"]}
    assert_sent(send_receipt, order_id=42, email="buyer@example.org", lines=["tea"])
    assert_sent(place_order, 42)
    assert_sent(add, 2, 0)  # the default counts
    run_pending(horsies_app)
    assert assert_sent(place_order, order_id=42).status is TaskStatus.COMPLETED


def test_assert_sent_says_what_was_sent_instead(horsies_app: Horsies) -> None:
    del horsies_app
    checkout(42)
    with pytest.raises(AssertionError) as failure:
        assert_sent(place_order, 41)
    message = str(failure.value)
    assert message.startswith("orders.place(41) was not sent; sent (2):\n")
    assert "  orders.place(42)  [PENDING, queue 'default', id " in message
    receipt = "  orders.send_receipt(42, email='buyer@example.org', lines=['tea'])  [PENDING"
    assert receipt in message


def test_assert_sent_with_nothing_sent(horsies_app: Horsies) -> None:
    del horsies_app
    nothing = r"^orders\.add\(1, 2\) was not sent: nothing was sent$"
    with pytest.raises(AssertionError, match=nothing):
        assert_sent(add, 1, 2)
