"""Running a worker: :func:`run_worker` (also behind ``horsies worker`` and
``horsies.run_worker``), and what it does before the worker starts: find the app, build the
configuration, import the task modules with sends suppressed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Unpack

from horsies import env
from horsies.errors import ConfigurationError, ErrorCode
from horsies.locator import locate_app, sends_suppressed_by_env
from horsies.logs import configure_logging, get_logger, set_log_context

from horsies_worker.config import WorkerConfig, WorkerTuning
from horsies_worker.worker import Worker

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = ["import_task_modules_suppressed", "locator_for_app", "prepare_worker", "run_worker"]

logger = get_logger("worker")


def locator_for_app(app: Horsies) -> tuple[str, list[str]]:
    """Find a canonical locator for an app object, so children can import it again.

    Looks for a module-level variable holding ``app`` in the loaded modules, preferring importable
    modules over ``__main__`` (which is located by its real file path). Returns
    ``(locator, sys_path_roots)``.

    Raises:
        ConfigurationError: E207 when no module-level variable holds the app (for example an app
            built inside a function); pass a locator string instead.
    """

    fallback: tuple[str, list[str]] | None = None
    for name, module in list(sys.modules.items()):
        if name.startswith(("horsies.", "horsies_worker.")) and not name.startswith(
            "horsies._dynamic."
        ):
            continue
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for attr, value in items:
            if value is not app or attr.startswith("__"):
                continue
            file = getattr(module, "__file__", None)
            if name in ("__main__", "__mp_main__") or name.startswith("horsies._dynamic."):
                if file and fallback is None:
                    real = os.path.realpath(file)
                    fallback = (f"{real}:{attr}", [os.path.dirname(real)])
                continue
            return f"{name}:{attr}", []
    if fallback is not None:
        return fallback
    raise ConfigurationError(
        "cannot find a module-level variable holding this app",
        code=ErrorCode.WORKER_INVALID_LOCATOR,
    ).with_help(
        "worker children import the app again; define it at module level or pass a locator "
        "such as 'myapp.instance:app' to run_worker()"
    )


def import_task_modules_suppressed(app: Horsies, modules: list[str]) -> None:
    """Import ``modules`` in this process with every send suppressed (module-level sends do
    nothing)."""

    if not modules:
        return
    with sends_suppressed_by_env():
        app.import_task_modules(modules)


def prepare_worker(
    app_or_locator: Horsies | str,
    *,
    processes: int | None,
    loglevel: str,
    **tuning: Unpack[WorkerTuning],
) -> tuple[Horsies, WorkerConfig]:
    """Locate the app (sends suppressed), build the worker configuration, import the task modules.

    The start-up of ``horsies worker`` up to its banner; raises what the locator or the imports
    raise.
    """

    if isinstance(app_or_locator, str):
        location = locate_app(app_or_locator)
        app = location.app
        locator = location.canonical_locator
        roots = list(location.sys_path_roots)
    else:
        app = app_or_locator
        locator, roots = locator_for_app(app)
    app.set_role("worker")
    config = WorkerConfig.from_app(
        app, locator=locator, sys_path_roots=roots, processes=processes, loglevel=loglevel, **tuning
    )
    if env.flag(env.DEBUG_IMPORTS):
        logger.info(
            "debug_imports: locator=%s sys_path_roots=%s task_modules=%s",
            config.locator,
            config.sys_path_roots,
            config.task_modules,
        )
    import_task_modules_suppressed(app, config.task_modules)
    return app, config


def run_worker(
    app_or_locator: Horsies | str,
    *,
    processes: int | None = None,
    loglevel: str = "INFO",
    log_format: str = "text",
    install_signal_handlers: bool = True,
    configure_logs: bool = True,
    banner: Callable[[Horsies], None] | None = None,
    **tuning: Unpack[WorkerTuning],
) -> None:
    """Run a worker in this process until SIGTERM/SIGINT, then shut down gracefully and return.

    ``app_or_locator`` is a :class:`~horsies.app.Horsies` defined at module level, or a locator
    string (``"myapp.instance:app"``, ``"path/to/app.py:app"``, …; see docs/cli.md). The options
    mirror ``horsies worker``; ``processes`` defaults to the CPU count, the others
    (``max_claim_batch``, ``max_claim_per_worker``, ``shutdown_timeout_s``, ``poll_interval_s``,
    ``startup_timeout_s``, ``metrics_port``, ``metrics_host``) to
    :class:`~horsies_worker.config.WorkerConfig`'s; ``log_format`` is ``"text"`` or ``"json"``
    (``configure_logs=False`` leaves logging as the caller set it up; the children log in the
    format of this process). Prefer the CLI for deployments (its children share the main
    process's memory: see docs/worker.md); use this from a script (guard it with
    ``if __name__ == "__main__":`` — the fork server, a separate interpreter here, imports the
    main module again) or a process manager that wants a Python entry point.

    Raises the locator's errors, ``ValueError`` for invalid options, ``ConfigurationError`` (E210)
    for ``metrics_port`` without the ``metrics`` extra, and ``RuntimeError`` for a start-up failure
    (children could not start, start-up timeout, a metrics port in use).
    """
    if configure_logs:
        configure_logging(loglevel, log_format=log_format)
    set_log_context(role="worker")
    logger.info("Starting horsies worker")
    app, config = prepare_worker(app_or_locator, processes=processes, loglevel=loglevel, **tuning)
    if banner is not None:
        banner(app)
    worker = Worker(app, config, install_signal_handlers=install_signal_handlers)
    asyncio.run(worker.run())
