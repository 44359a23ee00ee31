"""Processes a dead child left running: what its tasks started (a ``multiprocessing`` pool, a
forked helper, a daemon) and did not stop.

Children run in the worker's process group, and so does whatever their tasks start unless it
moves to a session of its own. Once a child has died, its descendants are re-parented to init (or
to a subreaper) and show up as members of the group whose parent is outside it. The worker reports
them and leaves them alone: they are the app's processes, and ending them is the app's decision.
"""

from __future__ import annotations

import os
from collections.abc import Collection

import psutil

__all__ = ["orphaned_processes"]


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:  # gone meanwhile
        return None


def orphaned_processes(ignored: Collection[int] = ()) -> list[int]:
    """Pids of this process group's members whose parent is outside the group, except this
    process, its own ancestors (a launcher such as ``uv run`` may lead the group) and
    ``ignored`` (children known dead: orphaned only because their fork server died first)."""
    group = os.getpgrp()
    me = psutil.Process()
    skipped = {me.pid, *ignored, *(parent.pid for parent in me.parents())}
    members: dict[int, int] = {}
    for proc in psutil.process_iter(["pid", "ppid"]):
        pid: int = proc.info["pid"]
        if pid not in skipped and _group_of(pid) == group:
            members[pid] = proc.info["ppid"]
    return sorted(pid for pid, ppid in members.items() if ppid != me.pid and ppid not in members)
