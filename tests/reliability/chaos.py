"""A bounded fault loop: random worker kills, freezes and connection cuts while a scenario runs.

:class:`Chaos` runs in a background thread between :meth:`Chaos.start` and :meth:`Chaos.stop` (or
as a context manager). At seeded random moments (:class:`ChaosPlan`) it

- **kills** one live worker: SIGKILL to its whole process group (``LedgerWorker.kill_group``),
  then starts a replacement and measures the **recovery time**: from the kill until no task is
  still CLAIMED or RUNNING for the dead worker (requeued, failed or retried by a surviving
  worker's reaper). The next fault comes only once the replacement is ready, so the cluster never
  loses every worker at once;
- **freezes** one live worker: SIGSTOP to its whole process group for longer than the stale
  thresholds (``freeze_s``), so the other workers' reapers fail or retry what it runs and requeue
  what it claimed, then SIGCONT: its children finish their (replaced) attempts and its main process
  tries to write them, which must change nothing;
- **cuts** connections: ``pg_terminate_backend`` on every backend of the database whose
  ``application_name`` is one of the plan's (by default the workers' pools and listeners, and any
  horsies producer); the victims must reconnect by themselves.

Faults never overlap each other, and the loop stops after making ``max_kills`` kills and
``max_cuts`` cuts (targeted kills made with :meth:`Chaos.kill` are not counted there) or when
stopped;
:class:`ChaosReport` holds the counts and recovery times for the scenario's summary line.
An error inside the loop (a replacement that never gets ready, a recovery that never happens) ends
the loop and is raised again by :meth:`Chaos.stop`.
"""

from __future__ import annotations

import math
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from tests.reliability.faults import terminate_backends
from tests.reliability.harness import LedgerWorker
from tests.reliability.workload import wait_released, worker_id

__all__ = ["Chaos", "ChaosPlan", "ChaosReport"]

RECOVERY_TIMEOUT_S = 90.0
"""Bound on one recovery (2 s thresholds + reaper interval + a very generous slack for the shared
machine)."""


@dataclass(frozen=True)
class ChaosPlan:
    """When faults happen. Pauses between faults of one kind are drawn uniformly from the
    ``(low, high)`` ranges (seconds) with ``random.Random(seed)``; None disables that kind."""

    seed: int
    kill_every: tuple[float, float] | None = (3.0, 6.0)
    cut_every: tuple[float, float] | None = None
    freeze_every: tuple[float, float] | None = None
    freeze_s: tuple[float, float] = (2.5, 4.0)
    """How long a freeze lasts: above the ledger app's 2 s stale thresholds."""
    max_kills: int | None = None
    max_cuts: int | None = None
    cut_application_names: tuple[str, ...] = ("horsies", "horsies-listener")


@dataclass
class ChaosReport:
    """What the loop did."""

    kills: int = 0
    restarts: int = 0
    freezes: int = 0
    cuts: int = 0
    backends_cut: int = 0
    recovery_s: list[float] = field(default_factory=list[float])
    """One entry per kill: seconds until the dead worker's tasks were all recovered."""
    killed_pids: list[int] = field(default_factory=list[int])
    """Main pids of the killed workers (the ledger's ``worker_pid``)."""
    killed_ids: list[str] = field(default_factory=list[str])
    """Worker ids of the killed workers (``claimed_by_worker_id`` of their tasks)."""

    def summary(self) -> str:
        recovery = (
            f"recovery_s max={max(self.recovery_s):.1f} "
            f"mean={statistics.fmean(self.recovery_s):.1f}"
            if self.recovery_s
            else "recovery_s -"
        )
        return (
            f"kills={self.kills} restarts={self.restarts} freezes={self.freezes} "
            f"cuts={self.cuts} (backends={self.backends_cut}) {recovery}"
        )


class Chaos:
    """The fault loop over ``workers`` (kept current: killed ones leave, replacements join);
    ``spawn()`` starts a replacement worker (it may return before the worker is ready)."""

    def __init__(
        self,
        conninfo: str,
        workers: Sequence[LedgerWorker],
        spawn: Callable[[], LedgerWorker],
        plan: ChaosPlan,
    ) -> None:
        self.conninfo = conninfo
        self.workers = list(workers)
        self.report = ChaosReport()
        self._spawn = spawn
        self._plan = plan
        self._rng = random.Random(plan.seed)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> Chaos:
        self._thread.start()
        return self

    def stop(self, timeout: float = RECOVERY_TIMEOUT_S + 90.0) -> ChaosReport:
        """Stop the loop (a fault in progress finishes first, bounded) and return the report."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the chaos loop did not stop within {timeout}s")
        if self._error is not None:
            raise AssertionError(f"the chaos loop failed: {self._error!r}") from self._error
        return self.report

    def __enter__(self) -> Chaos:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
        else:  # the scenario failed already: stop quietly, its error is the one to see
            self._stop.set()
            self._thread.join(RECOVERY_TIMEOUT_S + 90.0)

    # -- the loop --------------------------------------------------------------------------------

    def _pause(self, every: tuple[float, float] | None, done: int, limit: int | None) -> float:
        """Monotonic time of the next fault of one kind (inf when disabled or exhausted)."""
        if every is None or (limit is not None and done >= limit):
            return math.inf
        return time.monotonic() + self._rng.uniform(*every)

    def _run(self) -> None:
        plan = self._plan
        kills = cuts = 0
        next_kill = self._pause(plan.kill_every, kills, plan.max_kills)
        next_cut = self._pause(plan.cut_every, cuts, plan.max_cuts)
        next_freeze = self._pause(plan.freeze_every, 0, None)
        try:
            while not math.isinf(due := min(next_kill, next_cut, next_freeze)):
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                if next_kill == due:
                    self.kill()
                    kills += 1
                    next_kill = self._pause(plan.kill_every, kills, plan.max_kills)
                elif next_freeze == due:
                    self._freeze()
                    next_freeze = self._pause(plan.freeze_every, 0, None)
                else:
                    self._cut()
                    cuts += 1
                    next_cut = self._pause(plan.cut_every, cuts, plan.max_cuts)
        except BaseException as exc:
            self._error = exc

    def kill(self, victim: LedgerWorker | None = None) -> None:
        """Kill ``victim`` (default: a random live worker), start its replacement, wait for the
        recovery of its tasks (recorded) and for the replacement to be ready. The loop calls it;
        a test may call it for a targeted kill while the loop is not running."""
        if victim is None:
            victim = self._rng.choice(self.workers)
        dead = worker_id(victim)
        started = time.monotonic()
        victim.kill_group()
        self.workers.remove(victim)
        self.report.kills += 1
        self.report.killed_pids.append(victim.pid)
        self.report.killed_ids.append(dead)
        replacement = self._spawn()
        self.workers.append(replacement)
        wait_released(self.conninfo, dead, RECOVERY_TIMEOUT_S)
        self.report.recovery_s.append(time.monotonic() - started)
        replacement.wait_ready()
        self.report.restarts += 1

    def _freeze(self) -> None:
        """Stop a random live worker's whole process group past the stale thresholds, then let
        it go on (the freeze is a duration, not a synchronisation)."""
        victim = self._rng.choice(self.workers)
        os.killpg(victim.pid, signal.SIGSTOP)
        try:
            self._stop.wait(self._rng.uniform(*self._plan.freeze_s))
        finally:
            os.killpg(victim.pid, signal.SIGCONT)
        self.report.freezes += 1

    def _cut(self) -> None:
        names = self._plan.cut_application_names
        self.report.backends_cut += sum(
            terminate_backends(self.conninfo, application_name=name) for name in names
        )
        self.report.cuts += 1
