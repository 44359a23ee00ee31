"""The scheduler service: an asyncio loop that enqueues scheduled tasks when they come due.

Follow one run through it: start-up validates the enabled schedules (:mod:`.validation`) and
creates or resets their ``horsies_schedule_state`` rows (:meth:`ScheduleStore.initialize`) → each
check reads the rows and the database clock in one statement → every due schedule is run in its own
transaction (:meth:`ScheduleStore.run_due`: advisory lock, re-read, insert the task rows, advance
``next_run_at``; all or nothing) → the loop sleeps until the earliest next run, at most
``check_interval_seconds`` (:class:`~.calculator.WakePlan`) → SIGTERM/SIGINT end the sleep at once
and the loop exits after the check in progress.

Several schedulers may run against one database: a slot is enqueued exactly once (see
`horsies.broker.schedules`). A restarted scheduler resumes from the stored next runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from horsies.broker.postgres import PostgresBroker
from horsies.broker.schedules import DueStatus, ScheduleRaceLost
from horsies.errors import ConfigurationError, ErrorCode
from horsies.locator import locate_app, sends_suppressed_by_env
from horsies.logs import configure_logging, get_logger, set_log_context
from horsies.stop_signals import stop_on_signals

from horsies_scheduler.calculator import WakePlan, due_names, error_backoff
from horsies_scheduler.state import ScheduleStore
from horsies_scheduler.validation import resolve_schedules

if TYPE_CHECKING:
    from horsies.app import Horsies
    from horsies.broker.schedules import DueResult, InitReport, ScheduleTarget
    from horsies.config.schedules import ScheduleConfig

__all__ = ["Scheduler", "prepare_scheduler", "run_scheduler"]

logger = get_logger("scheduler")

# The service runs one statement at a time: one pooled connection is all it needs.
_POOL_SIZE: Final = 1
_POOL_OVERFLOW: Final = 1


def _iso(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).isoformat(timespec="milliseconds")


def schedule_config_of(app: Horsies) -> ScheduleConfig:
    """``app.config.schedule``, or ConfigurationError (E205) when the app has none."""
    config = app.config.schedule
    if config is None:
        raise (
            ConfigurationError(
                "the app has no schedule configuration", code=ErrorCode.CONFIG_INVALID_SCHEDULE
            )
            .with_location(None)
            .with_help(
                "attach one: AppConfig(..., schedule=ScheduleConfig(schedules=[TaskSchedule(...)]))"
            )
        )
    return config


class Scheduler:
    """One scheduler instance: validates the schedules, keeps their state, enqueues due runs.

    Prefer :func:`run_scheduler` (or ``horsies scheduler``), which locates the app and imports its
    task modules first; use the class directly to embed a scheduler in your own event loop
    (``await Scheduler(app).run()``; stop it with :meth:`request_stop`).

    ``broker`` None gives the scheduler a broker of its own on the app's database (a one-connection
    pool), closed when :meth:`run` returns; a broker passed in is left open.

    Ownership: every mutable attribute is read and written on the event-loop thread; signal handlers
    and :meth:`request_stop_threadsafe` hop onto the loop first.
    """

    def __init__(
        self,
        app: Horsies,
        *,
        broker: PostgresBroker | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.app = app
        self.config = schedule_config_of(app)
        self._owns_broker = broker is None
        if broker is None:
            pool = {"pool_size": _POOL_SIZE, "max_overflow": _POOL_OVERFLOW}
            broker = PostgresBroker(app.config.broker.model_copy(update=pool), app=app)
        self.broker: PostgresBroker = broker
        self.store = ScheduleStore(broker)
        self.targets: list[ScheduleTarget] = []
        self.tasks_enqueued = 0
        """Task rows this scheduler has enqueued so far (all schedules)."""
        self.ready: asyncio.Event | None = None
        """Set once start-up is done (schedules validated, state initialised); for embedding."""
        self._install_signal_handlers = install_signal_handlers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._stop_requested_early = False

    # -- control -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the check in progress (the wait between checks ends at once); a second call
        cancels a check that hangs (for example on an unreachable database).

        Call it on the scheduler's event loop (signal handlers do); from another thread use
        :meth:`request_stop_threadsafe`.
        """
        stop = self._stop
        if stop is None:
            self._stop_requested_early = True
            return
        if not stop.is_set():
            logger.info("Stop requested: finishing the current check")
            stop.set()
        elif self._main is not None and not self._main.done():
            logger.warning("Second stop request: cancelling the current check")
            self._main.cancel()

    def request_stop_threadsafe(self) -> None:
        """Like :meth:`request_stop`, callable from any thread."""
        loop = self._loop
        if loop is None:
            self._stop_requested_early = True
            return
        loop.call_soon_threadsafe(self.request_stop)

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop is not None and self._stop.is_set()

    # -- main entry --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start (schema, validation, state), check until a stop is requested, close the broker.

        Raises the start-up errors: `NotRegistered` (E300) / `ConfigurationError` (E205) from
        validation (several together as `MultipleValidationErrors`), `BrokerError` when the
        database cannot be reached at start-up. Once running, errors are logged and retried.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self._main = asyncio.current_task()
        if self._stop_requested_early:
            self._stop.set()
        try:
            with stop_on_signals(loop, self.request_stop, install=self._install_signal_handlers):
                await self._start()
                self.ready.set()
                await self._serve()
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # Cancelled by a second stop request: a requested stop, not an error.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            if self._owns_broker:
                with contextlib.suppress(Exception):
                    await self.broker.close_async()
            if self.ready.is_set():
                logger.info("Scheduler stopped (%d task(s) enqueued)", self.tasks_enqueued)

    # -- start-up ----------------------------------------------------------------------------------

    async def _start(self) -> None:
        # Validation needs no database: its errors are reported even when the database is down.
        self.targets = resolve_schedules(self.app, self.config.schedules)
        self._warn_expired_tasks()
        await self.broker.ensure_schema_initialized()
        upcoming: datetime | None = None
        if self.targets:
            report = await self.store.initialize(self.targets)
            self._log_initialization(report)
            planned = [*report.created.values(), *report.reset.values(), *report.kept.values()]
            upcoming = min((at for at in planned if at is not None), default=None)
        else:
            logger.warning("No enabled schedules: nothing will be enqueued")
        logger.info(
            "Scheduler ready: %d schedule(s), checking at least every %ss; next run %s",
            len(self.targets),
            self.config.check_interval_seconds,
            _iso(upcoming),
        )

    def _warn_expired_tasks(self) -> None:
        now = datetime.now(UTC)
        for target in self.targets:
            good_until = target.task.good_until
            if good_until is not None and good_until <= now:
                logger.warning(
                    "schedule_task_expired: schedule '%s': task %s has good_until %s in the past; "
                    "its scheduled runs will be enqueued but never claimed",
                    target.name,
                    target.task.task_name,
                    _iso(good_until),
                )

    def _log_initialization(self, report: InitReport) -> None:
        for name, at in report.created.items():
            logger.info("schedule_created: '%s': first run at %s", name, _iso(at))
        for name, at in report.reset.items():
            logger.warning(
                "schedule_config_changed: '%s': pattern or timezone changed (or no next run was "
                "stored); next run recalculated to %s, missed runs are not caught up",
                name,
                _iso(at),
            )
        for name, at in report.kept.items():
            logger.info("schedule_resumed: '%s': next run at %s", name, _iso(at))

    # -- the loop ----------------------------------------------------------------------------------

    async def _serve(self) -> None:
        assert self._stop is not None
        interval = float(self.config.check_interval_seconds)
        failures = 0
        while not self._stop.is_set():
            try:
                delay = await self.check()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = error_backoff(failures, interval)
                logger.error("schedule_check_failed: %s (next check in %.1fs)", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def check(self) -> float:
        """One check: run every due schedule; return the seconds to wait before the next check.

        Errors of one schedule are logged and it is retried on the next check; an error reading
        the state rows propagates.
        """
        plan = WakePlan(self.config.check_interval_seconds, time.monotonic())
        if not self.targets:
            return plan.delay(time.monotonic())
        by_name = {target.name: target for target in self.targets}
        snapshot = await self.store.load(list(by_name))
        received = time.monotonic()
        due = due_names(list(by_name), snapshot.states, snapshot.now)
        for name, state in snapshot.states.items():
            if name not in due:
                plan.add(state.next_run_at, snapshot.now, received)
        for name in due:
            result = await self._run_schedule(by_name[name])
            if result is None:
                plan.add(None, snapshot.now, received)
            else:
                plan.add(result.next_run_at, result.now, time.monotonic())
        return plan.delay(time.monotonic())

    async def _run_schedule(self, target: ScheduleTarget) -> DueResult | None:
        """Run one due schedule; repeats while a long catch-up still has missed slots (each batch
        its own transaction). None after an error (logged)."""
        while True:
            try:
                result = await self.store.run_due(target)
            except ScheduleRaceLost as exc:
                logger.info("schedule_run_lost: %s", exc)
                return None
            except Exception as exc:
                logger.error(
                    "schedule_run_failed: '%s': %s (rolled back; retried at the next check)",
                    target.name,
                    exc,
                )
                return None
            self._log_result(target, result)
            more = (
                result.status is DueStatus.RAN
                and result.next_run_at is not None
                and result.next_run_at <= result.now
            )
            if not more or self.stopping:
                return result

    def _log_result(self, target: ScheduleTarget, result: DueResult) -> None:
        status = result.status
        if status is DueStatus.RAN:
            self.tasks_enqueued += len(result.task_ids)
            if len(result.task_ids) == 1:
                logger.info(
                    "schedule_run: '%s' enqueued %s task %s on queue %s (slot %s); next run %s",
                    target.name,
                    target.task.task_name,
                    result.task_ids[0],
                    target.task.queue_name,
                    _iso(result.slots[0]),
                    _iso(result.next_run_at),
                )
            else:
                logger.info(
                    "schedule_catch_up: '%s' enqueued %d %s tasks for missed slots %s .. %s; "
                    "next run %s",
                    target.name,
                    len(result.task_ids),
                    target.task.task_name,
                    _iso(result.slots[0]),
                    _iso(result.slots[-1]),
                    _iso(result.next_run_at),
                )
        elif status is DueStatus.CREATED:
            logger.info(
                "schedule_created: '%s': state row was missing; first run at %s",
                target.name,
                _iso(result.next_run_at),
            )
        elif status is DueStatus.BUSY:
            logger.debug("schedule_busy: '%s' is being run by another scheduler", target.name)
        else:
            logger.debug("schedule_not_due: '%s' (next run %s)", target.name, result.next_run_at)


# --------------------------------------------------------------------------------------------------
# Programmatic entry point


def import_task_modules_logged(app: Horsies) -> list[str]:
    """Import the app's discovered task modules with sends suppressed, so a module-level `send()`
    enqueues nothing. A module that fails to import is logged as a warning and skipped: the
    schedules of its tasks then fail validation (E300) with a precise message. Returns what was
    imported."""

    imported: list[str] = []
    with sends_suppressed_by_env():
        for entry in app.get_discovered_task_modules():
            try:
                imported.extend(app.import_task_modules([entry]))
            except Exception as exc:
                logger.warning(
                    "Failed to import task module %s: %s: %s", entry, type(exc).__name__, exc
                )
    if not app.tasks:
        logger.warning(
            "No tasks registered: define tasks in the app module or list their modules with "
            "app.discover_tasks([...])"
        )
    return imported


def prepare_scheduler(app_or_locator: Horsies | str) -> Horsies:
    """Locate the app (sends suppressed), give it the scheduler role, import its task modules.

    Raises what the locator raises, and ConfigurationError (E205) when the app has no schedule
    configuration.
    """
    app = locate_app(app_or_locator).app if isinstance(app_or_locator, str) else app_or_locator
    app.set_role("scheduler")
    schedule_config_of(app)
    import_task_modules_logged(app)
    return app


def run_scheduler(
    app_or_locator: Horsies | str,
    *,
    loglevel: str = "INFO",
    log_format: str = "text",
    install_signal_handlers: bool = True,
    configure_logs: bool = True,
    banner: Callable[[Horsies], None] | None = None,
) -> None:
    """Run a scheduler in this process until SIGTERM/SIGINT, then return.

    ``app_or_locator`` is a :class:`~horsies.app.Horsies` or a locator string
    (``"myapp.instance:app"``, ``"path/to/app.py:app"``, ...). Prefer ``horsies scheduler`` for
    deployments. With ``ScheduleConfig(enabled=False)`` it logs a warning and returns at once.
    ``loglevel`` and ``log_format`` (``"text"`` or ``"json"``) are those of ``--loglevel`` and
    ``--log-format``; ``configure_logs=False`` leaves logging as the caller set it up.

    Raises the locator's errors, ConfigurationError (E205) when the app has no schedule
    configuration, and the start-up errors of :meth:`Scheduler.run`.
    """
    if configure_logs:
        configure_logging(loglevel, log_format=log_format)
    set_log_context(role="scheduler")
    logger.info("Starting horsies scheduler")
    app = prepare_scheduler(app_or_locator)
    config = schedule_config_of(app)
    if banner is not None:
        banner(app)
    logger.info(
        "Scheduler: %d/%d schedules enabled", len(config.enabled_schedules()), len(config.schedules)
    )
    if not config.enabled:
        logger.warning("Scheduling is disabled (ScheduleConfig(enabled=False)): not starting")
        return
    asyncio.run(Scheduler(app, install_signal_handlers=install_signal_handlers).run())
