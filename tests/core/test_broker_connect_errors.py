"""Connection failures that waiting cannot heal fail at once; the ones that may heal are ridden out.

A wrong user, database or host used to hang every call for ``pool_timeout`` (30 s by default)
before an error that only said the database was unreachable. Now the first failed attempt of
such a kind raises a `BrokerError` that says what is wrong and which URL (password masked) was
used; a server that is down is still retried until ``pool_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from horsies.broker import BrokerError, PostgresBroker
from horsies.config import PostgresConfig

FAST_S = 5.0
"""Well below the 30 s pool_timeout the brokers here are given."""


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}:s3cret-Pw@{netloc.split('@', 1)[-1]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def _send_error(url: str, *, pool_timeout: int) -> tuple[BrokerError, float]:
    """The error of one send to ``url``, and how long it took to come."""
    broker = PostgresBroker(PostgresConfig(database_url=url, pool_timeout=pool_timeout))
    try:
        started = time.monotonic()
        with pytest.raises(BrokerError) as raised:
            broker.enqueue("t")
        return raised.value, time.monotonic() - started
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("kind", "meaning"),
    [
        ("database", "the database does not exist"),
        ("user", "the user (role) does not exist"),
        ("host", "the host name does not resolve"),
    ],
)
def test_a_wrong_database_url_fails_at_once_saying_why(
    database_url: str, kind: str, meaning: str
) -> None:
    url = {
        "database": _with(database_url, database="no_such_database"),
        "user": _with(database_url, user="no_such_role"),
        "host": "postgresql+psycopg://app:s3cret-Pw@no-such-host.invalid:5432/app",
    }[kind]
    error, elapsed = _send_error(url, pool_timeout=30)
    message = str(error)
    assert elapsed < FAST_S, elapsed
    assert meaning in message
    assert "waiting will not help" in message
    assert "s3cret-Pw" not in message
    assert not error.unreachable  # not worth retrying: the caller is told so


def test_the_async_path_fails_at_once_too(database_url: str) -> None:
    url = _with(database_url, database="no_such_database")
    broker = PostgresBroker(PostgresConfig(database_url=url, pool_timeout=30))

    async def send() -> None:
        try:
            await broker.enqueue_async("t")
        finally:
            await broker.close_async()

    started = time.monotonic()
    with pytest.raises(BrokerError, match="the database does not exist"):
        asyncio.run(send())
    assert time.monotonic() - started < FAST_S


def test_a_server_that_is_down_is_still_waited_for() -> None:
    error, elapsed = _send_error("postgresql+psycopg://u:p@127.0.0.1:1/x", pool_timeout=2)
    assert error.unreachable
    assert elapsed >= 1.5, elapsed  # retried until pool_timeout, as a restart may end soon
