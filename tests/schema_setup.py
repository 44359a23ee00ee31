"""Bringing a test database's schema up to date, the way a broker does on first use."""

from __future__ import annotations

from horsies.broker import PostgresBroker
from horsies.config import PostgresConfig


def migrate(database_url: str) -> None:
    """Apply every migration to the database of ``database_url`` (idempotent)."""
    broker = PostgresBroker(PostgresConfig(database_url=database_url, pool_size=1))
    try:
        broker.ensure_schema_initialized_sync()
    finally:
        broker.close()
