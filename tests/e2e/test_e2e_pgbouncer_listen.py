"""LISTEN through a real PgBouncer, on horsies' own listener (the connection every waiter and worker
of a process shares).

In transaction pooling the LISTEN is accepted, and the server connection that ran it goes back to
the pool: notifications meant for it are dropped while it is idle, or handed to whichever client
it serves then. In session pooling the client keeps its server connection and hears everything.
PgBouncer can run one database in both modes (a second entry with its own ``pool_mode``):
notifications are the server's, so a send through the transaction entry wakes a listener on the
session entry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from apps.pooled import create_app
from horsies.broker import channels
from horsies.broker.listener import NotificationListener
from pgbouncer_harness import PgBouncerBinary, Pool, StartBouncer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHANNEL = "pgbouncer_probe"
HEARD_S = 15.0
"""How long a notification may take to arrive where it does arrive (a busy machine)."""
SILENCE_S = 2.0
"""How long a listener that cannot hear is given after a direct listener heard the same
notification."""


class Ear:
    """The payloads a listener heard on one channel."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.heard = threading.Event()

    def __call__(self, _channel: str, payload: str) -> None:
        self.payloads.append(payload)
        self.heard.set()


@contextmanager
def listening(conninfo: str, channel: str) -> Iterator[Ear]:
    """A horsies listener on ``conninfo``, subscribed to ``channel`` (LISTEN confirmed)."""
    listener = NotificationListener(conninfo)
    try:
        ear = Ear()
        subscription = listener.subscribe(channel, ear, wait_s=HEARD_S)
        assert subscription.active, "the server accepted LISTEN"
        yield ear
    finally:
        listener.close()


def _notify(conninfo: str, payload: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def test_listen_through_transaction_pooling_hears_nothing(
    pgbouncer: PgBouncerBinary,
    start_bouncer: StartBouncer,
    database_name: str,
    database_conninfo: str,
) -> None:
    bouncer = start_bouncer(pool_size=2, settings=pgbouncer.transaction_settings)
    with (
        listening(bouncer.conninfo(database_name), CHANNEL) as pooled,
        listening(database_conninfo, CHANNEL) as direct,
    ):
        _notify(database_conninfo, "one")
        assert direct.heard.wait(HEARD_S), "a listener on PostgreSQL itself hears it"
        assert not pooled.heard.wait(SILENCE_S)
        # Nor when the notification goes through the pooler too.
        _notify(bouncer.conninfo(database_name), "two")
        assert not pooled.heard.wait(SILENCE_S)
        assert pooled.payloads == []


def test_listen_through_session_pooling_hears_notifications(
    start_bouncer: StartBouncer, database_name: str, database_conninfo: str
) -> None:
    bouncer = start_bouncer(pool_mode="session", pool_size=4)
    with listening(bouncer.conninfo(database_name), CHANNEL) as pooled:
        _notify(database_conninfo, "one")
        assert pooled.heard.wait(HEARD_S)
        assert pooled.payloads == ["one"]


def test_a_send_through_transaction_pooling_wakes_a_listener_on_a_session_entry(
    pgbouncer: PgBouncerBinary, start_bouncer: StartBouncer, database_name: str
) -> None:
    session_alias = f"{database_name}_session"
    bouncer = start_bouncer(
        pool_size=4,
        pools=(Pool(session_alias, database_name, "session"),),
        settings=pgbouncer.transaction_settings,
    )
    producer = create_app(bouncer.url(database_name))
    try:
        with listening(bouncer.conninfo(session_alias), channels.TASK_NEW) as worker_side:
            handle = producer.tasks["pooled.add"].send(1, 2)
            assert worker_side.heard.wait(HEARD_S)
            assert worker_side.payloads == [handle.task_id]
    finally:
        producer.get_broker().close()
