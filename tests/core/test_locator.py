"""App locators: every form, every error, send suppression during the import, children."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from horsies.app import Horsies
from horsies.env import SUPPRESS_SENDS as SUPPRESS_SENDS_ENV
from horsies.errors import ConfigurationError, ErrorCode
from horsies.locator import locate_app, sends_suppressed_by_env
from horsies.module_files import import_file_module, module_name_for_path
from import_sandbox import restored_imports, write

APP_SOURCE = """
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult

app = Horsies(AppConfig(broker=PostgresConfig(database_url="postgresql://u:pw@localhost:1/db")))


@app.task("ping")
def ping() -> TaskResult[str, TaskError]:
    return TaskResult(ok="pong")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh project directory as cwd; sys.path and sys.modules are restored afterwards."""
    monkeypatch.delenv(SUPPRESS_SENDS_ENV, raising=False)
    with restored_imports(tmp_path, monkeypatch):
        yield tmp_path


def make_package(root: Path, dotted: str, source: str) -> None:
    """Write module `dotted` below `root`, with `__init__.py` in every package directory."""
    parts = dotted.split(".")
    directory = root
    for part in parts[:-1]:
        directory = directory / part
        directory.mkdir(exist_ok=True)
        (directory / "__init__.py").touch()
    write(directory / f"{parts[-1]}.py", source)


def mark_project(root: Path) -> None:
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")


# -- the four forms -------------------------------------------------------------------------------


def test_dotted_module_with_attribute(project: Path) -> None:
    mark_project(project)
    make_package(project, "myproj.instance", APP_SOURCE)
    location = locate_app("myproj.instance:app")
    assert isinstance(location.app, Horsies)
    assert location.app is sys.modules["myproj.instance"].app
    assert location.canonical_locator == "myproj.instance:app"
    assert location.app.list_tasks() == ["ping"]


def test_dotted_module_without_attribute_finds_the_single_app(project: Path) -> None:
    mark_project(project)
    make_package(
        project,
        "single_app_mod",
        APP_SOURCE.replace("app =", "the_app =").replace("@app", "@the_app"),
    )
    location = locate_app("single_app_mod")
    assert location.canonical_locator == "single_app_mod:the_app"


def test_file_path_with_attribute(project: Path) -> None:
    path = write(project / "conf" / "instance_file.py", APP_SOURCE)
    location = locate_app("conf/instance_file.py:app")
    assert location.canonical_locator == f"{os.path.realpath(path)}:app"
    assert str(path.parent) in location.sys_path_roots
    assert sys.path[0] == str(path.parent)


def test_file_path_without_suffix_and_attribute(project: Path) -> None:
    path = write(project / "conf" / "bare_instance.py", APP_SOURCE)
    location = locate_app("conf/bare_instance")
    assert location.canonical_locator == f"{os.path.realpath(path)}:app"


def test_last_colon_splits_module_and_attribute(project: Path) -> None:
    mark_project(project)
    make_package(project, "colon_mod", APP_SOURCE + "\nother = app\n")
    assert locate_app("colon_mod:other").canonical_locator == "colon_mod:other"


# -- sys.path handling ---------------------------------------------------------------------------


def test_the_current_directory_is_prepended_like_python_m(project: Path) -> None:
    # No pyproject.toml or setup file: a folder with just the app module, as a first project is.
    make_package(project, "plain_mod", APP_SOURCE)
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".", str(project))]
    location = locate_app("plain_mod:app")
    assert sys.path[0] == str(project)
    assert location.sys_path_roots == (str(project),)


# -- errors ---------------------------------------------------------------------------------------


def invalid_locator_error(
    locator: str, code: ErrorCode = ErrorCode.CLI_INVALID_ARGS
) -> ConfigurationError:
    """The error ``locate_app(locator)`` raises: a ConfigurationError with ``code``."""
    with pytest.raises(ConfigurationError) as info:
        locate_app(locator)
    assert info.value.code is code
    return info.value


def test_ambiguous_dotted_file_locator(project: Path) -> None:
    error = invalid_locator_error("myapp.instance.py:app")
    assert error.message == "ambiguous module locator: 'myapp.instance.py'"
    assert error.help_text is not None
    assert "myapp.instance" in error.help_text
    assert "myapp/instance.py" in error.help_text


def test_missing_file_raises_file_not_found(project: Path) -> None:
    with pytest.raises(FileNotFoundError):
        locate_app("nowhere/app.py:app")


def test_unknown_dotted_module(project: Path) -> None:
    error = invalid_locator_error("no_such_module_xyz.sub:app", ErrorCode.APP_LOAD_FAILED)
    assert error.message == "module not found: no_such_module_xyz.sub"
    assert error.location is None
    assert any("sys.path" in note for note in error.notes)


def test_import_error_inside_the_module_propagates(project: Path) -> None:
    mark_project(project)
    write(project / "broken_dep_mod.py", "import definitely_missing_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError):
        locate_app("broken_dep_mod:app")


def test_empty_locator(project: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        locate_app("  ")
    assert info.value.message == "missing module argument"


def test_missing_attribute(project: Path) -> None:
    mark_project(project)
    make_package(project, "attr_mod", APP_SOURCE)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        locate_app("attr_mod:nope")


def test_attribute_that_is_not_an_app(project: Path) -> None:
    mark_project(project)
    make_package(project, "type_mod", APP_SOURCE + "\nnot_app = 42\n")
    with pytest.raises(TypeError, match="expected a Horsies instance"):
        locate_app("type_mod:not_app")


def test_no_app_in_module(project: Path) -> None:
    mark_project(project)
    write(project / "empty_mod.py", "x = 1\n")
    with pytest.raises(AttributeError, match="No Horsies instance found"):
        locate_app("empty_mod")


def test_several_apps_in_module(project: Path) -> None:
    mark_project(project)
    write(
        project / "two_apps_mod.py", APP_SOURCE + "\nsecond = Horsies(app.config)\n_private = app\n"
    )
    with pytest.raises(AttributeError, match="Multiple Horsies instances") as info:
        locate_app("two_apps_mod")
    assert "app, second" in str(info.value)


def test_private_names_are_ignored_when_discovering(project: Path) -> None:
    mark_project(project)
    write(
        project / "private_mod.py", APP_SOURCE.replace("app =", "_app =").replace("@app", "@_app")
    )
    with pytest.raises(AttributeError, match="No Horsies instance found"):
        locate_app("private_mod")


# -- file imports ---------------------------------------------------------------------------------


def test_same_file_is_loaded_once(project: Path) -> None:
    path = write(project / "once_mod.py", APP_SOURCE)
    first = import_file_module(str(path))
    second = import_file_module(str(project / "." / "once_mod.py"))
    assert first is second
    assert sys.modules["once_mod"] is first
    assert first.__name__.startswith("horsies._dynamic.")


def test_basename_alias_only_when_free(project: Path) -> None:
    path = write(project / "json.py", "VALUE = 1\n")
    module = import_file_module(str(path))
    assert sys.modules["json"] is not module
    assert module.VALUE == 1


def test_failed_file_import_leaves_nothing_registered(project: Path) -> None:
    path = write(project / "raising_mod.py", "raise RuntimeError('boom')\n")
    before = set(sys.modules)
    with pytest.raises(RuntimeError, match="boom"):
        import_file_module(str(path))
    assert set(sys.modules) == before


def test_file_module_can_import_its_siblings(project: Path) -> None:
    write(project / "pkgdir" / "helper_sibling.py", "VALUE = 7\n")
    path = write(project / "pkgdir" / "uses_sibling.py", "from helper_sibling import VALUE\n")
    assert import_file_module(str(path)).VALUE == 7


def test_module_name_for_path(project: Path) -> None:
    for directory in ("app", "app/configs"):
        (project / directory).mkdir(parents=True, exist_ok=True)
        (project / directory / "__init__.py").touch()
    assert module_name_for_path(str(project / "app" / "configs" / "instance.py")) == (
        "app.configs.instance"
    )
    assert module_name_for_path(str(project / "loose.py")) == "loose"
    assert module_name_for_path(str(project / "app" / "__init__.py")) == "app"


def test_default_task_names_of_file_modules_follow_the_package_path(project: Path) -> None:
    (project / "pkg_named").mkdir()
    (project / "pkg_named" / "__init__.py").touch()
    write(
        project / "pkg_named" / "tasks_mod.py",
        APP_SOURCE
        + "\n@app.task\ndef unnamed() -> TaskResult[int, TaskError]:\n"
        + "    return TaskResult(ok=1)\n",
    )
    location = locate_app("pkg_named/tasks_mod.py:app")
    assert "pkg_named.tasks_mod.unnamed" in location.app.tasks


# -- send suppression during imports ---------------------------------------------------------------

SENDING_APP = (
    APP_SOURCE
    + """
handle = ping.send()
SEEN_ENV = __import__("os").environ.get("TASKLIB_SUPPRESS_SENDS")
"""
)


def test_module_level_send_is_suppressed_during_locate(project: Path) -> None:
    mark_project(project)
    write(project / "sending_mod.py", SENDING_APP)
    location = locate_app("sending_mod:app")
    module = sys.modules["sending_mod"]
    assert module.handle.task_id == "<suppressed>"
    assert module.SEEN_ENV == "1"
    assert SUPPRESS_SENDS_ENV not in os.environ
    assert not location.app.are_sends_suppressed()


def test_file_import_is_suppressed_too(project: Path) -> None:
    write(project / "sending_file.py", SENDING_APP)
    locate_app("sending_file.py:app")
    assert sys.modules["sending_file"].handle.task_id == "<suppressed>"


def test_previous_env_value_is_restored(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SUPPRESS_SENDS_ENV, "0")
    with sends_suppressed_by_env():
        assert os.environ[SUPPRESS_SENDS_ENV] == "1"
    assert os.environ[SUPPRESS_SENDS_ENV] == "0"


def test_env_restored_after_a_failing_import(project: Path) -> None:
    write(project / "fails_mod.py", "raise ValueError('bad module')\n")
    with pytest.raises(ValueError, match="bad module"):
        locate_app("fails_mod.py:app")
    assert SUPPRESS_SENDS_ENV not in os.environ


# -- child mode: canonical locators and factories --------------------------------------------------


def test_canonical_locator_round_trips(project: Path) -> None:
    write(project / "canon_mod.py", APP_SOURCE)
    first = locate_app("canon_mod.py")
    again = locate_app(first.canonical_locator, allow_factory=True)
    assert again.app is first.app


def test_factory_is_called_in_child_mode(project: Path) -> None:
    mark_project(project)
    write(project / "factory_mod.py", APP_SOURCE + "\ndef make_app():\n    return app\n")
    assert (
        locate_app("factory_mod:make_app", allow_factory=True).app is sys.modules["factory_mod"].app
    )
    with pytest.raises(TypeError):
        locate_app("factory_mod:make_app")


def test_factory_returning_something_else(project: Path) -> None:
    mark_project(project)
    write(project / "bad_factory_mod.py", APP_SOURCE + "\ndef make_app():\n    return 1\n")
    with pytest.raises(ConfigurationError) as info:
        locate_app("bad_factory_mod:make_app", allow_factory=True)
    assert info.value.code is ErrorCode.WORKER_INVALID_LOCATOR


def test_child_mode_requires_an_attribute(project: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        locate_app("some_module", allow_factory=True)
    assert info.value.code is ErrorCode.WORKER_INVALID_LOCATOR


def test_child_mode_attribute_errors_are_e207(project: Path) -> None:
    mark_project(project)
    write(project / "child_attr_mod.py", APP_SOURCE + "\nvalue = 3\n")
    for locator in ("child_attr_mod:missing", "child_attr_mod:value"):
        with pytest.raises(ConfigurationError) as info:
            locate_app(locator, allow_factory=True)
        assert info.value.code is ErrorCode.WORKER_INVALID_LOCATOR
