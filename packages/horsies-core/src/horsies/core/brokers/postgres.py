"""Compatibility path `horsies.core.brokers.postgres` (see `horsies.core`): `PostgresBroker`."""

from __future__ import annotations

from horsies.broker import PostgresBroker

__all__ = ["PostgresBroker"]
