"""The shared LISTEN connection: fan-out, quoting, unsubscribe, sharing, and reconnect after the
server kills its connection (re-LISTEN + reconnect callbacks)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from horsies.broker.listener import (
    NotificationListener,
    Subscription,
    acquire_listener,
    release_listener,
)


@pytest.fixture
def listener(database_conninfo: str) -> Iterator[NotificationListener]:
    lst = acquire_listener(database_conninfo)
    try:
        yield lst
    finally:
        release_listener(lst)


def notify(conninfo: str, channel: str, payload: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def collector() -> tuple[queue.Queue[tuple[str, str]], object]:
    got: queue.Queue[tuple[str, str]] = queue.Queue()
    return got, lambda channel, payload: got.put((channel, payload))


def subscribe_collecting(
    listener: NotificationListener, channel: str
) -> tuple[queue.Queue[tuple[str, str]], Subscription]:
    """Subscribe to ``channel``; the queue receives every ``(channel, payload)`` delivered."""
    got, callback = collector()
    return got, listener.subscribe(channel, callback)  # type: ignore[arg-type]


def test_subscribers_receive_notifications_of_their_channel(
    listener: NotificationListener, database_conninfo: str
) -> None:
    got_a, sub_a = subscribe_collecting(listener, "chan_a")
    got_b, sub_b = subscribe_collecting(listener, "chan_a")
    assert sub_a.active  # subscribe returns once LISTEN is confirmed
    assert sub_b.active
    notify(database_conninfo, "chan_a", "hello")
    assert got_a.get(timeout=5) == ("chan_a", "hello")
    assert got_b.get(timeout=5) == ("chan_a", "hello")
    sub_a.close()
    sub_b.close()


def test_channel_names_are_quoted(listener: NotificationListener, database_conninfo: str) -> None:
    got, cb = collector()
    sub = listener.subscribe("task_queue_Mixed.Case-1", cb)  # type: ignore[arg-type]
    notify(database_conninfo, "task_queue_Mixed.Case-1", "x")
    assert got.get(timeout=5) == ("task_queue_Mixed.Case-1", "x")
    sub.close()


def test_closed_subscription_receives_nothing(
    listener: NotificationListener, database_conninfo: str
) -> None:
    got_old, old = subscribe_collecting(listener, "gone")
    old.close()
    got_sentinel, sentinel = subscribe_collecting(listener, "sentinel")
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('gone', '1')")
        conn.execute("SELECT pg_notify('sentinel', '2')")
    # Notifications arrive in commit order: once the sentinel is in, 'gone' would have been too.
    assert got_sentinel.get(timeout=5) == ("sentinel", "2")
    assert got_old.empty()
    sentinel.close()


def test_a_failing_callback_does_not_stop_delivery(
    listener: NotificationListener, database_conninfo: str
) -> None:
    got, cb = collector()

    def broken(_channel: str, _payload: str) -> None:
        raise RuntimeError("subscriber bug")

    bad = listener.subscribe("mixed", broken)
    good = listener.subscribe("mixed", cb)  # type: ignore[arg-type]
    notify(database_conninfo, "mixed", "still delivered")
    assert got.get(timeout=5) == ("mixed", "still delivered")
    bad.close()
    good.close()


def test_one_listener_per_process_and_database(database_conninfo: str) -> None:
    first = acquire_listener(database_conninfo)
    second = acquire_listener(database_conninfo)
    try:
        assert first is second
    finally:
        release_listener(second)
    assert not first._closing  # pyright: ignore[reportPrivateUsage]
    release_listener(first)
    assert first._closing  # pyright: ignore[reportPrivateUsage]


def _listener_backend_pids(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'horsies-listener' "
            "AND datname = current_database()"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.timeout(30)
def test_reconnects_relistens_and_calls_back_after_backend_is_terminated(
    listener: NotificationListener, database_conninfo: str
) -> None:
    got, cb = collector()
    reconnected = threading.Event()
    remove = listener.add_reconnect_callback(reconnected.set)
    sub = listener.subscribe("survives", cb)  # type: ignore[arg-type]
    [pid] = _listener_backend_pids(database_conninfo)
    with psycopg.connect(database_conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    assert reconnected.wait(10), "reconnect callback not called"
    assert sub.wait_active(5)
    assert _listener_backend_pids(database_conninfo) != [pid]
    notify(database_conninfo, "survives", "after")
    assert got.get(timeout=5) == ("survives", "after")
    remove()
    sub.close()


def test_subscribe_while_disconnected_is_bounded(database_conninfo: str) -> None:
    # A listener on a database that does not exist never connects; subscribe gives up waiting.
    lst = NotificationListener(database_conninfo.replace("/horsies_t", "/missing_"))
    try:
        started = time.monotonic()
        sub = lst.subscribe("x", lambda _c, _p: None, wait_s=0.3)
        assert time.monotonic() - started < 3
        assert not sub.active
        assert not lst.connected
    finally:
        lst.close()
