"""`PostgresBroker`: every database interaction of horsies, sync and async.

Producers use ``enqueue``/``enqueue_calls``/``enqueue_many`` and ``get_result`` (each with an
``*_async`` twin; concurrent ``enqueue_async`` calls of one event loop share inserts); operators
use the monitoring methods; the worker uses the batched lifecycle methods (``exchange_async`` on its
hot path, ``prefetch_exchange_async`` in prefetch mode, ``claim_async`` + ``start_async`` +
``finish_async`` when claims need a CLAIMED phase, and the hand-back, heartbeat, snapshot and reaper
calls) and never writes SQL itself.

Every method is a thin door: it builds an operation (``steps.Op``) or a program (``programs``) and
hands it to the sync driver or to the async one, so sync and async share one implementation. Driver
errors become :class:`~horsies.broker.errors.BrokerError`, with the password masked. The schema is
migrated on first use.

Naming: a method ``x`` has its async twin ``x_async``. The five monitoring methods of the
original API (``get_stale_tasks``, ``get_worker_stats``, ``get_expired_tasks``,
``mark_stale_tasks_as_failed``, ``requeue_stale_claimed``), their companions ``get_queue_stats``,
``get_limit_stats``, ``get_worker_states`` and ``get_task``, and ``ensure_schema_initialized``
are coroutines under their original names, with sync twins named ``*_sync``: code written for
that API keeps working.
"""

from __future__ import annotations

from horsies.broker.monitoring_calls import MonitoringCalls
from horsies.broker.producer_calls import ProducerCalls
from horsies.broker.worker_calls import WorkerCalls

__all__ = ["PostgresBroker"]


class PostgresBroker(ProducerCalls, MonitoringCalls, WorkerCalls):
    """The PostgreSQL broker of one app (obtain it with ``app.broker`` / ``app.get_broker()``).

    Construction does no I/O; pools and the notification listener open on first use. Sync methods
    may be called from any thread, also from inside a running event loop (they block it: prefer
    the async twins there). Async methods use a pool bound to the running loop. Call :meth:`close`
    (or ``await`` :meth:`close_async`) when done.
    """
