"""What a worker child is started with, shared by the three processes that take part: the worker's
main process (:mod:`horsies_worker.fork_server`), the fork server that forks the child
(:mod:`horsies_worker.fork_server_main`) and the child (:mod:`horsies_worker.child_main`).

The :class:`Bootstrap` carries the child's :class:`ChildInit` and what the main process is like
when it starts children (``sys.path``, ``sys.argv``, environment, working directory), as a new
interpreter started then would have it. The fork server takes it on before it imports the app for
every child it forks; where the server could not import the app, each child takes it on from the
first message on its pipe and imports the app itself. A child is connected to the main process by
one socket pair, wrapped in a ``multiprocessing.connection.Connection`` on both sides. The main
process watches the child's *sentinel*, a descriptor that becomes readable when the child is gone:
a pidfd on Linux 5.3 and later, which nothing the child does can hold open, else the read end of an
exit pipe whose write end only the child holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from horsies import env
from horsies.logs import LogFormat

__all__ = ["PIDFDS", "Bootstrap", "ChildInit", "child_environment"]


@dataclass(frozen=True, slots=True)
class ChildInit:
    """What a child needs to initialise itself; pickled into the child's bootstrap message."""

    locator: str
    """Canonical locator of the app (``<module>:<var>`` or ``<real file path>:<var>``)."""
    loglevel: str = "INFO"
    log_format: LogFormat = "text"
    """The worker main process's log format: children log as it does."""
    worker_id: str = ""
    """The worker's id, in every JSON record of the child."""
    task_modules: list[str] = field(default_factory=lambda: [])
    sys_path_roots: list[str] = field(default_factory=lambda: [])
    suppress_env: str | None = None
    """The parent's own ``TASKLIB_SUPPRESS_SENDS`` value, restored once the imports are done."""


def child_environment() -> dict[str, str]:
    """Environment of a new child: this process's, marked as a worker child with sends suppressed.

    Both variables hold before the child imports anything of the app: suppression must hold while
    it imports the app (a module-level ``send()`` would otherwise enqueue once per child), and
    ``HORSIES_CHILD_PROCESS`` tells the library it runs in a worker child (quiet configuration
    logs, database URL checked when the broker is first needed). The child restores the parent's
    own ``TASKLIB_SUPPRESS_SENDS`` once its imports are done.
    """
    environment = dict(os.environ)
    environment[env.CHILD_PROCESS] = "1"
    environment[env.SUPPRESS_SENDS] = "1"
    return environment


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What the main process is like when it starts children (as ``multiprocessing`` spawn's
    preparation data), and the children's :class:`ChildInit`."""

    init: ChildInit
    sys_path: list[str]
    sys_argv: list[str]
    environ: dict[str, str]
    """:func:`child_environment` of the main process."""
    cwd: str | None
    """None when the main process's working directory no longer exists."""


def _pidfds_work() -> bool:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        os.close(pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a sandbox that forbids the call
        return False
    return True


PIDFDS: Final = _pidfds_work()
"""Whether this host gives pidfds: a child that forked (a pool, a daemon) and then died is seen
at once, while its descendants may keep every pipe it had open for as long as they live."""
