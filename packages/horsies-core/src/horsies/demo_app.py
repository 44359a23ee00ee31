"""The tasks and the workflow that ``horsies demo`` runs; its worker imports this module as
``horsies.demo_app:app``.

The database URL comes from ``HORSIES_DEMO_DATABASE_URL`` so the demo process, the worker it
starts and the worker's children all build the same app. Building the app does no I/O, so
importing this module without the variable is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

from horsies import env
from horsies.app import Horsies
from horsies.config import AppConfig, PostgresConfig
from horsies.results import TaskError, TaskResult
from horsies.retry import RetryPolicy
from horsies.workflows.context import WorkflowContext
from horsies.workflows.definition import WorkflowDefinition
from horsies.workflows.nodes import SuccessCase, SuccessPolicy, TaskNode

app = Horsies(
    AppConfig(
        broker=PostgresConfig(
            database_url=os.environ.get(
                env.DEMO_DATABASE_URL, "postgresql://localhost/horsies_demo"
            )
        )
    )
)


@app.task("demo.square")
def square(n: int) -> TaskResult[int, TaskError]:
    """The batch task: cheap, so the demo measures the queue rather than the work."""
    return TaskResult(ok=n * n)


@app.task("demo.divide")
def divide(a: float, b: float) -> TaskResult[float, TaskError]:
    """Fails with UNHANDLED_EXCEPTION (ZeroDivisionError) when ``b`` is 0."""
    return TaskResult(ok=a / b)


@app.task(
    "demo.flaky_fetch",
    retry_policy=RetryPolicy.fixed([1], jitter=False),
    auto_retry_for=["ConnectionError"],
)
def flaky_fetch(marker_file: str) -> TaskResult[str, TaskError]:
    """Raises ConnectionError on its first attempt (leaving a marker file), then succeeds."""
    marker = Path(marker_file)
    if not marker.exists():
        marker.touch()
        raise ConnectionError("simulated network blip on the first attempt")
    return TaskResult(ok="fetched on the second attempt")


# -- the demo workflow: fan-out, fan-in, one failing branch --------------------------------------

QUOTE_SYMBOLS = ("ACME", "GLOBEX", "NOSUCH", "INITECH")
"""One fetch per symbol; ``NOSUCH`` fails, to show a failed branch handled downstream."""


@app.task("demo.plan_quotes")
def plan_quotes() -> TaskResult[list[str], TaskError]:
    """The root: decides what to fetch."""
    return TaskResult(ok=list(QUOTE_SYMBOLS))


@app.task("demo.fetch_quote")
def fetch_quote(symbol: str) -> TaskResult[int, TaskError]:
    """A deterministic price in cents; unknown symbols raise LookupError."""
    if symbol == "NOSUCH":
        raise LookupError(f"no quote for {symbol}")
    return TaskResult(ok=sum(map(ord, symbol)) * 7)


@app.task("demo.summarize_quotes")
def summarize_quotes(workflow_ctx: WorkflowContext | None = None) -> TaskResult[str, TaskError]:
    """The fan-in: runs although one fetch failed (allow_failed_deps) and reports what it got."""
    assert workflow_ctx is not None
    prices: list[int] = []
    failed: list[str] = []
    for node in _quote_nodes:
        result = workflow_ctx.result_for(node)
        if result.is_ok():
            prices.append(result.ok_value)
        else:
            failed.append(node.node_id or "?")
    return TaskResult(
        ok=f"{len(prices)} quotes, total {sum(prices)} cents; failed: {', '.join(failed) or '-'}"
    )


_plan = TaskNode(fn=plan_quotes, node_id="plan")
_quote_nodes = [
    TaskNode(fn=fetch_quote, args=(symbol,), waits_for=[_plan], node_id=f"quote_{symbol}")
    for symbol in QUOTE_SYMBOLS
]
_summary = TaskNode(
    fn=summarize_quotes,
    waits_for=_quote_nodes,
    workflow_ctx_from=_quote_nodes,
    allow_failed_deps=True,
    node_id="summary",
)


class QuotesWorkflow(WorkflowDefinition[str]):
    """plan -> one fetch per symbol (one fails) -> summary; succeeds when the summary does."""

    name = "demo_quotes"
    plan = _plan
    quote_acme, quote_globex, quote_nosuch, quote_initech = _quote_nodes
    summary = _summary

    class Meta:
        output = _summary
        success_policy = SuccessPolicy(cases=[SuccessCase(required=[_summary])])
