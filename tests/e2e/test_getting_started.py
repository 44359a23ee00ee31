"""docs/getting-started.md, followed literally: its files written, its commands run in order.

The page is read, not copied: every ``python`` block that starts with ``# <path>`` is written to
that path of a fresh project folder, and every line of every ``bash`` block after the install
section is run there, the way a reader would type it (``uv run`` resolved to this environment,
which holds the same distributions the install step adds). The worker and Syce are the two long
runners: the worker is started and left running (as in its own terminal), Syce is run on a
pseudo-terminal until it has drawn its dashboard, then quit with ``q``. A line's
``# prints: <text>`` comment is checked against what it printed.

The install section itself (``git clone``, ``uv init``, ``uv add``) is not run: it needs the
network and a second copy of the repository; the test suite's environment is what it produces.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from process_harness import ROOT, LoggedProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PAGE = ROOT / "docs" / "getting-started.md"
NOT_RUN = ("See it run first", "Install")
"""Sections whose commands this test leaves out (the demo has tests of its own)."""
COMMAND_TIMEOUT_S = 120.0
_BLOCK = re.compile(r"^## (?P<section>.+?)$|^```(?P<lang>\w+)\n(?P<body>.*?)^```$", re.M | re.S)
_EXPORT = re.compile(r'^export (?P<name>\w+)="\$\((?P<command>.+)\)"$')
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


@dataclass
class Step:
    section: str
    kind: str  # "file" or "command"
    text: str
    path: str = ""
    prints: str | None = None


def page_steps() -> list[Step]:
    steps: list[Step] = []
    section = ""
    for match in _BLOCK.finditer(PAGE.read_text(encoding="utf-8")):
        if match["section"]:
            section = match["section"].strip()
            continue
        if section in NOT_RUN:
            continue
        body = match["body"]
        if match["lang"] == "python" and body.startswith("# "):
            first, _, rest = body.partition("\n")
            steps.append(Step(section, "file", rest, path=first[2:].strip()))
        elif match["lang"] == "bash":
            for line in body.splitlines():
                command, _, comment = line.partition("  #")
                if not command.strip():
                    continue
                prints = (
                    comment.strip().removeprefix("prints:").strip()
                    if "prints:" in comment
                    else None
                )
                steps.append(Step(section, "command", command.strip(), prints=prints))
    return steps


@dataclass
class Reader:
    """What the reader's shell holds: the project folder and the exported variables."""

    project: Path
    env: dict[str, str]
    background: list[LoggedProcess] = field(default_factory=list[LoggedProcess])

    def resolve(self, command: str) -> str:
        # `uv run X` runs X from the project's environment; here that is this test's environment.
        return command.removeprefix("uv run ").replace("$(uv run ", "$(")

    def run(self, command: str) -> str:
        done = subprocess.run(
            ["bash", "-c", self.resolve(command)],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, (
            f"`{command}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
        return done.stdout


@pytest.fixture
def reader() -> Iterator[Reader]:
    # A short folder: the embedded server's unix socket path must stay under the kernel's limit.
    home = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))
    project = home / "myproject"
    project.mkdir()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HORSIES_", "TASKLIB_", "DATABASE_URL"))
    }
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
    )
    env.pop("VIRTUAL_ENV", None)
    state = Reader(project, env)
    try:
        yield state
    finally:
        for process in state.background:
            process.reap()
        subprocess.run(
            ["horsies", "db", "stop"], cwd=project, env=env, timeout=60, check=False,
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


DASHBOARD_TEXT = ("Tasks by status", "Completed", "Active workers")
"""What Syce's dashboard shows once it has drawn it (labels of its panels)."""


def run_syce(reader: Reader, command: str) -> str:
    """Run Syce on a pseudo-terminal until its dashboard is drawn, press ``q``; the screen text."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    env = {**reader.env, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {reader.resolve(command)}"],
        cwd=reader.project, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
        start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    screen = ""
    try:
        deadline = time.monotonic() + 60

        def drawn() -> bool:
            return all(text in screen for text in DASHBOARD_TEXT)

        while not drawn() and time.monotonic() < deadline:
            assert proc.poll() is None, f"syce exited {proc.returncode}:\n{screen}"
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                screen += _ANSI.sub("", os.read(controller, 65536).decode(errors="replace"))
        assert drawn(), screen[-2000:]
        os.write(controller, b"q")
        end = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < end:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    os.read(controller, 65536)
                except OSError:
                    break
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(controller)
    return screen


def test_the_getting_started_page_works_when_followed_literally(reader: Reader) -> None:
    steps = page_steps()
    assert [s.section for s in steps if s.kind == "command"], "no commands found on the page"
    worker: LoggedProcess | None = None
    for step in steps:
        if step.kind == "file":
            target = reader.project / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.text, encoding="utf-8")
            continue
        command = step.text
        exported = _EXPORT.match(command)
        if exported:
            reader.env[exported["name"]] = reader.run(exported["command"]).strip()
        elif command.startswith("uv run horsies worker"):
            worker = LoggedProcess(
                ["bash", "-c", f"exec {reader.resolve(command)}"],
                reader.env,
                reader.project.parent / "worker.log",
                cwd=reader.project,
            )
            reader.background.append(worker)
            worker.wait_ready(timeout=60)
        elif command.startswith("uv run syce"):
            run_syce(reader, command)
        elif command.startswith("uv run horsies db stop"):
            # The page stops the worker (Ctrl+C in its terminal) before the database.
            assert worker is not None
            worker.send_signal(signal.SIGINT)
            assert worker.wait_exit(timeout=60) == 0
            assert reader.run(command).strip() == "stopped"
        else:
            output = reader.run(command)
            if step.prints is not None:
                assert output.strip() == step.prints, output
    assert worker is not None, "the page never starts a worker"
