"""Find the `Horsies` application named by a command-line locator.

Locators are shared by `horsies worker`, `horsies scheduler` and `horsies check` (docs/cli.md):

| Form | Example |
|---|---|
| dotted module + attribute | `myapp.instance:app` (recommended) |
| dotted module | `myapp.instance` (the single public `Horsies` instance is found) |
| file path + attribute | `app/configs/instance.py:app` |
| file path | `app/configs/instance.py` or `app/configs/instance` (`.py` appended) |

Every import done here runs with sends suppressed, so importing user code enqueues nothing. It goes
through the `TASKLIB_SUPPRESS_SENDS` environment variable: the application object does not exist
before its module is imported, so the per-app flag cannot be used yet.

`locate_app` returns an `AppLocation` whose `canonical_locator` (`<real file path>:<var>` or
`<module>:<var>`) lets worker children find the very same application again.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from horsies import env
from horsies.app import Horsies
from horsies.errors import ConfigurationError, ErrorCode
from horsies.module_files import import_file_module, is_file_locator, prepend_sys_path

__all__ = ["AppLocation", "locate_app", "sends_suppressed_by_env"]

_SYS_PATH_NOTE_ENTRIES = 5


@dataclass(frozen=True, slots=True)
class AppLocation:
    """The result of `locate_app`.

    Attributes:
        app: the located application.
        canonical_locator: `<real file path>:<var>` or `<module>:<var>`; locating it again (for
            example in a worker child, with `allow_factory=True`) yields the same application.
        sys_path_roots: directories that were put in front of `sys.path` to import the
            application; a child process must add them too before using `canonical_locator`.
    """

    app: Horsies
    canonical_locator: str
    sys_path_roots: tuple[str, ...]


@contextmanager
def sends_suppressed_by_env() -> Generator[None]:
    """Suppress every send in this process for the duration of the block, then restore the variable.

    Used around imports of user modules: a module-level `task.send()` then returns a
    `"<suppressed>"` handle instead of enqueuing a task.
    """
    previous = os.environ.get(env.SUPPRESS_SENDS)
    os.environ[env.SUPPRESS_SENDS] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(env.SUPPRESS_SENDS, None)
        else:
            os.environ[env.SUPPRESS_SENDS] = previous


def _locator_error(
    message: str, *, code: ErrorCode = ErrorCode.CLI_INVALID_ARGS
) -> ConfigurationError:
    error = ConfigurationError(message, code=code)
    # Locator problems are about a command-line argument, not about a line of user code.
    error.location = None
    return error


def _ensure_cwd_on_path(added: list[str]) -> None:
    # As `python -m` does: a module next to where the command runs is importable by its name.
    prepend_sys_path(os.getcwd(), added)


def _import_locator_file(module_part: str, added: list[str]) -> tuple[ModuleType, str]:
    path = module_part if module_part.endswith(".py") else f"{module_part}.py"
    if not os.path.isfile(path):
        stem = os.path.basename(path)[:-3]
        if "/" not in module_part and os.sep not in module_part and "." in stem:
            raise _locator_error(f"ambiguous module locator: '{module_part}'").with_help(
                f"use a dotted module path: {stem}\nor a file path: {stem.replace('.', '/')}.py"
            )
        raise FileNotFoundError(f"App module file not found: {path}")
    with sends_suppressed_by_env():
        module = import_file_module(path, sys_path_roots=added)
    return module, os.path.realpath(path)


def _is_missing_target(exc: ModuleNotFoundError, module_part: str) -> bool:
    missing = exc.name or ""
    return missing == module_part or module_part.startswith(f"{missing}.")


def _import_locator_module(module_part: str) -> ModuleType:
    try:
        with sends_suppressed_by_env():
            return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        if not _is_missing_target(exc, module_part):
            raise
        error = _locator_error(
            f"module not found: {module_part}", code=ErrorCode.APP_LOAD_FAILED
        ).with_note(f"{exc}")
        shown = ", ".join(repr(entry) for entry in sys.path[:_SYS_PATH_NOTE_ENTRIES])
        error = error.with_note(f"sys.path starts with: [{shown}]")
        raise error.with_help(
            "run the command from the folder that holds the module (or its package), or pass a\n"
            "file path such as path/to/app.py:app"
        ) from exc


def _find_single_app(module: ModuleType, module_part: str) -> str:
    names = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, Horsies)
    ]
    if not names:
        raise AttributeError(
            f"No Horsies instance found in module '{module_part}'; "
            f"name it explicitly: '{module_part}:<variable>'"
        )
    if len(names) > 1:
        listed = ", ".join(names)
        raise AttributeError(
            f"Multiple Horsies instances found in module '{module_part}': {listed}; "
            f"choose one: '{module_part}:<variable>'"
        )
    return names[0]


def _resolve_attribute(
    module: ModuleType, module_part: str, attribute: str, *, allow_factory: bool
) -> Horsies:
    try:
        value: object = getattr(module, attribute)
    except AttributeError:
        if allow_factory:
            raise _locator_error(
                f"invalid worker locator: '{module_part}' has no attribute '{attribute}'",
                code=ErrorCode.WORKER_INVALID_LOCATOR,
            ) from None
        raise AttributeError(f"Module '{module_part}' has no attribute '{attribute}'") from None
    if isinstance(value, Horsies):
        return value
    if allow_factory and callable(value):
        produced: object = value()
        if isinstance(produced, Horsies):
            return produced
        raise _locator_error(
            f"invalid worker locator: factory '{module_part}:{attribute}' returned "
            f"{type(produced).__name__}, expected Horsies",
            code=ErrorCode.WORKER_INVALID_LOCATOR,
        )
    if allow_factory:
        raise _locator_error(
            f"invalid worker locator: '{module_part}:{attribute}' is {type(value).__name__}, "
            "expected a Horsies instance or a factory returning one",
            code=ErrorCode.WORKER_INVALID_LOCATOR,
        )
    raise TypeError(
        f"'{module_part}:{attribute}' is {type(value).__name__}, expected a Horsies instance"
    )


def locate_app(locator: str, *, allow_factory: bool = False) -> AppLocation:
    """Import the module named by `locator` (with sends suppressed) and return its `Horsies` app.

    Rules: the locator is split on its last `:` into a module part and an optional attribute; a
    module part ending in `.py` or containing a path separator is a file. Before importing, the
    current directory is put in front of `sys.path`, as `python -m` does.

    Args:
        locator: `module:attr`, `module`, `path/file.py:attr`, `path/file.py` or `path/file`.
        allow_factory: child-process mode (used with a canonical locator): the attribute is
            mandatory (a locator without `:` raises E207) and a callable attribute is called
            without arguments and must return a `Horsies`.

    Raises:
        ConfigurationError: E206 for an empty locator or an ambiguous file locator
            (`pkg.mod.py` that does not exist); E208 for a dotted module that cannot be found;
            E207 for child-mode problems.
        FileNotFoundError: a file locator that does not exist.
        AttributeError: a missing attribute, or zero / several apps when no attribute is given.
        TypeError: the attribute is not a `Horsies` instance.
        Exception: anything the imported module raises while executing (including the
            `HorsiesError`s of task definitions).
    """
    locator = locator.strip()
    if not locator:
        raise _locator_error("missing module argument").with_help(
            "pass an app locator such as myapp.instance:app or path/to/app.py:app"
        )
    module_part, separator, attribute = locator.rpartition(":")
    if not separator or is_file_locator(attribute) or (len(module_part) == 1 and os.sep == "\\"):
        # No attribute (a Windows drive letter such as C:\app.py is not an attribute either).
        module_part, attribute = locator, ""
    if allow_factory and not attribute:
        raise _locator_error(
            f"invalid worker locator: '{locator}' (expected '<module or file>:<variable>')",
            code=ErrorCode.WORKER_INVALID_LOCATOR,
        )
    if not module_part:
        raise _locator_error(f"invalid module locator: '{locator}'").with_help(
            "use myapp.instance:app or path/to/app.py:app"
        )

    added: list[str] = []
    _ensure_cwd_on_path(added)
    if is_file_locator(module_part):
        module, canonical_module = _import_locator_file(module_part, added)
    else:
        module = _import_locator_module(module_part)
        canonical_module = module_part

    if attribute:
        app = _resolve_attribute(module, module_part, attribute, allow_factory=allow_factory)
        variable = attribute
    else:
        variable = _find_single_app(module, module_part)
        app = _resolve_attribute(module, module_part, variable, allow_factory=False)
    return AppLocation(
        app=app,
        canonical_locator=f"{canonical_module}:{variable}",
        sys_path_roots=tuple(added),
    )
