"""What traces cost a send: ``send()`` without the ``otel`` extra, with the OpenTelemetry API but
no tracer provider (an app that never configured an SDK), and with the SDK recording every send
span (exported to nowhere, so the figure is horsies' work and the SDK's, not an exporter's).

    uv run python bench/traces.py            # about a minute; -n sends per round, -r rounds

Each setup runs in a fresh Python process (without the extra, ``opentelemetry`` is made
unimportable there) on a throw-away embedded server (or the server ``HORSIES_TEST_DATABASE_URL``
names). Two processes of one machine differ by more than traces cost (tens of microseconds, from
where their memory and connections happen to land), so each process also measures its own
baseline: its rounds alternate between ``send()`` and the same method unwrapped (the send without
its span: ``TaskFunction.send.__wrapped__``). Printed, per setup: the median microseconds per send
of ``-r`` rounds of ``-n`` sends, wall-clock and the process's CPU time (the figure to trust on a
busy machine: a span is CPU work of the sending process), and what the span adds to each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from horsies.testing import throwaway_server

_SETUPS = {
    "without the otel extra": "import sys; sys.modules['opentelemetry'] = None",
    "API, no tracer provider": "",
    "SDK, every send recorded": """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

class Nowhere(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(Nowhere()))
trace.set_tracer_provider(provider)
""",
}

_ROUNDS = """
import statistics, sys, time
from horsies import AppConfig, Horsies, PostgresConfig, TaskError, TaskResult
from horsies.tasks.function import TaskFunction

url, sends, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = Horsies(AppConfig(broker=PostgresConfig(database_url=url)))

@app.task("bench.traced")
def traced(n: int) -> TaskResult[int, TaskError]:
    return TaskResult(ok=n)

bare = getattr(TaskFunction.send, "__wrapped__", TaskFunction.send)
for n in range(300):  # warm-up: the pool, the prepared statement
    assert traced.send(n).sent

def round_us(send):
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(sends):
        send(traced, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / sends * 1e6, cpu / sends * 1e6

with_span, without = [], []
for _ in range(rounds):
    with_span.append(round_us(TaskFunction.send))
    without.append(round_us(bare))
app.get_broker().close()
for samples in (with_span, without):
    print(statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="What traces cost a send.")
    parser.add_argument("-n", "--sends", type=int, default=2_000, help="sends per round")
    parser.add_argument("-r", "--rounds", type=int, default=7, help="rounds per setup")
    options = parser.parse_args()
    print(
        f"send(), median of {options.rounds} rounds of {options.sends} sends "
        "(in brackets: what the span adds in the same process):"
    )
    with throwaway_server() as server, server.database() as url:
        for name, setup in _SETUPS.items():
            done = subprocess.run(
                [sys.executable, "-c", setup + _ROUNDS, url, str(options.sends),
                 str(options.rounds)],
                capture_output=True, text=True, check=True, timeout=900,
            )  # fmt: skip
            sent_wall, sent_cpu, bare_wall, bare_cpu = (float(f) for f in done.stdout.split())
            print(
                f"  {name:<26} wall {sent_wall:6.1f} µs/send ({sent_wall - bare_wall:+6.1f}), "
                f"CPU {sent_cpu:6.1f} µs/send ({sent_cpu - bare_cpu:+5.1f})"
            )


if __name__ == "__main__":
    main()
