"""Tests for horsies.errors: codes, locations, Rust-style rendering, collection, pickling, hook."""

from __future__ import annotations

import functools
import inspect
import io
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import horsies
import pytest
from horsies.errors import (
    ConfigurationError,
    DuplicateTaskNameError,
    ErrorCode,
    HorsiesError,
    MultipleConfigurationErrors,
    MultipleValidationErrors,
    NotRegistered,
    RegistryError,
    SourceLocation,
    TaskDefinitionError,
    ValidationReport,
    WorkflowValidationError,
    collected_error,
    colors_enabled,
    install_exception_hook,
    raise_collected,
)
from horsies.results import LibraryErrorCode

THIS_FILE = os.path.abspath(__file__)
ESC = "\x1b["


def _line_here() -> int:
    """Line number of the caller's current line."""
    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    return frame.f_back.f_lineno


@pytest.fixture
def no_color_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HORSIES_FORCE_COLOR", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


# --------------------------------------------------------------------------------------------------
# ErrorCode: codes are matched on in logs and tests, so their values must never change
# --------------------------------------------------------------------------------------------------

EXPECTED_CODES = {
    "WORKFLOW_NO_NAME": "E001",
    "WORKFLOW_NO_NODES": "E002",
    "WORKFLOW_INVALID_NODE_ID": "E003",
    "WORKFLOW_DUPLICATE_NODE_ID": "E004",
    "WORKFLOW_NO_ROOT_TASKS": "E005",
    "WORKFLOW_INVALID_DEPENDENCY": "E006",
    "WORKFLOW_CYCLE_DETECTED": "E007",
    "WORKFLOW_INVALID_ARGS_FROM": "E008",
    "WORKFLOW_INVALID_CTX_FROM": "E009",
    "WORKFLOW_CTX_PARAM_MISSING": "E010",
    "WORKFLOW_INVALID_OUTPUT": "E011",
    "WORKFLOW_INVALID_SUCCESS_POLICY": "E012",
    "WORKFLOW_INVALID_JOIN": "E013",
    "WORKFLOW_UNRESOLVED_QUEUE": "E014",
    "WORKFLOW_UNRESOLVED_PRIORITY": "E015",
    "WORKFLOW_INVALID_SUBWORKFLOW_RETRY_MODE": "E017",
    "WORKFLOW_SUBWORKFLOW_APP_MISSING": "E018",
    "WORKFLOW_INVALID_NODE_ARGS": "E019",
    "WORKFLOW_NODE_UNDER_LIMIT": "E020",
    "TASK_NO_RETURN_TYPE": "E100",
    "TASK_INVALID_RETURN_TYPE": "E101",
    "TASK_INVALID_OPTIONS": "E102",
    "TASK_INVALID_QUEUE": "E103",
    "CONFIG_INVALID_QUEUE_MODE": "E200",
    "CONFIG_INVALID_CLUSTER_CAP": "E201",
    "CONFIG_INVALID_PREFETCH": "E202",
    "BROKER_INVALID_URL": "E203",
    "CONFIG_INVALID_RECOVERY": "E204",
    "CONFIG_INVALID_SCHEDULE": "E205",
    "CLI_INVALID_ARGS": "E206",
    "WORKER_INVALID_LOCATOR": "E207",
    "APP_LOAD_FAILED": "E208",
    "BROKER_UNREACHABLE": "E209",
    "CLI_COMMAND_UNAVAILABLE": "E210",
    "CONNECTION_UNSUPPORTED": "E211",
    "SCHEMA_NOT_INSTALLED": "E212",
    "TESTING_HELPER_UNAVAILABLE": "E213",
    "TASK_NOT_REGISTERED": "E300",
    "TASK_DUPLICATE_NAME": "E301",
}


def test_error_code_has_exactly_the_documented_members() -> None:
    assert {member.name: member.value for member in ErrorCode} == EXPECTED_CODES


def test_every_code_has_one_row_in_the_error_page() -> None:
    page = (Path(__file__).parents[2] / "docs" / "errors.md").read_text()
    rows = re.findall(r"^\| (E\d{3}) \| `(\w+)` \|", page, flags=re.MULTILINE)
    assert rows == [(code, name) for name, code in EXPECTED_CODES.items()]
    library_rows = re.findall(r"^\| `([A-Z_]+)` \| (?!Meaning)", page, flags=re.MULTILINE)
    assert sorted(library_rows) == sorted(member.name for member in LibraryErrorCode)


def test_error_code_is_a_str_enum_whose_value_is_the_code() -> None:
    assert isinstance(ErrorCode.BROKER_INVALID_URL, str)
    assert ErrorCode.BROKER_INVALID_URL == "E203"
    assert ErrorCode("E300") is ErrorCode.TASK_NOT_REGISTERED


def test_e016_and_the_undocumented_names_do_not_exist() -> None:
    with pytest.raises(ValueError):
        ErrorCode("E016")
    assert "WORKFLOW_INVALID_STRUCTURE" not in ErrorCode.__members__
    assert "WORKFLOW_SUBWORKFLOW_CYCLE" not in ErrorCode.__members__


# --------------------------------------------------------------------------------------------------
# SourceLocation
# --------------------------------------------------------------------------------------------------


def test_source_location_format_short() -> None:
    assert SourceLocation("a/b.py", 12).format_short() == "a/b.py:12"
    assert SourceLocation("a/b.py", 12, column=5).format_short() == "a/b.py:12:5"


def test_source_location_from_frame_is_the_executing_line() -> None:
    frame = inspect.currentframe()
    assert frame is not None
    location = SourceLocation.from_frame(frame)
    expected = _line_here() - 1
    assert location == SourceLocation(THIS_FILE, expected)


def _plain_function() -> None:
    pass


def _decorator(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@_decorator
def _wrapped_function() -> None:
    pass


class _Holder:
    def method(self) -> None:
        pass


def test_source_location_from_function_points_at_the_definition() -> None:
    location = SourceLocation.from_function(_plain_function)
    assert location is not None
    assert location.file == THIS_FILE
    assert location.get_source_line() == "def _plain_function() -> None:"


def test_source_location_from_function_unwraps_wrappers_and_methods() -> None:
    wrapped = SourceLocation.from_function(_wrapped_function)
    assert wrapped is not None
    # co_firstlineno of a decorated function is its first decorator line.
    assert wrapped.get_source_line() == "@_decorator"
    method = SourceLocation.from_function(_Holder().method)
    assert method is not None
    assert method.get_source_line() == "    def method(self) -> None:"


def test_source_location_from_function_is_none_without_code() -> None:
    assert SourceLocation.from_function(len) is None
    assert SourceLocation.from_function(_Holder) is None
    assert SourceLocation.from_function(42) is None


def test_get_source_line_is_none_when_unreadable(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("first\nsecond\n")
    assert SourceLocation(str(source), 2).get_source_line() == "second"
    assert SourceLocation(str(source), 3).get_source_line() is None
    assert SourceLocation(str(source), 0).get_source_line() is None
    assert SourceLocation(str(tmp_path / "missing.py"), 1).get_source_line() is None


# --------------------------------------------------------------------------------------------------
# HorsiesError fields, auto-location, fluent helpers
# --------------------------------------------------------------------------------------------------


def test_horsies_error_defaults() -> None:
    error = HorsiesError("something broke")
    assert error.message == "something broke"
    assert error.code is None
    assert error.notes == []
    assert error.help_text is None
    assert error.args == ("something broke",)
    assert isinstance(error, Exception)
    assert not isinstance(error, ValueError)


def test_auto_location_is_the_callers_line() -> None:
    error = HorsiesError("x", code=ErrorCode.CLI_INVALID_ARGS)
    line = _line_here() - 1
    assert error.location == SourceLocation(THIS_FILE, line)


def test_explicit_location_is_kept() -> None:
    location = SourceLocation("elsewhere.py", 7, column=3)
    assert HorsiesError("x", location=location).location is location


def _make_error_from(filename: str) -> tuple[HorsiesError, int]:
    """Build an error from code whose frames claim to live in `filename`.

    Returns the error and the line of this helper that called into that code.
    """
    namespace: dict[str, Any] = {"HorsiesError": HorsiesError}
    source = "def build():\n    return HorsiesError('from elsewhere')\n"
    exec(compile(source, filename, "exec"), namespace)
    line = _line_here() + 1
    return namespace["build"](), line


@pytest.mark.parametrize(
    "filename",
    [
        "<generated>",
        "/opt/venv/lib/python3.11/site-packages/somelib/api.py",
        "/usr/lib/python3/dist-packages/somelib/api.py",
        os.path.join(os.path.dirname(horsies.__file__), "internal_helper.py"),
    ],
    ids=["angle-brackets", "site-packages", "dist-packages", "horsies-package"],
)
def test_auto_location_skips_library_and_generated_frames(filename: str) -> None:
    error, line = _make_error_from(filename)
    assert error.location == SourceLocation(THIS_FILE, line)


def test_auto_location_keeps_user_code_in_a_folder_named_horsies() -> None:
    # Only the installed horsies packages are skipped, not any path containing "/horsies/".
    error, _ = _make_error_from("/srv/projects/horsies/app/tasks.py")
    assert error.location == SourceLocation("/srv/projects/horsies/app/tasks.py", 2)


def test_fluent_helpers_return_self_and_update_fields() -> None:
    error = HorsiesError("x")
    frame = inspect.currentframe()
    assert frame is not None
    assert error.with_note("n1").with_note("n2") is error
    assert error.with_help("do this") is error
    assert error.notes == ["n1", "n2"]
    assert error.help_text == "do this"
    location = SourceLocation("f.py", 3)
    assert error.with_location(location).location is location
    assert error.with_location(None).location is None
    assert error.with_location_from_frame(frame) is error
    assert error.location is not None
    assert error.location.file == THIS_FILE


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def test_rendering_matches_the_reference_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_color_env: None
) -> None:
    source = tmp_path / "src" / "flows.py"
    source.parent.mkdir()
    source.write_text(
        "node_a = TaskNode(fn=fetch)\nnode_b = TaskNode(fn=process, waits_for=[node_a])\n"
    )
    monkeypatch.chdir(tmp_path)
    error = WorkflowValidationError(
        "cycle detected in workflow DAG",
        code=ErrorCode.WORKFLOW_CYCLE_DETECTED,
        location=SourceLocation(str(source), 2),
        notes=["workflows must be acyclic directed graphs (DAG)"],
        help_text="remove circular dependencies between tasks",
    )
    expected = (
        "error[E007]: cycle detected in workflow DAG\n"
        "  --> src/flows.py:2\n"
        "    |\n"
        "   2| node_b = TaskNode(fn=process, waits_for=[node_a])\n"
        "    | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "   = note: workflows must be acyclic directed graphs (DAG)\n"
        "\n"
        "   = help:\n"
        "        remove circular dependencies between tasks"
    )
    assert error.format_rust_style(use_colors=False) == expected
    assert str(error) == expected
    # use_colors=None follows the environment, and NO_COLOR is set here.
    assert error.format_rust_style() == expected


def test_rendering_without_code_or_location() -> None:
    error = HorsiesError("plain problem", notes=["line one\nline two"]).with_location(None)
    assert str(error) == ("error: plain problem\n   = note: line one\n" + " " * 10 + "line two")


def test_rendering_multi_line_help_is_indented_eight_spaces() -> None:
    error = HorsiesError("x", help_text="first\nsecond").with_location(None)
    assert str(error).endswith("\n\n   = help:\n        first\n        second")


def test_rendering_location_with_unreadable_source_has_no_snippet() -> None:
    error = HorsiesError("x", location=SourceLocation("/nonexistent/dir/file.py", 10, 4))
    assert str(error) == "error: x\n  --> /nonexistent/dir/file.py:10:4"


def test_rendering_multi_digit_line_and_indented_source(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("\n" * 11 + "    value = compute(1)\n")
    error = HorsiesError("x", location=SourceLocation(str(source), 12))
    lines = str(error).splitlines()
    assert lines[2] == "     |"
    assert lines[3] == "   12|     value = compute(1)"
    # Carets keep the indentation and cover the non-blank part of the line.
    assert lines[4] == "     |     " + "^" * len("value = compute(1)")


def test_rendering_with_columns_underlines_the_span(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("result = call(bad_arg)\n")
    spanned = HorsiesError("x", location=SourceLocation(str(source), 1, column=15, end_column=22))
    assert str(spanned).splitlines()[-1] == "    | " + " " * 14 + "^" * 7
    single = HorsiesError("x", location=SourceLocation(str(source), 1, column=1))
    assert str(single).splitlines()[-1] == "    | ^"
    # An end column at or before the start still gets one caret.
    empty = HorsiesError("x", location=SourceLocation(str(source), 1, column=5, end_column=5))
    assert str(empty).splitlines()[-1] == "    |     ^"


def test_rendering_with_colours_styles_each_element(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("x = 1\n")
    error = HorsiesError(
        "msg",
        code=ErrorCode.CLI_INVALID_ARGS,
        location=SourceLocation(str(source), 1),
        notes=["a note"],
        help_text="some help",
    )
    coloured = error.format_rust_style(use_colors=True)
    assert "\x1b[1;31merror[E206]: msg\x1b[0m" in coloured  # header bold red
    assert "\x1b[34m-->\x1b[0m" in coloured  # arrow blue
    assert "\x1b[36m" in coloured  # location cyan
    assert "\x1b[31m^^^^^\x1b[0m" in coloured  # carets red
    assert "\x1b[1;34mnote\x1b[0m: a note" in coloured  # note bold blue
    assert "\x1b[1;32mhelp\x1b[0m:" in coloured  # help bold green
    assert ESC not in error.format_rust_style(use_colors=False)


class _FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("force", "no_color", "tty", "expected"),
    [
        ("1", None, False, True),
        ("true", "1", False, True),
        ("YES", "1", False, True),
        ("0", None, True, True),
        (None, "1", True, False),
        (None, "", True, False),
        (None, None, True, True),
        (None, None, False, False),
    ],
)
def test_colour_rules(
    monkeypatch: pytest.MonkeyPatch,
    force: str | None,
    no_color: str | None,
    tty: bool,
    expected: bool,
) -> None:
    for name, value in (("HORSIES_FORCE_COLOR", force), ("NO_COLOR", no_color)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    stream = _FakeStream(tty)
    assert colors_enabled(stream) is expected
    monkeypatch.setattr(sys, "stderr", stream)
    assert colors_enabled() is expected
    rendered = HorsiesError("x").format_rust_style()
    assert (ESC in rendered) is expected


# --------------------------------------------------------------------------------------------------
# Subclasses: some also derive from ValueError, TypeError or KeyError, so existing except clauses
# keep catching them
# --------------------------------------------------------------------------------------------------


def test_subclass_hierarchy() -> None:
    assert issubclass(ConfigurationError, HorsiesError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(TaskDefinitionError, HorsiesError)
    assert issubclass(TaskDefinitionError, TypeError)
    assert issubclass(WorkflowValidationError, HorsiesError)
    assert not issubclass(WorkflowValidationError, ValueError)
    assert issubclass(RegistryError, HorsiesError)
    assert issubclass(NotRegistered, RegistryError)
    assert issubclass(NotRegistered, KeyError)
    assert issubclass(DuplicateTaskNameError, RegistryError)


def test_configuration_error_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match="bad config"):
        raise ConfigurationError("bad config", code=ErrorCode.CONFIG_INVALID_PREFETCH)


def test_task_definition_error_is_caught_as_type_error() -> None:
    with pytest.raises(TypeError, match="no return type"):
        raise TaskDefinitionError("no return type", code=ErrorCode.TASK_NO_RETURN_TYPE)


def test_not_registered_fields_and_message() -> None:
    error = NotRegistered("emails.send")
    assert error.task_name == "emails.send"
    assert error.code is ErrorCode.TASK_NOT_REGISTERED
    assert error.message == "task 'emails.send' not registered"
    assert error.args == ("emails.send",)
    assert "error[E300]: task 'emails.send' not registered" in str(error)
    assert NotRegistered("x", "custom message").message == "custom message"


class _Registry(Mapping[str, int]):
    """A mapping whose lookups raise NotRegistered, like app.tasks."""

    def __init__(self) -> None:
        self._items = {"known": 1}

    def __getitem__(self, key: str) -> int:
        try:
            return self._items[key]
        except KeyError:
            raise NotRegistered(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_not_registered_makes_mapping_lookups_work() -> None:
    registry = _Registry()
    assert "known" in registry
    assert "unknown" not in registry
    assert registry.get("unknown") is None
    with pytest.raises(KeyError):
        registry["unknown"]


def test_duplicate_task_name_error_fields() -> None:
    error = DuplicateTaskNameError("emails.send")
    assert error.task_name == "emails.send"
    assert error.code is ErrorCode.TASK_DUPLICATE_NAME
    assert "emails.send" in error.message


# --------------------------------------------------------------------------------------------------
# ValidationReport / MultipleValidationErrors / raise_collected
# --------------------------------------------------------------------------------------------------


def _unlocated(message: str, code: ErrorCode | None = None) -> ConfigurationError:
    return ConfigurationError(message, code=code).with_location(None)


def test_validation_report_collects_and_renders() -> None:
    report = ValidationReport("AppConfig")
    assert report.phase_name == "AppConfig"
    assert not report.has_errors()
    first = _unlocated("first", ErrorCode.CONFIG_INVALID_PREFETCH)
    second = _unlocated("second")
    report.add(first)
    report.add(second)
    assert report.has_errors()
    assert report.errors == [first, second]
    expected = str(first) + "\n" + str(second) + "\n\nerror: aborting due to 2 previous errors"
    assert report.format_rust_style(use_colors=False) == expected
    assert str(report) == expected


def test_validation_report_trailer_wording_is_fixed_for_one_error() -> None:
    report = ValidationReport("phase")
    report.add(_unlocated("only"))
    assert str(report).endswith("\n\nerror: aborting due to 1 previous error")


def test_multiple_validation_errors_delegates_to_the_report() -> None:
    report = ValidationReport("phase")
    report.add(_unlocated("a"))
    report.add(_unlocated("b"))
    error = MultipleValidationErrors(report)
    assert error.report is report
    assert error.errors == report.errors
    assert error.message == "aborting due to 2 previous errors"
    assert error.code is None
    assert error.location is None
    assert str(error) == str(report)
    coloured = error.format_rust_style(use_colors=True)
    assert coloured == report.format_rust_style(use_colors=True)


def test_raise_collected_with_no_errors_returns() -> None:
    raise_collected([], "phase")


def test_raise_collected_with_one_error_raises_it_unchanged() -> None:
    error = WorkflowValidationError("one", code=ErrorCode.WORKFLOW_NO_ROOT_TASKS)
    with pytest.raises(WorkflowValidationError) as excinfo:
        raise_collected([error], "phase")
    assert excinfo.value is error


def test_raise_collected_with_several_errors_raises_multiple() -> None:
    first = WorkflowValidationError("a", code=ErrorCode.WORKFLOW_INVALID_DEPENDENCY)
    second = _unlocated("b")
    with pytest.raises(MultipleValidationErrors) as excinfo:
        raise_collected([first, second], "gate 1")
    raised = excinfo.value
    assert type(raised) is MultipleValidationErrors
    assert not isinstance(raised, ValueError)
    assert raised.report.phase_name == "gate 1"
    assert raised.report.errors == [first, second]


def test_raise_collected_configuration_errors_stay_value_errors() -> None:
    errors = [_unlocated("a"), _unlocated("b")]
    with pytest.raises(ValueError) as excinfo:
        raise_collected(errors, "RecoveryConfig")
    raised = excinfo.value
    assert isinstance(raised, MultipleConfigurationErrors)
    assert isinstance(raised, MultipleValidationErrors)
    assert isinstance(raised, ConfigurationError)
    assert raised.errors == errors


def test_collected_error_returns_what_raise_collected_would_raise() -> None:
    assert collected_error([], "phase") is None
    single = _unlocated("one")
    assert collected_error([single], "phase") is single
    several = collected_error([single, _unlocated("two")], "phase")
    assert isinstance(several, MultipleConfigurationErrors)
    assert several.report.phase_name == "phase"


# --------------------------------------------------------------------------------------------------
# Pickling (errors cross process boundaries)
# --------------------------------------------------------------------------------------------------


def _samples() -> list[HorsiesError]:
    report = ValidationReport("AppConfig")
    report.add(ConfigurationError("a", code=ErrorCode.CONFIG_INVALID_PREFETCH, notes=["n"]))
    report.add(ConfigurationError("b", code=ErrorCode.CONFIG_INVALID_CLUSTER_CAP))
    return [
        HorsiesError("base", help_text="h"),
        WorkflowValidationError("wf", code=ErrorCode.WORKFLOW_CYCLE_DETECTED),
        TaskDefinitionError("td", code=ErrorCode.TASK_NO_RETURN_TYPE),
        ConfigurationError("cfg", code=ErrorCode.BROKER_INVALID_URL, notes=["n1", "n2"]),
        RegistryError("reg"),
        NotRegistered("missing"),
        DuplicateTaskNameError("dup"),
        MultipleValidationErrors(report),
        MultipleConfigurationErrors(report),
    ]


def _state(error: HorsiesError) -> tuple[Any, ...]:
    extra: Any = None
    if isinstance(error, MultipleValidationErrors):
        extra = [_state(member) for member in error.errors]
    return (
        type(error),
        error.message,
        error.code,
        error.location,
        error.notes,
        error.help_text,
        error.args,
        getattr(error, "task_name", None),
        extra,
    )


@pytest.mark.parametrize("error", _samples(), ids=lambda e: type(e).__name__)
def test_errors_survive_pickling(error: HorsiesError) -> None:
    restored = pickle.loads(pickle.dumps(error))
    assert _state(restored) == _state(error)
    assert str(restored) == str(error)


def test_unpickling_does_not_redetect_the_location() -> None:
    error = HorsiesError("x").with_location(None)
    assert pickle.loads(pickle.dumps(error)).location is None


def _raise_in_child(kind: str) -> None:
    if kind == "config":
        raise ConfigurationError("from child", code=ErrorCode.CONFIG_INVALID_RECOVERY, notes=["n"])
    raise NotRegistered("child.task")


@pytest.mark.timeout(60)
def test_errors_cross_a_process_boundary() -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with pytest.raises(ConfigurationError) as excinfo:
            pool.submit(_raise_in_child, "config").result(timeout=50)
        assert excinfo.value.code is ErrorCode.CONFIG_INVALID_RECOVERY
        assert excinfo.value.notes == ["n"]
        with pytest.raises(NotRegistered) as not_registered:
            pool.submit(_raise_in_child, "registry").result(timeout=50)
        assert not_registered.value.task_name == "child.task"


# --------------------------------------------------------------------------------------------------
# Uncaught-exception hook
# --------------------------------------------------------------------------------------------------


class _RecordingHook:
    def __init__(self) -> None:
        self.calls: list[BaseException] = []

    def __call__(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        self.calls.append(exc)


@pytest.fixture
def previous_hook(monkeypatch: pytest.MonkeyPatch) -> _RecordingHook:
    """A recording hook installed before ours; monkeypatch restores sys.excepthook afterwards."""
    recorder = _RecordingHook()
    monkeypatch.setattr(sys, "excepthook", recorder)
    for name in ("HORSIES_VERBOSE", "HORSIES_PLAIN_ERRORS", "HORSIES_FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return recorder


def _exc_info(
    error: BaseException,
) -> tuple[type[BaseException], BaseException, TracebackType | None]:
    try:
        raise error
    except BaseException as caught:
        return type(caught), caught, caught.__traceback__


def test_hook_install_is_idempotent(previous_hook: _RecordingHook) -> None:
    install_exception_hook()
    installed = sys.excepthook
    assert installed is not previous_hook
    install_exception_hook()
    assert sys.excepthook is installed


def test_hook_renders_horsies_errors_on_stderr(
    previous_hook: _RecordingHook, capsys: pytest.CaptureFixture[str]
) -> None:
    install_exception_hook()
    error = ConfigurationError("boom", code=ErrorCode.CLI_INVALID_ARGS).with_location(None)
    sys.excepthook(*_exc_info(error))
    captured = capsys.readouterr()
    assert captured.err == str(error) + "\n"
    assert captured.out == ""
    assert previous_hook.calls == []


def test_hook_verbose_appends_the_traceback(
    previous_hook: _RecordingHook,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HORSIES_VERBOSE", "true")
    install_exception_hook()
    error = HorsiesError("boom").with_location(None)
    sys.excepthook(*_exc_info(error))
    err = capsys.readouterr().err
    assert err.startswith(str(error) + "\n")
    assert "Full traceback (HORSIES_VERBOSE=1):\n" in err
    assert "Traceback (most recent call last):" in err
    assert err.index("Full traceback") < err.index("Traceback (most recent")


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_hook_plain_errors_uses_the_standard_hook(
    previous_hook: _RecordingHook,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    monkeypatch.setenv("HORSIES_PLAIN_ERRORS", value)
    install_exception_hook()
    error = HorsiesError("boom")
    sys.excepthook(*_exc_info(error))
    assert previous_hook.calls == [error]
    assert capsys.readouterr().err == ""


def test_hook_passes_other_exceptions_through(
    previous_hook: _RecordingHook, capsys: pytest.CaptureFixture[str]
) -> None:
    install_exception_hook()
    error = RuntimeError("not ours")
    sys.excepthook(*_exc_info(error))
    assert previous_hook.calls == [error]
    assert capsys.readouterr().err == ""


@pytest.mark.timeout(60)
def test_uncaught_error_in_a_real_process_is_rendered_without_traceback(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            from horsies.errors import ConfigurationError, ErrorCode, install_exception_hook

            install_exception_hook()
            raise ConfigurationError("broken setting", code=ErrorCode.CLI_INVALID_ARGS)
            """
        )
    )
    env = {**os.environ, "NO_COLOR": "1"}
    for name in ("HORSIES_FORCE_COLOR", "HORSIES_VERBOSE", "HORSIES_PLAIN_ERRORS"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 1
    assert "error[E206]: broken setting" in proc.stderr
    assert "  --> app.py:5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ESC not in proc.stderr
