"""Every environment variable horsies reads or sets, by name, and how a flag is read.

Users set the first group; the library sets the second for the processes it starts.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = [
    "CHILD_DISCOVERY_LOGS",
    "CHILD_PROCESS",
    "DB_DIR",
    "DEBUG_IMPORTS",
    "DEMO_DATABASE_URL",
    "FORCE_COLOR",
    "LOG_FORMAT",
    "NO_COLOR",
    "PLAIN_ERRORS",
    "RELOAD_SUPERVISOR_PID",
    "SUPPRESS_SENDS",
    "TEST_DATABASE_URL",
    "VERBOSE",
    "flag",
]

# -- set by users ----------------------------------------------------------------------------------

PLAIN_ERRORS: Final = "HORSIES_PLAIN_ERRORS"
"""``1``: an uncaught library error prints Python's plain traceback instead of the report."""
VERBOSE: Final = "HORSIES_VERBOSE"
"""``1``: library error reports also show the Python traceback."""
FORCE_COLOR: Final = "HORSIES_FORCE_COLOR"
"""``1``: colour error reports and log levels even when the output is not a terminal."""
NO_COLOR: Final = "NO_COLOR"
"""Set (to anything): never colour (the no-color.org convention)."""
LOG_FORMAT: Final = "HORSIES_LOG_FORMAT"
"""``text`` or ``json``: the default of ``--log-format`` of ``horsies worker`` and
``horsies scheduler``."""
DEBUG_IMPORTS: Final = "HORSIES_DEBUG_IMPORTS"
"""``1``: the worker logs where it imports the app and the task modules from."""
DEMO_DATABASE_URL: Final = "HORSIES_DEMO_DATABASE_URL"
"""A database for ``horsies demo`` instead of the throw-away embedded server."""
DB_DIR: Final = "HORSIES_DB_DIR"
"""Data directory of ``horsies db start`` (default: the XDG data directory)."""
TEST_DATABASE_URL: Final = "HORSIES_TEST_DATABASE_URL"
"""A PostgreSQL server for ``horsies.testing`` (and horsies' own tests) instead of an embedded
one: the URL of a database there to run ``CREATE DATABASE`` from."""

# -- set by horsies for the processes it starts ----------------------------------------------------

SUPPRESS_SENDS: Final = "TASKLIB_SUPPRESS_SENDS"
"""``1``: every send of every app enqueues nothing (while the worker, the scheduler and
``horsies check`` import user modules). The name is the one the first release used."""
CHILD_PROCESS: Final = "HORSIES_CHILD_PROCESS"
"""``1`` in a worker's task process: quiet configuration logs, database URL checked late."""
RELOAD_SUPERVISOR_PID: Final = "HORSIES_RELOAD_SUPERVISOR_PID"
"""Pid of the ``horsies worker --reload`` process that started this worker: the worker stops, as on
SIGTERM, when that process is gone."""
CHILD_DISCOVERY_LOGS: Final = "HORSIES_CHILD_DISCOVERY_LOGS"
"""``1``: task processes log task-module discovery too (normally only the worker's main process)."""

_TRUTHY: Final = frozenset({"1", "true", "yes"})


def flag(name: str) -> bool:
    """Whether the variable ``name`` is set to ``1``, ``true`` or ``yes`` (any case)."""
    return os.environ.get(name, "").strip().lower() in _TRUTHY
