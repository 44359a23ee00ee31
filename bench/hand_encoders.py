"""Do the broker's two hand-written send paths still beat psycopg's own? (run by hand, not a test)

    uv run python bench/hand_encoders.py [--rounds 5] [--bulk 10000] [--sends 2000]

The broker sends ``send_many`` batches as a binary COPY stream it builds itself
(``horsies/broker/copy_encoder.py``) and single sends through libpq's prepared-statement calls
(``horsies/broker/prepared.py``). Both have a fallback made only of psycopg's public API: COPY with
``set_types`` + ``write_row``, and a prepared cursor execution. This script measures each path
against its fallback on a throw-away embedded PostgreSQL (durable commits unless ``--no-fsync``),
alternating the two in every round, and prints the medians and the ratios. Keep a hand-written
path only while its ratio stays clearly above 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
from harness import DURABLE_SETTINGS
from horsies.broker import prepared
from horsies.broker.copy_encoder import TaskBatch
from horsies.embedded import start_embedded
from run import measure_bulk, measure_single_sends


@contextmanager
def psycopg_copy() -> Iterator[None]:
    """``send_many`` through psycopg's binary COPY (``set_types`` + ``write_row``)."""
    with mock.patch.object(TaskBatch, "copy_chunks", return_value=None):
        yield


@contextmanager
def psycopg_prepared() -> Iterator[None]:
    """Single sends through a psycopg prepared cursor execution."""
    with mock.patch.object(prepared, "text_params", return_value=None):
        yield


@contextmanager
def unchanged() -> Iterator[None]:
    yield


def compare(
    name: str,
    rounds: int,
    measure: Callable[[], float],
    fallback: Callable[[], Any],
) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    for index in range(rounds):
        # Alternate which goes first, so that a warming cache or a noisy neighbour favours neither.
        order = [(ours, unchanged), (theirs, fallback)]
        for rates, context in order if index % 2 == 0 else reversed(order):
            with context():
                rates.append(measure())
    mine, other = statistics.median(ours), statistics.median(theirs)
    print(f"{name}: horsies {mine:,.0f}/s, psycopg {other:,.0f}/s, ratio {mine / other:.2f}")
    print(f"  rounds horsies {[round(r) for r in ours]}, psycopg {[round(r) for r in theirs]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bulk", type=int, default=10_000, help="calls per send_many")
    parser.add_argument("--sends", type=int, default=2_000, help="single sends per measurement")
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="commits without fsync: shows the client's CPU cost, which durable commits hide",
    )
    options = parser.parse_args()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="horsies-enc-")))
        settings = None if options.no_fsync else DURABLE_SETTINGS
        server = start_embedded(scratch / "postgres", persistent=False, extra_settings=settings)
        stack.callback(server.stop)
        os.environ["HORSIES_BENCH_DATABASE_URL"] = server.url
        # Imported only now: the bench app reads its database URL when it is imported.
        import bench_app

        broker = bench_app.app.get_broker()
        stack.callback(broker.close)
        broker.ensure_schema_initialized_sync()
        admin = server.conninfo_for("postgres")
        conn = stack.enter_context(psycopg.connect(admin, autocommit=True))
        noop = bench_app.noop
        compare(
            f"send_many of {options.bulk}",
            options.rounds,
            lambda: measure_bulk(noop, conn, options.bulk),
            psycopg_copy,
        )
        compare(
            f"{options.sends} single sends",
            options.rounds,
            lambda: measure_single_sends(noop, options.sends),
            psycopg_prepared,
        )


if __name__ == "__main__":
    main()
