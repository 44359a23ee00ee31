"""Fixtures of the tests of sends made within the caller's transaction: an app on the module's
database with an ``orders`` table of its own, and one open transaction (a side, see ``sides``)
per kind of connection horsies accepts (psycopg, SQLAlchemy, Django; blocking and asyncio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from horsies import Horsies
from sides import AsyncSide, Side, django_connection, make_app


@pytest.fixture(scope="module")
def app(database_url: str, database_conninfo: str) -> Iterator[Horsies]:
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, note text)")
    producer = make_app(database_url)
    producer.get_broker().ensure_schema_initialized_sync()
    yield producer
    producer.get_broker().close()


@pytest.fixture
def clean(app: Horsies, clean_db: str) -> str:
    """Empty horsies tables and ``orders``; returns the libpq URL."""
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("TRUNCATE orders")
    return clean_db


@pytest.fixture
def open_side(clean: str, database_url: str) -> Iterator[Callable[[str], Side]]:
    """Factory: ``open_side(kind)`` opens a transaction of that kind; all are closed after."""
    closers: list[Callable[[], None]] = []

    def open_one(kind: str) -> Side:
        if kind in ("psycopg", "psycopg-autocommit"):
            # The autocommit kind also runs without server-side prepared statements (as behind
            # a pooler in transaction mode): the sends' plain path.
            autocommit = kind == "psycopg-autocommit"
            conn = psycopg.connect(
                clean, autocommit=autocommit, prepare_threshold=None if autocommit else 5
            )
            closers.append(conn.close)

            def add_order(note: str) -> None:
                conn.execute("INSERT INTO orders (note) VALUES (%s)", (note,))

            if kind == "psycopg-autocommit":
                tx = conn.transaction()
                tx.__enter__()

                def end(ok: bool) -> None:
                    if ok:
                        tx.__exit__(None, None, None)
                    else:
                        tx.__exit__(psycopg.Rollback, psycopg.Rollback(), None)

                return Side(conn, add_order, lambda: end(True), lambda: end(False))
            return Side(conn, add_order, conn.commit, conn.rollback)
        if kind in ("sqlalchemy", "sqlalchemy-session"):
            import sqlalchemy
            from sqlalchemy.orm import Session

            engine = sqlalchemy.create_engine(database_url)
            closers.append(engine.dispose)
            insert = sqlalchemy.text("INSERT INTO orders (note) VALUES (:note)")
            if kind == "sqlalchemy":
                sa_conn = engine.connect()
                closers.append(sa_conn.close)
                sa_conn.begin()
                return Side(
                    sa_conn,
                    lambda note: sa_conn.execute(insert, {"note": note}) and None,
                    sa_conn.commit,
                    sa_conn.rollback,
                )
            session = Session(engine)
            closers.append(session.close)
            return Side(
                session,
                lambda note: session.execute(insert, {"note": note}) and None,
                session.commit,
                session.rollback,
            )
        if kind == "django":
            from django.db import transaction

            dj = django_connection(clean)
            closers.append(dj.close)
            atomic: Any = transaction.atomic(using=dj.alias)
            atomic.__enter__()

            def add_dj_order(note: str) -> None:
                with dj.cursor() as cur:
                    cur.execute("INSERT INTO orders (note) VALUES (%s)", [note])

            def rollback() -> None:
                transaction.set_rollback(True, using=dj.alias)
                atomic.__exit__(None, None, None)

            return Side(dj, add_dj_order, lambda: atomic.__exit__(None, None, None), rollback)
        raise AssertionError(kind)

    yield open_one
    for close in reversed(closers):
        close()


@pytest.fixture
async def open_async_side(clean: str, database_url: str) -> AsyncIterator[Callable[[str], Any]]:
    """Async twin of ``open_side``: ``await open_async_side(kind)``."""
    closers: list[Callable[[], Any]] = []

    async def open_one(kind: str) -> AsyncSide:
        if kind == "psycopg-async":
            conn = await psycopg.AsyncConnection.connect(clean)
            closers.append(conn.close)

            async def add(note: str) -> None:
                await conn.execute("INSERT INTO orders (note) VALUES (%s)", (note,))

            return AsyncSide(conn, add, conn.commit, conn.rollback)
        import sqlalchemy
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        engine = create_async_engine(database_url)
        closers.append(engine.dispose)
        insert = sqlalchemy.text("INSERT INTO orders (note) VALUES (:note)")
        if kind == "sqlalchemy-async":
            sa_conn = await engine.connect()
            closers.append(sa_conn.close)
            await sa_conn.begin()

            async def add_c(note: str) -> None:
                await sa_conn.execute(insert, {"note": note})

            return AsyncSide(sa_conn, add_c, sa_conn.commit, sa_conn.rollback)
        session = AsyncSession(engine)
        closers.append(session.close)

        async def add_s(note: str) -> None:
            await session.execute(insert, {"note": note})

        return AsyncSide(session, add_s, session.commit, session.rollback)

    yield open_one
    for close in reversed(closers):
        await close()
