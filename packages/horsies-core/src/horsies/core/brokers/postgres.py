"""Compatibility path `horsies.core.brokers.postgres` (decision D43): `PostgresBroker`."""

from __future__ import annotations

from horsies.broker import PostgresBroker

__all__ = ["PostgresBroker"]
