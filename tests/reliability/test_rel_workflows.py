"""Scenario 7: workflows under faults. Workers are SIGKILLed (whole process group) while four
200-node workflows run on two workers of three processes each: a chain (``n0 -> ... -> n199``) and a
wide fan-out/fan-in (``root -> f0..f197 -> sink``), once with nodes that are not retried
(``rel.work``) and once with nodes retried after a crash (``rel.retried``).

What must happen (node propagation, on_error, workflow outcome, reconciliation of node rows with
their tasks, reaping of stale tasks, crash retries), and what is asserted:

- a node whose task was RUNNING on the killed worker ends with that task: the surviving worker's
  reaper fails the task with ``WORKER_CRASHED`` (stale runner heartbeat) and the workflow
  reconciliation carries it into the node (the task ended but its node did not). With
  ``auto_retry_for=["WORKER_CRASHED"]`` the task is retried instead and the node stays RUNNING
  until the retry's result arrives;
- without retry the node is FAILED with ``WORKER_CRASHED``; under ``on_error=FAIL`` its
  dependents are SKIPPED, every other node still runs, and the workflow ends FAILED with that
  error. With retries every node ends COMPLETED and so does the workflow;
- tasks CLAIMED by the killed worker but not started go back to PENDING and run once;
- every node row ends terminal (no node stuck), each node's task ran at most once per attempt
  (ledger: ends <= retry_count + 1), no task lost; a SKIPPED node never ran.

The crashes are made deterministic: in each workflow a "stall" node sleeps 60 s on its first run;
as the ledger shows each of them started, the test kills the worker running it (the ledger row
names the worker; ``chaos.Chaos.kill`` starts the replacement and measures the recovery). Whatever
else those workers were running or had claimed at that moment (fan branches, chain links) is hit
too, at a moment the test does not choose. The four workflows run together so the scenario pays
for worker start-ups and recoveries once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable

import psycopg
import pytest
from db_rows import sql
from horsies.app import Horsies
from horsies.results import LibraryErrorCode, TaskError
from horsies.workflows.handle import WorkflowHandle
from horsies.workflows.status import WorkflowStatus
from process_harness import wait_until

from tests.reliability.apps.wf_ledger_app import (
    LedgerChain,
    LedgerFan,
    NodeRow,
    node_key,
    settled_nodes,
    tree_nodes,
)
from tests.reliability.chaos import Chaos, ChaosPlan
from tests.reliability.harness import StartWorker
from tests.reliability.ledger import LedgerReport, compare
from tests.reliability.workload import task_states

pytestmark = pytest.mark.timeout(240)

SIZE = 200
PROCESSES = ("--processes", "3")
FAN_SECONDS = 0.02
"""Each fan node sleeps this long (the fans are still running while the chains advance)."""
TERMINAL_TIMEOUT_MS = 150_000
"""Bound for a workflow to end after the faults (recovery: 2 s thresholds, 1 s checks)."""


def _start_pids(conninfo: str, keys: Iterable[str]) -> dict[str, list[int]]:
    """Key -> worker pids of its ledger ``start`` rows, in order (keys never started absent)."""
    query = (
        "SELECT key, worker_pid FROM reliability_ledger"
        " WHERE key = ANY(%s) AND phase = 'start' ORDER BY seq"
    )
    pids: dict[str, list[int]] = {}
    for row in sql(conninfo, query, (list(keys),)):
        pids.setdefault(row["key"], []).append(row["worker_pid"])
    return pids


def _kill_stalled(conninfo: str, chaos: Chaos, keys: list[str], roots: list[str]) -> None:
    """As each stall node starts, kill the worker running it, until every stall node started or
    can no longer run (SKIPPED after an earlier crash in its workflow)."""
    pending = set(keys)

    def progress() -> tuple[dict[str, list[int]], set[str]] | None:
        started = _start_pids(conninfo, pending)
        nodes = tree_nodes(conninfo, roots)
        skipped = {n.key for n in nodes if n.key in pending and n.status == "SKIPPED"}
        return (started, skipped) if started or skipped else None

    while pending:
        started, skipped = wait_until(progress, 90, f"stall nodes {sorted(pending)} to start")
        victims = {pids[0] for pids in started.values()}
        for worker in list(chaos.workers):
            if worker.pid in victims:
                chaos.kill(worker)
        pending.difference_update(started.keys() | skipped)


def _wait_terminal(handles: Iterable[WorkflowHandle]) -> None:
    deadline = time.monotonic() + TERMINAL_TIMEOUT_MS / 1000
    for handle in handles:
        left = max(1, int((deadline - time.monotonic()) * 1000))
        handle.get(timeout_ms=left)
        assert handle.status().is_terminal, f"workflow {handle.workflow_id} did not end"


def _check_nodes(
    conninfo: str, handles: list[WorkflowHandle]
) -> tuple[list[NodeRow], LedgerReport]:
    """Every node settled (terminal, agreeing with its task), the ledger accounts for every task
    (lost and duplicated asserted 0), a SKIPPED node never ran; returns the nodes and the report."""
    nodes, ids = settled_nodes(conninfo, [h.workflow_id for h in handles])
    assert len(nodes) == len(handles) * SIZE
    report = compare(conninfo, ids)
    report.assert_nothing_lost_or_duplicated()
    skipped = [n.key for n in nodes if n.status == "SKIPPED"]
    assert not [k for k in skipped if k and report.starts[k]], "a SKIPPED node ran"
    return nodes, report


def _by_node(nodes: list[NodeRow], handle: WorkflowHandle) -> dict[str, NodeRow]:
    return {n.node_id: n for n in nodes if n.workflow_id == handle.workflow_id}


def _error_code(handle: WorkflowHandle) -> str:
    outcome = handle.get(timeout_ms=1_000)
    assert outcome.is_err(), outcome
    error = outcome.unwrap_err()
    assert isinstance(error, TaskError)
    return str(error.error_code)


def _retried(conninfo: str, task_ids: list[str]) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM horsies_tasks WHERE id = ANY(%s) AND retry_count > 0",
            (task_ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_workflows_reach_their_documented_terminal_state_when_workers_are_killed(
    ledger: str, start_worker: StartWorker, make_producer: Callable[..., Horsies]
) -> None:
    """Without retry the killed nodes end FAILED ``WORKER_CRASHED``, their dependents SKIPPED,
    every other node COMPLETED and the workflow FAILED with ``WORKER_CRASHED``; with retry every
    node and the workflow end COMPLETED. No node stuck, no task lost or run twice per attempt."""
    app = make_producer()
    workers = [start_worker(*PROCESSES, ready=False) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    tag = uuid.uuid4().hex[:8]
    plain = f"{tag}-plain"
    retried = f"{tag}-retried"
    stalls = {"stall": ["n30", "f10"], "stall_s": 60.0}
    plain_chain = LedgerChain.build_with(app, tag=f"{plain}-chain", size=SIZE, **stalls).start()
    plain_fan = LedgerFan.build_with(
        app, tag=f"{plain}-fan", size=SIZE, seconds=FAN_SECONDS, **stalls
    ).start()
    retried_stalls = {"stall": ["n20", "f10"], "stall_s": 60.0, "retried": True}
    retried_chain = LedgerChain.build_with(
        app, tag=f"{retried}-chain", size=SIZE, **retried_stalls
    ).start()
    retried_fan = LedgerFan.build_with(
        app, tag=f"{retried}-fan", size=SIZE, seconds=FAN_SECONDS, **retried_stalls
    ).start()
    handles = [plain_chain, plain_fan, retried_chain, retried_fan]
    stall_keys = [
        node_key(f"{plain}-chain", "n30"),
        node_key(f"{plain}-fan", "f10"),
        node_key(f"{retried}-chain", "n20"),
        node_key(f"{retried}-fan", "f10"),
    ]

    chaos = Chaos(
        ledger,
        workers,
        lambda: start_worker(*PROCESSES, ready=False),
        ChaosPlan(seed=7, kill_every=None),  # targeted kills only (Chaos.kill)
    )
    _kill_stalled(ledger, chaos, stall_keys, [h.workflow_id for h in handles])
    _wait_terminal(handles)
    nodes, report = _check_nodes(ledger, handles)
    killed = set(chaos.report.killed_pids)

    # -- no retry ---------------------------------------------------------------------------------
    assert plain_chain.status() is WorkflowStatus.FAILED
    assert plain_fan.status() is WorkflowStatus.FAILED
    assert _error_code(plain_chain) == LibraryErrorCode.WORKER_CRASHED
    assert _error_code(plain_fan) == LibraryErrorCode.WORKER_CRASHED
    # Chain: the links before the crashed one completed, that link (run by a killed worker)
    # failed, the rest was skipped.
    links = _by_node(nodes, plain_chain)
    crashed_link = next(i for i in range(SIZE) if links[f"n{i}"].status != "COMPLETED")
    assert crashed_link <= 30
    expected = {f"n{i}": "COMPLETED" for i in range(crashed_link)}
    expected |= {f"n{crashed_link}": "FAILED"}
    expected |= {f"n{i}": "SKIPPED" for i in range(crashed_link + 1, SIZE)}
    assert {k: n.status for k, n in links.items()} == expected
    crashed = links[f"n{crashed_link}"]
    assert crashed.error_code == LibraryErrorCode.WORKER_CRASHED
    assert crashed.key is not None
    assert crashed.task_id is not None
    assert (
        task_states(ledger, [crashed.task_id])[crashed.task_id].worker_id in chaos.report.killed_ids
    )
    # Fan: every FAILED branch (WORKER_CRASHED) was RUNNING on a killed worker, and every branch a
    # kill interrupted (started there, never ended) FAILED; every other branch completed (those
    # CLAIMED by a killed worker were requeued and ran once); the join is skipped. A FAILED branch
    # may have no ledger row (killed after it went RUNNING, before the child ran it) or an "end"
    # (killed after its task returned, before the result was stored).
    branches = _by_node(nodes, plain_fan)
    failed = {n.key for n in branches.values() if n.status == "FAILED"}
    assert {n.error_code for n in branches.values() if n.status == "FAILED"} == {
        LibraryErrorCode.WORKER_CRASHED
    }
    starts = _start_pids(ledger, [n.key for n in branches.values() if n.key])
    interrupted = {k for k, pids in starts.items() if report.ends[k] == 0 and pids[-1] in killed}
    assert stall_keys[1] in interrupted
    assert interrupted <= failed, interrupted - failed
    owners = task_states(
        ledger, [n.task_id for n in branches.values() if n.status == "FAILED" and n.task_id]
    )
    assert {state.worker_id for state in owners.values()} <= set(chaos.report.killed_ids)
    assert branches["root"].status == "COMPLETED"
    assert branches["sink"].status == "SKIPPED"
    assert Counter(n.status for n in branches.values()) == Counter(
        {"COMPLETED": SIZE - 1 - len(failed), "FAILED": len(failed), "SKIPPED": 1}
    )

    # -- retry ------------------------------------------------------------------------------------
    for handle in (retried_chain, retried_fan):
        assert handle.status() is WorkflowStatus.COMPLETED, handle.get(timeout_ms=1_000)
        assert Counter(n.status for n in _by_node(nodes, handle).values()) == Counter(
            {"COMPLETED": SIZE}
        )
    last = node_key(f"{retried}-chain", f"n{SIZE - 1}")
    assert retried_chain.get(timeout_ms=1_000).unwrap() == last
    # The stall nodes crashed in their first run and finished on a retry.
    # (A retry may itself be hit by a later kill: ends stay <= attempts, which compare checked.)
    for key in stall_keys[2:]:
        assert report.starts[key] >= 2, key
        assert report.ends[key] >= 1, key
    retried_tasks = _retried(
        ledger,
        [
            n.task_id
            for h in (retried_chain, retried_fan)
            for n in _by_node(nodes, h).values()
            if n.task_id is not None
        ],
    )
    assert retried_tasks >= 2

    print(
        f"\n[scenario 7] workflows=4 nodes={len(nodes)} tasks={report.sent} "
        f"statuses={dict(report.statuses)} codes={dict(report.error_codes)} "
        f"failed_nodes={len(failed) + 1} retried_nodes={retried_tasks} "
        f"{chaos.report.summary()} lost={report.lost} duplicated={report.duplicated}"
    )
