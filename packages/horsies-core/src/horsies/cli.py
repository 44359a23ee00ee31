"""The `horsies` command line (console script `horsies`, also `python -m horsies`).

Core provides `horsies check`; other packages add sub-commands through the entry-point group
`horsies.commands` (horsies-worker registers `worker`, horsies-scheduler `scheduler`). A known
sub-command whose package is not installed still shows in `--help` and says what to install.

Every failure caused by the command line or the located app is printed as a rendered `HorsiesError`
on stderr and exits with status 1, without a Python traceback (set `HORSIES_VERBOSE=1` to see one
for unexpected import failures).
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from horsies import env
from horsies.db_command import db_command
from horsies.demo import demo_command
from horsies.errors import (
    ConfigurationError,
    ErrorCode,
    HorsiesError,
    SourceLocation,
    ValidationReport,
    colors_enabled,
)
from horsies.locator import AppLocation, locate_app, sends_suppressed_by_env
from horsies.logs import LOG_FORMATS, configure_logging, configured_log_format, get_logger
from horsies.tasks.limits import describe_limits

if TYPE_CHECKING:
    from horsies.app import Horsies

__all__ = [
    "CHECKED_BY",
    "CHECKS_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "LOG_LEVELS",
    "PLUGIN_PACKAGES",
    "app_command_options",
    "check_command",
    "discover_app",
    "exit_with_error",
    "log_format_option",
    "main",
    "render_error",
    "run_service",
]

ENTRY_POINT_GROUP = "horsies.commands"
"""Entry-point group through which packages contribute `horsies` sub-commands."""
CHECKS_ENTRY_POINT_GROUP = "horsies.checks"
"""Entry-point group of the start-up validations other distributions run on an app
(``check_app(app) -> list[HorsiesError]``); ``horsies check`` runs them all."""
CHECKED_BY: dict[str, str] = {"scheduler": "horsies-scheduler"}
"""Distributions whose start-up validations ``horsies check`` runs when installed."""

PLUGIN_PACKAGES: dict[str, tuple[str, str]] = {
    "worker": ("horsies-worker", "Run a worker that executes tasks."),
    "scheduler": ("horsies-scheduler", "Run the scheduler that enqueues recurring tasks."),
}
"""Sub-commands provided by other distributions: name -> (distribution, short help)."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_F = TypeVar("_F", bound=Callable[..., Any])

_TRUTHY = frozenset({"1", "true", "yes"})
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep
_STDLIB_DIR = os.path.realpath(sysconfig.get_paths()["stdlib"]) + os.sep


_logger = get_logger("cli")


def render_error(error: HorsiesError) -> None:
    """Print `error` Rust-style on stderr (colours per `HORSIES_FORCE_COLOR` / `NO_COLOR` / TTY),
    or, once logging writes JSON lines, as one record: its rendering in the field ``report``."""
    if configured_log_format() == "json":
        code = None if error.code is None else error.code.value
        report = error.format_rust_style(use_colors=False).strip("\n")
        # Critical: the command exits on it, and no --loglevel may hide why.
        _logger.critical("error: %s", error.message, extra={"code": code, "report": report})
        return
    click.echo(error.format_rust_style(use_colors=colors_enabled(sys.stderr)), err=True)


def run_service(run: Callable[[], object], *, name: str, logger: logging.Logger) -> NoReturn:
    """Run a long-lived command (worker, scheduler) to its end and exit with its status: 0 when
    it stops normally or on Ctrl+C, 1 when it fails (a `HorsiesError` rendered Rust-style, any
    other exception logged as "<name> failed: <Type>: <text>", never a traceback)."""
    try:
        run()
    except KeyboardInterrupt:
        sys.exit(0)
    except HorsiesError as exc:
        exit_with_error(exc)
    except Exception as exc:
        logger.error("%s failed: %s: %s", name, type(exc).__name__, exc)
        sys.exit(1)
    sys.exit(0)


def exit_with_error(error: HorsiesError, code: int = 1) -> NoReturn:
    """Print `error` on stderr and exit with `code` (used by all sub-commands for user errors)."""
    render_error(error)
    sys.exit(code)


def _user_frame(exc: BaseException) -> SourceLocation | None:
    """Where in the user's code ``exc`` comes from: for a syntax error the line that does not
    parse (its traceback has only importlib's frames), else the innermost traceback frame that is
    not importlib, the standard library, horsies or site-packages."""
    if isinstance(exc, SyntaxError) and exc.filename and not exc.filename.startswith("<"):
        column = exc.offset if exc.offset and exc.offset > 0 else None
        return SourceLocation(exc.filename, exc.lineno or 1, column)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        filename = frame.filename
        if filename.startswith("<") or "site-packages" in filename:
            continue
        real = os.path.realpath(filename)
        if real.startswith((_PACKAGE_DIR, _STDLIB_DIR)):
            continue
        return SourceLocation(filename, frame.lineno or 1)
    return None


def _discovery_error(locator: str, exc: BaseException) -> HorsiesError:
    if isinstance(exc, FileNotFoundError | AttributeError | TypeError) and _user_frame(exc) is None:
        # Raised by the locator itself (bad file, attribute or type), not by the user's module.
        error = ConfigurationError(
            f"cannot load app from '{locator}'", code=ErrorCode.APP_LOAD_FAILED
        ).with_note(str(exc))
        error.location = None
        return error.with_help(
            "pass an app locator such as myapp.instance:app or path/to/app.py:app"
        )
    error = ConfigurationError(
        f"failed to import app module '{locator}'", code=ErrorCode.APP_LOAD_FAILED
    ).with_note(f"{type(exc).__name__}: {exc}")
    error.location = _user_frame(exc)
    if os.environ.get("HORSIES_VERBOSE", "").strip().lower() in _TRUTHY:
        error = error.with_note("".join(traceback.format_exception(exc)).rstrip())
    else:
        error = error.with_help("set HORSIES_VERBOSE=1 to see the full traceback")
    return error


def discover_app(locator: str | None, *, allow_factory: bool = False) -> AppLocation:
    """Locate the app for a CLI command; every failure becomes a `HorsiesError`.

    A malformed locator is E206; a module that cannot be found or imported is E208.

    Sub-commands of other packages (worker, scheduler) use it so all commands report discovery
    problems the same way. The import runs with sends suppressed, so a module-level `send()`
    enqueues nothing.

    Raises:
        HorsiesError: missing or invalid locator, module not importable, app not found, or any error
            raised while importing the user's module (rendered with its source location).
    """
    if not locator or not locator.strip():
        error = ConfigurationError("missing module argument", code=ErrorCode.CLI_INVALID_ARGS)
        error.location = None
        raise error.with_help(
            "pass the app locator: horsies <command> myapp.instance:app\n"
            "(or -m myapp.instance:app, or a file path such as path/to/app.py:app)"
        )
    try:
        return locate_app(locator, allow_factory=allow_factory)
    except HorsiesError:
        raise
    except Exception as exc:
        raise _discovery_error(locator, exc) from exc


def _missing_plugin_command(name: str, distribution: str, short_help: str) -> click.Command:
    def callback(**_: Any) -> None:
        error = ConfigurationError(
            f"`horsies {name}` is provided by the {distribution} package, which is not installed",
            code=ErrorCode.CLI_COMMAND_UNAVAILABLE,
        )
        error.location = None
        exit_with_error(error.with_help(f"pip install {distribution}"))

    return click.Command(
        name,
        callback=callback,
        help=f"{short_help}\n\nNot installed: pip install {distribution}",
        short_help=f"{short_help} [not installed]",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


def _broken_plugin_command(
    name: str, entry_point: metadata.EntryPoint, exc: Exception
) -> click.Command:
    def callback(**_: Any) -> None:
        error = ConfigurationError(
            f"cannot load the `horsies {name}` command", code=ErrorCode.CLI_COMMAND_UNAVAILABLE
        ).with_note(f"entry point {entry_point.value}: {type(exc).__name__}: {exc}")
        error.location = None
        exit_with_error(error.with_help("reinstall the package that provides it"))

    return click.Command(
        name,
        callback=callback,
        short_help=f"(failed to load: {type(exc).__name__})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


class HorsiesGroup(click.Group):
    """Click group that adds plugin sub-commands and renders errors as `HorsiesError`s."""

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in, installed plugin and known-but-missing plugin commands, sorted."""
        names = set(super().list_commands(ctx)) | set(self._entry_points()) | set(PLUGIN_PACKAGES)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, else the plugin registered under `cmd_name`, else a placeholder."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry_point = self._entry_points().get(cmd_name)
        if entry_point is not None:
            try:
                loaded = entry_point.load()
            except Exception as exc:
                return _broken_plugin_command(cmd_name, entry_point, exc)
            if isinstance(loaded, click.Command):
                return loaded
            return _broken_plugin_command(
                cmd_name, entry_point, TypeError(f"{loaded!r} is not a click command")
            )
        known = PLUGIN_PACKAGES.get(cmd_name)
        if known is not None:
            return _missing_plugin_command(cmd_name, *known)
        return None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI; user errors are rendered on stderr and exit with status 1 (no traceback)."""
        try:
            returned = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except HorsiesError as error:
            render_error(error)
            code = 1
        except click.UsageError as exc:
            render_error(_usage_error(exc))
            code = 1
        except click.ClickException as exc:
            error = ConfigurationError(exc.format_message(), code=ErrorCode.CLI_INVALID_ARGS)
            error.location = None
            render_error(error)
            code = 1
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted!", err=True)
            code = 1
        else:
            code = returned if isinstance(returned, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def _usage_error(exc: click.UsageError) -> HorsiesError:
    error = ConfigurationError(exc.format_message(), code=ErrorCode.CLI_INVALID_ARGS)
    error.location = None
    ctx = exc.ctx
    if ctx is not None:
        error = error.with_note(ctx.get_usage())
        error = error.with_help(f"run '{ctx.command_path} --help' for the options")
    return error


@click.group(cls=HorsiesGroup, invoke_without_command=True)
@click.version_option(package_name="horsies-core", prog_name="horsies")
@click.pass_context
def main(ctx: click.Context) -> None:
    """horsies: PostgreSQL-backed task queue and workflow engine."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def app_command_options(*, default_loglevel: str) -> Callable[[_F], _F]:
    """The parameters every command that loads an app shares: ``MODULE`` (the app locator),
    ``-m/--module LOCATOR`` (wins over ``MODULE``) and ``--loglevel``. Used by ``check`` and by the
    plugin commands (``worker``, ``scheduler``), so they all read the same way."""

    def decorate(fn: _F) -> _F:
        fn = click.option(
            "--loglevel",
            default=default_loglevel,
            show_default=True,
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            help="Log level of all horsies loggers.",
        )(fn)
        fn = click.option(
            "-m",
            "--module",
            "module_option",
            metavar="LOCATOR",
            help="App locator (wins over MODULE).",
        )(fn)
        return click.argument("module", required=False)(fn)

    return decorate


def log_format_option() -> Callable[[_F], _F]:
    """``--log-format text|json`` of the long-running commands (``worker``, ``scheduler``), default
    from ``HORSIES_LOG_FORMAT``, else ``text``; see `horsies.logs.configure_logging`."""
    return click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS, case_sensitive=False),
        default="text",
        show_default=True,
        envvar=env.LOG_FORMAT,
        show_envvar=True,
        help="text: one readable line per record on stdout; json: one JSON object per record on "
        "stderr.",
    )


@main.command("check")
@app_command_options(default_loglevel="WARNING")
@click.option("--live", is_flag=True, help="Also check database connectivity (SELECT 1).")
def check_command(module: str | None, module_option: str | None, live: bool, loglevel: str) -> None:
    """Validate an app without starting anything.

    MODULE is an app locator: myapp.instance:app, myapp.instance, path/to/app.py:app or
    path/to/app.py. Imports the app and its task modules with sends suppressed, reports every
    problem found and exits with status 1 if there is any (0 otherwise). Creates no schema.
    """
    configure_logging(loglevel.upper())
    location = discover_app(module_option or module)
    app = location.app
    with sends_suppressed_by_env():
        errors = app.check(live=live)
    checks = {ep.name: ep for ep in metadata.entry_points(group=CHECKS_ENTRY_POINT_GROUP)}
    skipped = [
        f"{name} validations ({dist} is not installed)"
        for name, dist in CHECKED_BY.items()
        if name not in checks
    ]
    if not errors:
        for entry_point in checks.values():
            check_app = cast("Callable[[Horsies], list[HorsiesError]]", entry_point.load())
            errors.extend(check_app(app))
    if errors:
        report = ValidationReport("check")
        for error in errors:
            report.add(error)
        click.echo(report.format_rust_style(use_colors=colors_enabled(sys.stderr)), err=True)
        sys.exit(1)
    click.echo("ok: all validations passed")
    click.echo(f"  {len(app.list_tasks())} task(s) registered")
    for line in _limit_lines(app):
        click.echo(f"  {line}")
    for name in sorted(checks):
        click.echo(f"  {name}: start-up validations passed")
    for text in skipped:
        click.echo(f"  skipped: {text}")


@db_command.command("prune")
@app_command_options(default_loglevel="WARNING")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
def db_prune(module: str | None, module_option: str | None, dry_run: bool, loglevel: str) -> None:
    """Remove what the app's retention no longer keeps, and print how much.

    MODULE is an app locator (see `horsies check`); its `AppConfig.retention` says how long each
    kind of row is kept. Runs in batches until nothing past its period is left (the workers do
    the same a little at a time); waits for no lock and stops if another process is pruning.
    """
    configure_logging(loglevel.upper())
    app = discover_app(module_option or module).app
    broker = app.get_broker()
    try:
        broker.ensure_schema_initialized_sync()
        report = broker.prune(app.config.retention, dry_run=dry_run)
    except HorsiesError as exc:
        exit_with_error(exc)
    finally:
        broker.close()
    verb = "would remove" if dry_run else "removed"
    for rule, count in report.by_rule.items():
        click.echo(f"{verb} {count:>10,} {rule}")
    if report.busy:
        click.echo("stopped: another process is pruning; run again later")
    click.echo(f"{verb} {report.total:,} row(s) in all")


def _limit_lines(app: Horsies) -> list[str]:
    """The app's rate and concurrency limits as ``check`` reports them (nothing without any)."""
    limits = describe_limits(app.tasks.values(), lambda name: app.resolve_queue(name)[0])
    if not limits:
        return []
    return [f"{len(limits)} limit(s):", *(f"  {line}" for line in limits)]


main.add_command(db_command)
main.add_command(demo_command)
