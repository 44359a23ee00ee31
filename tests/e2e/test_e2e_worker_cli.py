"""``horsies worker`` command line: options (``--processes`` defaults to the CPU count) and exit
codes."""

from __future__ import annotations

import pytest
from process_harness import run_horsies

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_help_lists_every_option() -> None:
    result = run_horsies("worker", "--help")
    assert result.returncode == 0
    for option in (
        "--module",
        "--processes",
        "--loglevel",
        "--max-claim-batch",
        "--max-claim-per-worker",
        "--shutdown-timeout",
    ):
        assert option in result.stdout
    assert "CPU count" in " ".join(result.stdout.split())  # the default of --processes


@pytest.mark.parametrize(
    "locator",
    [
        "tests.e2e.apps.no_such_module:app",  # module not found (E206)
        "tests.e2e.apps.basic:no_such_attr",  # attribute missing
        "tests/e2e/apps/missing_file.py:app",  # file not found
        "tests.e2e.apps.basic:create_app",  # not a Horsies instance
    ],
)
def test_bad_locator_exits_1(locator: str) -> None:
    result = run_horsies("worker", locator, "--processes", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_module_option_wins_over_positional() -> None:
    result = run_horsies(
        "worker", "tests.e2e.apps.basic:app", "-m", "tests.e2e.apps.no_such_module:app"
    )
    assert result.returncode == 1
    assert "no_such_module" in result.stdout + result.stderr


def test_invalid_processes_is_a_usage_error() -> None:
    result = run_horsies("worker", "tests.e2e.apps.basic:app", "--processes", "0")
    assert result.returncode != 0
    assert "processes" in result.stderr


def test_unreachable_database_exits_1() -> None:
    result = run_horsies("worker", "tests.e2e.apps.unreachable:app", "--processes", "1")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "secret" not in output  # the password is never printed
    assert "Traceback" not in output
