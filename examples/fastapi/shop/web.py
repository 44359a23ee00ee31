"""The shop's HTTP API: ``uvicorn shop.web:api``.

``POST /orders`` writes the order with SQLAlchemy and sends its confirmation task in the same
transaction, so the task exists only if the order commits. ``GET /tasks/{task_id}`` tells how a
task of the shop is doing, and its result once it has one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from horsies import TaskHandle, TaskStatus
from pydantic import BaseModel, Field
from sqlalchemy import URL, make_url, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from shop.models import CATALOGUE, Base, Order, Product
from shop.tasks import app, send_confirmation


def engine_url(database_url: str) -> URL:
    """The URL for SQLAlchemy's engine: the database of the horsies app, on psycopg 3."""
    # horsies takes the plain postgresql:// URL that `horsies db url` prints, for which SQLAlchemy
    # would choose psycopg2; a send within a session needs the session to run on psycopg 3.
    return make_url(database_url).set(drivername="postgresql+psycopg")


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    broker = app.get_broker()
    # A send within the request's transaction never creates horsies' tables (no DDL runs in a
    # caller's transaction): they must exist before the first request.
    await broker.ensure_schema_initialized()
    # The engine follows the horsies app's database: a send within a session writes through the
    # session's connection, so both must reach the same database.
    engine = create_async_engine(engine_url(app.config.broker.database_url))
    # A real shop runs its migrations when it deploys; the example makes its two tables here.
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(insert(Product).values(CATALOGUE).on_conflict_do_nothing())
    api.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        await engine.dispose()
        await broker.close_async()


api = FastAPI(title="shop", lifespan=lifespan)


async def open_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(open_session)]


class NewOrder(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    sku: str
    quantity: int = Field(gt=0, le=100)


class OrderPlaced(BaseModel):
    order_id: int
    confirmation_task_id: str


@api.post("/orders", status_code=201)
async def place_order(new_order: NewOrder, session: Session) -> OrderPlaced:
    """Take an order: the order row, its stock and its confirmation commit together or not at
    all."""
    async with session.begin():  # commits at the end of the block; an exception rolls it back
        product = await session.get(Product, new_order.sku)
        if product is None:
            raise HTTPException(404, f"no product {new_order.sku!r}")
        order = Order(
            email=new_order.email,
            sku=product.sku,
            quantity=new_order.quantity,
            total_cents=product.price_cents * new_order.quantity,
        )
        session.add(order)
        await session.flush()  # the order's id, which the task needs
        summary = f"{order.quantity} x {product.name}, {order.total_cents / 100:.2f} EUR"
        handle = await send_confirmation.within(session).send_async(order.id, order.email, summary)
        if not handle.sent:
            # Refused before anything was written, or the insert failed (which fails the
            # transaction): either way the order must not stay without its confirmation.
            raise HTTPException(503, "the confirmation could not be queued; try again")
        order.confirmation_task_id = handle.task_id
        # The stock is taken last: the UPDATE locks the product's row until the commit, and
        # every other order of that product waits for it meanwhile.
        taken = await session.execute(
            update(Product)
            .where(Product.sku == product.sku, Product.stock >= order.quantity)
            .values(stock=Product.stock - order.quantity)
            .returning(Product.stock)
        )
        if taken.scalar_one_or_none() is None:
            # Leaving the block with this exception rolls back the order and its task: no
            # worker will ever see the task, and no confirmation goes out.
            raise HTTPException(409, f"only {product.stock} of {product.sku!r} left")
    # Committed: a worker may run the confirmation from now on.
    return OrderPlaced(order_id=order.id, confirmation_task_id=handle.task_id)


class TaskFailure(BaseModel):
    code: str | None
    message: str | None


class TaskView(BaseModel):
    task_id: str
    task_name: str
    status: str
    """pending, claimed, running, completed, failed or cancelled."""
    result: Any = None
    """The task's value once it has completed."""
    error: TaskFailure | None = None
    """Why it failed or was cancelled, once it has."""


@api.get("/tasks/{task_id}")
async def task_status(task_id: str) -> TaskView:
    """The status of one of the shop's tasks, and its result once it has ended; never waits."""
    broker = app.get_broker()
    row = await broker.get_task(task_id)
    # Other apps may keep their tasks in the same database: show only the shop's own.
    if row is None or row["task_name"] not in app.tasks:
        raise HTTPException(404, "no such task")
    status = TaskStatus[row["status"]]
    view = TaskView(task_id=task_id, task_name=row["task_name"], status=status.value)
    if status.is_terminal:
        # An ended task's result is there already: the handle reads and decodes it without
        # waiting (the timeout only bounds a database that does not answer).
        result = await TaskHandle[Any](task_id, broker=broker).get_async(timeout_ms=5_000)
        if result.is_ok():
            view.result = result.ok_value
        else:
            error = result.err_value
            code = None if error.error_code is None else str(error.error_code)
            view.error = TaskFailure(code=code, message=error.message)
    return view
