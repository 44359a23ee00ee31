"""Import Python files given by path, under names that are the same in every process.

The CLI locators, `Horsies.discover_tasks` and task naming all accept file paths as well as dotted
module names; this module is the one place that turns a path into a module and into a name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType

__all__ = [
    "DYNAMIC_MODULE_PREFIX",
    "import_file_module",
    "is_file_locator",
    "module_name_for_path",
    "prepend_sys_path",
]

DYNAMIC_MODULE_PREFIX = "horsies._dynamic."
"""Prefix of the synthetic module names under which files given by path are imported."""


def is_file_locator(module_part: str) -> bool:
    """True when a module reference is a file path (ends in `.py` or contains a path separator)."""
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def _dynamic_module_name(real_path: str) -> str:
    digest = hashlib.sha256(real_path.encode("utf-8")).hexdigest()[:12]
    return f"{DYNAMIC_MODULE_PREFIX}{digest}"


def module_name_for_path(path: str) -> str:
    """Dotted module name a file would have when imported through its package hierarchy.

    Walks up from the file's directory while the directories are regular packages (contain
    `__init__.py`): `/proj/app/configs/instance.py` with `app/__init__.py` and
    `app/configs/__init__.py` gives `app.configs.instance`; a file outside any package gives its
    stem. Used to name tasks of file-imported modules the same way in every process.
    """
    real = os.path.realpath(path)
    directory, filename = os.path.split(real)
    stem = filename[:-3] if filename.endswith(".py") else filename
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.append(package)
        if not package:
            break
    parts.reverse()
    return ".".join(part for part in parts if part) or stem


def prepend_sys_path(directory: str, added: list[str]) -> None:
    """Put a directory in front of `sys.path` (once) and record it in `added`."""
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if directory not in added:
        added.append(directory)


def import_file_module(path: str, *, sys_path_roots: list[str] | None = None) -> ModuleType:
    """Import a Python file given by path, once per real path.

    The file's directory is put in front of `sys.path` (so it can import its siblings), the module
    is registered as `horsies._dynamic.<first 12 hex digits of sha256(real path)>` and also under
    its basename when that name is free. Importing the same real path again returns the module
    already loaded. On failure nothing stays registered in `sys.modules`.

    Args:
        path: the file to import; must exist.
        sys_path_roots: if given, directories added to `sys.path` are appended to it.

    Raises:
        FileNotFoundError: the file does not exist.
        Exception: whatever executing the module raises.
    """
    real_path = os.path.realpath(path)
    if not os.path.isfile(real_path):
        raise FileNotFoundError(f"No such file: {path}")
    added = sys_path_roots if sys_path_roots is not None else []
    prepend_sys_path(os.path.dirname(real_path), added)

    synthetic = _dynamic_module_name(real_path)
    existing = sys.modules.get(synthetic)
    if existing is not None:
        return existing

    spec = importlib.util.spec_from_file_location(synthetic, real_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load a Python module from {path}")
    module = importlib.util.module_from_spec(spec)
    basename = os.path.splitext(os.path.basename(real_path))[0]
    alias = basename if basename.isidentifier() and basename not in sys.modules else None
    sys.modules[synthetic] = module
    if alias is not None:
        sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(synthetic, None)
        if alias is not None and sys.modules.get(alias) is module:
            sys.modules.pop(alias, None)
        raise
    return module
