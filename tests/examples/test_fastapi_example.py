"""examples/fastapi: the shop's API called through httpx's ASGI transport, in the test's process,
with its lifespan run as a server runs it, on a database of the test's own.

A placed order commits its row, its stock and its confirmation task together; the task runs (here
with ``run_pending_async``, in one test with a real worker) and the status endpoint reports its
result. An order refused after its task was sent leaves neither the order nor the task.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from horsies import Horsies, TaskHandle, TaskStatus
from horsies.testing import assert_sent, run_pending_async, sent_tasks, use_database
from horsies.testing.pytest_plugin import StartWorker
from process_harness import ROOT
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

pytestmark = pytest.mark.timeout(60)

EXAMPLE = ROOT / "examples" / "fastapi"

# The example is run from its folder (`uvicorn shop.web:api`); the tests import it from there.
sys.path.insert(0, str(EXAMPLE))
# The shop reads its URL when imported, as a deployed app does; each test then points it at its own
# database (use_database), so a placeholder is enough until then.
with pytest.MonkeyPatch.context() as _env:
    _env.setenv("DATABASE_URL", "postgresql+psycopg://unused@127.0.0.1:1/unused")
    from shop import tasks, web
    from shop.models import Order, Product


@pytest.fixture
def horsies_app(horsies_fresh_database_url: str) -> Iterator[Horsies]:
    """The shop's horsies app on a database of the test's own: the shop keeps tables of its own
    there, which the emptying of horsies' tables between tests would leave behind."""
    with use_database(tasks.app, horsies_fresh_database_url) as app:
        yield app


@pytest.fixture
async def client(horsies_app: Horsies) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the shop's API, started (schema, tables, engine) and stopped around the test."""
    del horsies_app
    # The transport passes requests only: the lifespan is entered here, as a server would.
    async with web.api.router.lifespan_context(web.api):
        transport = httpx.ASGITransport(app=web.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            yield client


def _sessions() -> async_sessionmaker[AsyncSession]:
    return web.api.state.sessions


async def _orders() -> list[Order]:
    async with _sessions()() as session:
        return list(await session.scalars(select(Order).order_by(Order.id)))


async def _stock(sku: str) -> int:
    async with _sessions()() as session:
        product = await session.get(Product, sku)
        assert product is not None
        return product.stock


async def _place(client: httpx.AsyncClient, email: str, sku: str, quantity: int) -> httpx.Response:
    return await client.post("/orders", json={"email": email, "sku": sku, "quantity": quantity})


async def _status(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_committed_order_has_its_row_and_its_task(
    client: httpx.AsyncClient, horsies_app: Horsies
) -> None:
    placed = await _place(client, "ada@example.org", "tea", 2)

    assert placed.status_code == 201, placed.text
    task_id = placed.json()["confirmation_task_id"]
    [order] = await _orders()
    assert placed.json()["order_id"] == order.id
    assert (order.email, order.sku, order.quantity, order.total_cents) == (
        "ada@example.org", "tea", 2, 1300,
    )  # fmt: skip
    assert order.confirmation_task_id == task_id
    assert await _stock("tea") == 18
    sent = assert_sent(
        tasks.send_confirmation, order.id, "ada@example.org", "2 x Tea, 100 g, 13.00 EUR"
    )
    assert (sent.task_id, sent.status) == (task_id, TaskStatus.PENDING)
    assert await _status(client, task_id) == {
        "task_id": task_id,
        "task_name": "shop.send_confirmation",
        "status": "pending",
        "result": None,
        "error": None,
    }

    ran = await run_pending_async(horsies_app)

    confirmation = f"to ada@example.org: order {order.id} confirmed, 2 x Tea, 100 g, 13.00 EUR"
    assert [(task.task_id, task.result.ok_value) for task in ran] == [(task_id, confirmation)]
    status = await _status(client, task_id)
    assert (status["status"], status["result"], status["error"]) == (
        "completed", confirmation, None,
    )  # fmt: skip


async def test_an_order_refused_after_its_send_leaves_neither_row_nor_task(
    client: httpx.AsyncClient, horsies_app: Horsies
) -> None:
    first = await _place(client, "ada@example.org", "mug", 2)
    assert first.status_code == 201, first.text

    # Only one mug is left: the stock check fails after the order and its task were written.
    refused = await _place(client, "bob@example.org", "mug", 2)

    assert refused.status_code == 409, refused.text
    assert refused.json() == {"detail": "only 1 of 'mug' left"}
    assert [order.email for order in await _orders()] == ["ada@example.org"]
    assert await _stock("mug") == 1
    assert [sent.task_id for sent in sent_tasks(horsies_app)] == [
        first.json()["confirmation_task_id"]
    ]
    # The first order's task is the only one there is to run.
    assert len(await run_pending_async(horsies_app)) == 1


async def test_a_failed_confirmation_and_unknown_ids(
    client: httpx.AsyncClient, horsies_app: Horsies
) -> None:
    placed = await _place(client, "bob@example.invalid", "tea", 1)
    assert placed.status_code == 201, placed.text
    task_id = placed.json()["confirmation_task_id"]

    await run_pending_async(horsies_app)

    status = await _status(client, task_id)
    assert (status["status"], status["result"], status["error"]) == (
        "failed",
        None,
        {"code": "MAIL_REJECTED", "message": "no mail server accepts bob@example.invalid"},
    )
    assert (await client.get(f"/tasks/{uuid.uuid4()}")).status_code == 404
    unknown = await _place(client, "ada@example.org", "kettle", 1)
    assert unknown.status_code == 404, unknown.text
    assert len(await _orders()) == 1
    assert len(sent_tasks(horsies_app)) == 1


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_worker_runs_the_confirmation(
    client: httpx.AsyncClient,
    horsies_app: Horsies,
    horsies_worker: StartWorker,
    horsies_fresh_database_url: str,
) -> None:
    # The worker finds the shop the way a deployed one does: from its folder, by its URL.
    horsies_worker(
        "shop.tasks:app",
        env={"DATABASE_URL": horsies_fresh_database_url},
        cwd=EXAMPLE,
        database_url=horsies_fresh_database_url,
    )

    placed = await _place(client, "ada@example.org", "mug", 1)
    assert placed.status_code == 201, placed.text
    task_id = placed.json()["confirmation_task_id"]

    # Woken by the task's completion notification: no polling, and 60 s only bounds a failure.
    handle = TaskHandle[str](task_id, broker=horsies_app.get_broker())
    result = await handle.get_async(timeout_ms=60_000)

    order_id = placed.json()["order_id"]
    confirmation = f"to ada@example.org: order {order_id} confirmed, 1 x Mug, 12.00 EUR"
    assert result.ok_value == confirmation, result
    status = await _status(client, task_id)
    assert (status["status"], status["result"]) == ("completed", confirmation)
