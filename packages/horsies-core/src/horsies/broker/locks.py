"""Advisory lock keys: every cluster-wide lock horsies takes, in one place.

A key is the first 8 bytes (big-endian, signed) of the SHA-256 of a fixed name. Keys do not depend
on the database URL: advisory locks are per database already, and two spellings of one URL must
share the lock.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = [
    "CLAIM_LOCK_KEY",
    "PRUNE_LOCK_KEY",
    "REAPER_LOCK_KEY",
    "SCHEMA_LOCK_KEY",
    "advisory_key",
    "limit_lock_key",
    "schedule_lock_key",
]


def advisory_key(name: str) -> int:
    """The advisory lock key of ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEMA_LOCK_KEY: Final = advisory_key("horsies-schema")
"""Held while a migration runs, so concurrent start-ups apply each migration once."""
CLAIM_LOCK_KEY: Final = advisory_key("horsies-global")
"""Held by a claim pass that counts in-flight tasks for a cluster-wide cap."""
REAPER_LOCK_KEY: Final = advisory_key("horsies-reaper")
"""Held by the one reaper pass of the cluster at a time (tried, never waited for)."""
PRUNE_LOCK_KEY: Final = advisory_key("horsies-prune")
"""Held by one retention batch of the cluster at a time (tried, never waited for)."""
_SCHEDULE_PREFIX: Final = "horsies-schedule:"


def schedule_lock_key(schedule_name: str) -> int:
    """The key held while a scheduler runs one due schedule: two schedulers never enqueue a slot
    twice."""
    return advisory_key(_SCHEDULE_PREFIX + schedule_name)


_LIMIT_PREFIX: Final = "horsies-limit:"


def limit_lock_key(limit_name: str) -> int:
    """The key held while a claim counts and starts the tasks of a rate or concurrency limit: the
    counts of two workers' claims never overlap."""
    return advisory_key(_LIMIT_PREFIX + limit_name)
