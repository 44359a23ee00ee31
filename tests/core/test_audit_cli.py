"""Audit: the `horsies` command line and `horsies.run_worker`.

`horsies check` accepts every locator form; every bad argument of `horsies check` and
`horsies worker` is rendered as a `HorsiesError` (E206) on stderr with exit status 1 and no
Python traceback; `from horsies import run_worker` reaches the worker package or says how to get it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import horsies
import pytest
from process_harness import run_horsies

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
OK_SUFFIX = (
    "ok: all validations passed\n  2 task(s) registered\n  scheduler: start-up validations passed\n"
    "  worker: start-up validations passed\n"
)


def assert_rendered(result: subprocess.CompletedProcess[str], header: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert header in result.stderr, output


# -- horsies check: the locator forms not covered elsewhere ----------------------------------------


@pytest.mark.parametrize(
    ("args", "cwd"),
    [
        (["check_ok_app"], APPS),  # dotted module, the single app is discovered
        ([str(APPS / "check_ok_app")], ROOT),  # file path without ".py"
        (["-m", str(APPS / "check_ok_app.py")], ROOT),  # file path without attribute, as -m
    ],
    ids=["dotted-module", "file-without-suffix", "module-option-file"],
)
def test_check_accepts_every_locator_form(args: list[str], cwd: Path) -> None:
    result = run_horsies("check", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(OK_SUFFIX)


# -- horsies worker: bad arguments are rendered errors ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "header"),
    [
        ([], "error[E206]: missing app locator"),
        (["tests.e2e.apps.basic:app", "--processes", "0"], "error[E206]: Invalid value for"),
        (["tests.e2e.apps.basic:app", "--loglevel", "LOUD"], "error[E206]: Invalid value for"),
        (["tests.e2e.apps.basic:app", "--bogus"], "error[E206]: No such option '--bogus'"),
        (
            ["tests.e2e.apps.no_such_module_xyz:app"],
            "error[E208]: module not found: tests.e2e.apps.no_such_module_xyz",
        ),
    ],
    ids=["no-locator", "processes-0", "bad-loglevel", "unknown-option", "module-not-found"],
)
def test_worker_bad_arguments_are_rendered_errors(args: list[str], header: str) -> None:
    assert_rendered(run_horsies("worker", *args), header)


@pytest.mark.parametrize(
    ("locator", "header"),
    [
        ("tests.e2e.apps.basic:no_such_attr", "error[E208]: cannot load app from"),
        ("tests/e2e/apps/missing_file.py:app", "error[E208]: cannot load app from"),
        ("tests.e2e.apps.basic:create_app", "error[E208]: cannot load app from"),
        (f"{APPS / 'check_crash_app.py'}:app", "error[E208]: failed to import app module"),
    ],
    ids=["missing-attribute", "missing-file", "not-an-app", "module-raises"],
)
def test_worker_bad_locators_are_rendered_like_check(locator: str, header: str) -> None:
    result = run_horsies("worker", locator, "--processes", "1")
    assert_rendered(result, header)
    # The same locator gives the same rendered error from `horsies check`.
    assert header in run_horsies("check", locator).stderr


# -- horsies.run_worker ----------------------------------------------------------------------------


def test_run_worker_is_public_and_delegates_to_the_worker_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import horsies_worker.run

    calls: list[tuple[Any, dict[str, Any]]] = []

    def fake_run_worker(app_or_locator: Any, **options: Any) -> None:
        calls.append((app_or_locator, options))

    monkeypatch.setattr(horsies_worker.run, "run_worker", fake_run_worker)
    assert "run_worker" in horsies.__all__
    horsies.run_worker("myapp.instance:app", processes=3, max_claim_batch=4)
    assert calls == [("myapp.instance:app", {"processes": 3, "max_claim_batch": 4})]


def test_run_worker_without_the_worker_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "horsies_worker", None)
    with pytest.raises(ImportError) as info:
        horsies.run_worker("myapp.instance:app")
    assert "pip install horsies-worker" in str(info.value)
    assert info.value.name == "horsies_worker"


# -- configuration errors raised while importing the app ------------------------------------------

TWO_ERRORS_APP = (
    "from horsies.app import Horsies\n"
    "from horsies.config import AppConfig, PostgresConfig\n"
    "config = AppConfig(\n"
    "    broker=PostgresConfig(database_url='postgresql://u:p@localhost:1/db'),\n"
    "    cluster_wide_cap=0,\n"
    "    prefetch_buffer=-1,\n"
    ")\n"
    "app = Horsies(config)\n"
)


@pytest.mark.parametrize("command", ["check", "worker"])
def test_collected_config_errors_of_the_app_module_are_rendered_together(
    command: str, tmp_path: Path
) -> None:
    app_file = tmp_path / "two_errors_app.py"
    app_file.write_text(TWO_ERRORS_APP, encoding="utf-8")
    result = run_horsies(command, f"{app_file}:app")
    assert_rendered(result, "error[E201]: cluster_wide_cap must be positive")
    assert "error[E202]: prefetch_buffer must be non-negative" in result.stderr
    assert f"{app_file}:3" in result.stderr  # the AppConfig( line of the user's module
    assert result.stderr.rstrip().endswith("error: aborting due to 2 previous errors")
