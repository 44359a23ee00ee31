"""Scenario 8d: huge payloads and ``AppConfig.max_payload_bytes``.

A 50 MB argument is refused at send time (default limit 16 MiB) with an error naming its size and
the limit, and nothing is written; a configured limit is obeyed exactly (UTF-8 bytes of the
encoded args and kwargs together, also for ``send_many``, ``send_async`` and ``schedule``); the
worker applies the same limit to results, failing a task whose result is too big with
``WORKER_SERIALIZATION_ERROR`` (size and limit in the message) and carrying on; ``None`` disables
the limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from horsies.app import Horsies
from horsies.codec import PayloadTooLargeError
from horsies.config import DEFAULT_MAX_PAYLOAD_BYTES, AppConfig, PostgresConfig
from horsies.results import LibraryErrorCode
from horsies.tasks.handle import TaskHandle
from pydantic import ValidationError

from tests.reliability.apps.ledger_app import create_app
from tests.reliability.harness import LedgerWorker
from tests.reliability.hostile import SOAK, module_worker_fixture
from tests.reliability.ledger import compare

pytestmark = pytest.mark.timeout(180)

LIMIT = 64 * 1024
"""The limit of the module's worker and limited producer."""
LIMITED = {"RELIABILITY_MAX_PAYLOAD_BYTES": str(LIMIT)}
RESULT_TIMEOUT_MS = 60_000
MB = 1_000_000


worker = module_worker_fixture("--processes", "1", env=LIMITED)


@pytest.fixture(scope="module")
def apps(database_url: str) -> Iterator[dict[str, Horsies]]:
    """Producers: ``default`` (16 MiB), ``limited`` (64 KiB, as the worker), ``unlimited``."""
    made = {
        "default": create_app(database_url, {}),
        "limited": create_app(database_url, LIMITED),
        "unlimited": create_app(database_url, {"RELIABILITY_MAX_PAYLOAD_BYTES": "none"}),
    }
    yield made
    for app in made.values():
        app.get_broker().close()


def _rows(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM horsies_tasks").fetchone()
    assert row is not None
    return int(row[0])


def _assert_too_large(
    handle: TaskHandle[Any], size: int, limit: int, verb: str = "enqueue"
) -> None:
    """The documented send failure, naming the encoded size and the limit."""
    assert handle.task_id == "<error>"
    error = handle.get().unwrap_err()
    assert error.error_code == LibraryErrorCode.SEND_REFUSED
    assert isinstance(error.exception, PayloadTooLargeError)
    assert (error.exception.size, error.exception.limit) == (size, limit)
    assert error.data["exception_type"] == "PayloadTooLargeError"
    message = error.message or ""
    assert message.startswith(f"Failed to {verb} task "), message
    assert f"task arguments: {size:,} bytes once encoded" in message, message
    assert f"above the limit of {limit:,} bytes (AppConfig.max_payload_bytes)" in message, message


async def test_a_50_mb_argument_is_refused_at_send_with_size_and_limit(
    apps: dict[str, Horsies], database_conninfo: str
) -> None:
    """Default config: 50 MB positional, keyword and batched arguments are refused before any
    row is written, by ``send``, ``send_async``, ``schedule`` and ``send_many``."""
    echo = apps["default"].tasks["rel.echo"]
    before = _rows(database_conninfo)
    blob = "x" * (50 * MB)
    key = "k"
    size = len(f'["{key}","{blob}"]')
    _assert_too_large(echo.send(key, blob), size, DEFAULT_MAX_PAYLOAD_BYTES)
    _assert_too_large(await echo.send_async(key, blob), size, DEFAULT_MAX_PAYLOAD_BYTES)
    _assert_too_large(echo.schedule(5, key, blob), size, DEFAULT_MAX_PAYLOAD_BYTES, "schedule")
    kwargs_size = len(f'["{key}"]') + len(f'{{"v":"{blob}"}}')
    _assert_too_large(echo.send(key, v=blob), kwargs_size, DEFAULT_MAX_PAYLOAD_BYTES)
    handles = echo.send_many([("small", 1), (key, blob), {"key": "other"}])
    assert len(handles) == 3
    for handle in handles:
        _assert_too_large(handle, size, DEFAULT_MAX_PAYLOAD_BYTES)
    assert _rows(database_conninfo) == before, "a refused payload was written"
    limit = DEFAULT_MAX_PAYLOAD_BYTES
    print(f"\n[payload] 50 MB argument refused at send: size={size:,} limit={limit:,}")


def test_a_configured_limit_is_obeyed_for_arguments_and_results(
    worker: LedgerWorker, apps: dict[str, Horsies], database_conninfo: str
) -> None:
    """64 KiB limit on producer and worker: arguments just under it round-trip, just over it are
    refused (bytes, not characters: multi-byte text counts fully; args and kwargs add up); a
    result over it fails that task with WORKER_SERIALIZATION_ERROR and the worker carries on;
    an unlimited producer's 1 MB argument is stored, and this worker refuses to echo it back."""
    limited = apps["limited"]
    echo, blob = limited.tasks["rel.echo"], limited.tasks["rel.blob"]
    # A 64-character key: an echoed argument's result is then smaller than the argument itself.
    key = "k" * 64
    overhead = len(f'["{key}",""]')
    fits = "x" * (LIMIT - overhead)
    assert len(f'["{key}","{fits}"]') == LIMIT
    refused = [
        ("one byte over", echo.send(key, fits + "x"), LIMIT + 1),
        ("multi-byte", echo.send(key, "€" * (LIMIT // 3)), overhead + 3 * (LIMIT // 3)),
        (
            "args + kwargs",
            echo.send(key, "x" * (LIMIT // 2), v="y" * (LIMIT // 2)),
            overhead + LIMIT // 2 + len('{"v":""}') + LIMIT // 2,
        ),
    ]
    for what, handle, size in refused:
        assert handle.task_id == "<error>", what
        _assert_too_large(handle, size, LIMIT)

    keys = {name: uuid.uuid4().hex * 2 for name in ("fits", "accents", "small_result", "big")}
    accents = "é" * ((LIMIT - overhead) // 2)
    sent = {
        keys["fits"]: echo.send(keys["fits"], fits),
        keys["accents"]: echo.send(keys["accents"], accents),
        keys["small_result"]: blob.send(keys["small_result"], LIMIT // 2),
        keys["big"]: blob.send(keys["big"], LIMIT + 1),
    }
    assert all(handle.task_id != "<error>" for handle in sent.values())
    assert sent[keys["fits"]].get(timeout_ms=RESULT_TIMEOUT_MS).unwrap() == [[fits], {}]
    assert sent[keys["accents"]].get(timeout_ms=RESULT_TIMEOUT_MS).unwrap() == [[accents], {}]
    assert sent[keys["small_result"]].get(timeout_ms=RESULT_TIMEOUT_MS).unwrap() == "x" * (
        LIMIT // 2
    )
    error = sent[keys["big"]].get(timeout_ms=RESULT_TIMEOUT_MS).unwrap_err()
    result_size = len(f'{{"__task_result__":true,"ok":"{"x" * (LIMIT + 1)}","err":null}}')
    assert error.error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR, error
    assert error.data == {"task_name": "rel.blob", "size": result_size, "limit": LIMIT}
    assert f"task result: {result_size:,} bytes once encoded" in (error.message or ""), error
    assert f"above the limit of {LIMIT:,} bytes" in (error.message or ""), error

    # No limit on this producer: the row is written; this worker will not store the echo.
    unlimited_key = uuid.uuid4().hex
    big_arg = "u" * (MB * (20 if SOAK else 1))
    unlimited = apps["unlimited"].tasks["rel.echo"].send(unlimited_key, big_arg)
    assert unlimited.task_id != "<error>", unlimited.get().err
    error = unlimited.get(timeout_ms=RESULT_TIMEOUT_MS).unwrap_err()
    assert error.error_code == LibraryErrorCode.WORKER_SERIALIZATION_ERROR, error
    sent[unlimited_key] = unlimited

    # The worker carries on.
    later = echo.send(uuid.uuid4().hex, "after")
    assert later.get(timeout_ms=RESULT_TIMEOUT_MS).is_ok()
    ids = {key: handle.task_id for key, handle in sent.items()}
    report = compare(database_conninfo, ids)
    report.assert_nothing_lost_or_duplicated()
    assert report.statuses == {"COMPLETED": 3, "FAILED": 2}, report.summary()
    assert report.error_codes == {"WORKER_SERIALIZATION_ERROR": 2}, report.summary()
    assert worker.alive, worker.output()
    print(
        f"\n[payload] limit={LIMIT:,}: refused_at_send={len(refused)} completed=3 "
        f"result_too_big_failed=2 lost={report.lost} duplicated={report.duplicated}"
    )


def test_max_payload_bytes_is_validated_and_described() -> None:
    """The option: default 16 MiB, None = unlimited, below 1024 refused (a likely unit slip);
    ``describe()`` (what ``log_config`` logs) shows it."""
    broker = PostgresConfig(database_url="postgresql+psycopg://u@localhost/db")
    assert AppConfig(broker=broker).max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES == 16 * 1024**2
    assert "max_payload_bytes: 16,777,216" in AppConfig(broker=broker).describe()
    assert (
        "max_payload_bytes: unlimited"
        in AppConfig(broker=broker, max_payload_bytes=None).describe()
    )
    assert AppConfig(broker=broker, max_payload_bytes=1024).max_payload_bytes == 1024
    for bad in (0, -1, 1023, True, "lots"):
        with pytest.raises(ValidationError, match="max_payload_bytes"):
            AppConfig(broker=broker, max_payload_bytes=bad)  # pyright: ignore[reportArgumentType]
