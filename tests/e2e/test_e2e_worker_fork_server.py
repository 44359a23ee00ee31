"""``horsies worker`` forks its fork server from the main process before it loads the database
driver, and the fork server forks the children: the tree is main → fork server → children, the
children share the fork server's pages (and through it the main process's), and they load the
driver only when a task sends."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from apps.fork_tree import create_app
from e2e_harness import WorkerProcess, producer_app, worker_fixture
from horsies.app import Horsies
from process_harness import private_and_resident_kib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROCESSES = 2
GET_MS = 20_000

app = producer_app(create_app)
worker = worker_fixture("fork_tree", "--processes", str(PROCESSES))


def mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_the_children_are_forked_by_a_fork_server_forked_from_the_main_process(
    worker: WorkerProcess, app: Horsies, tmp_path: Path
) -> None:
    calls = [(["psycopg"], str(tmp_path), PROCESSES)] * PROCESSES
    answers = [h.get(timeout_ms=GET_MS).unwrap() for h in app.tasks["tree.where"].send_many(calls)]
    children = {int(pid) for pid, _ in answers}
    assert len(children) == PROCESSES
    assert [loaded for _, loaded in answers] == [{"psycopg": False}] * PROCESSES

    (server,) = {psutil.Process(pid).ppid() for pid in children}
    assert psutil.Process(server).ppid() == worker.pid
    assert psutil.Process(server).name() == "horsies-fork"
    assert {psutil.Process(pid).name() for pid in children} == {"horsies-child"}
    tree = {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
    assert tree == {server, *children}  # no helper process besides the fork server
    # The driver is in the main process only: its library is mapped nowhere else.
    assert "psycopg" in mapped_files(worker.pid)
    for pid in (server, *children):
        assert "psycopg" not in mapped_files(pid)
    # A new interpreter holds ~60 % of its pages alone; a forked child, after tasks, well under
    # a third.
    for pid in children:
        private, resident = private_and_resident_kib(pid)
        assert private < resident / 3, (pid, private, resident)
