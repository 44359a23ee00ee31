"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import horsies.broker
import pytest
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.env import SUPPRESS_SENDS


@pytest.fixture
def app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Horsies]:
    """An app on the module's database that really sends (send suppression off); its broker is
    closed after the test. Modules that need another app define their own ``app``."""
    monkeypatch.delenv(SUPPRESS_SENDS, raising=False)
    producer = Horsies(AppConfig(broker=PostgresConfig(database_url=database_url)))
    yield producer
    producer.get_broker().close()


@pytest.fixture
def broker_construction_fails(monkeypatch: pytest.MonkeyPatch) -> str:
    """Building a ``PostgresBroker`` raises ``RuntimeError``; returns the error's message."""
    message = "no broker today"

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError(message)

    monkeypatch.setattr(horsies.broker, "PostgresBroker", explode)
    return message
