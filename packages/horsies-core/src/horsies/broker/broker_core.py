"""The core of `PostgresBroker`: its state and the doors every call goes through.

A call builds an operation (``steps.Op``) or a program (``programs``) and hands it to the sync
driver or to the async one (``driver_sync``, ``driver_async``), so sync and async share one
implementation; driver errors become `BrokerError` there, with the password masked. The schema is
migrated on first use."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TypeVar

from horsies.broker import (
    channels,
)
from horsies.broker.async_pools import AsyncPools
from horsies.broker.caller_connection import CallerAsyncDriver, CallerConnection, CallerSyncDriver
from horsies.broker.driver_async import AsyncDriver, AsyncEffects
from horsies.broker.driver_sync import SyncDriver, SyncEffects, SyncPool
from horsies.broker.hooks import BrokerApp, WorkflowEngine, WorkflowHooks
from horsies.broker.listener import NotificationListener, acquire_listener, release_listener
from horsies.broker.migrations import SchemaGate
from horsies.broker.programs import Program, Run
from horsies.broker.send_coalescer import SendCoalescer
from horsies.broker.steps import Op, Step
from horsies.broker.waiters import ResultWaiters
from horsies.config import DEFAULT_MAX_PAYLOAD_BYTES, PostgresConfig

__all__ = ["BrokerCore"]

T = TypeVar("T")


class BrokerCore:
    """The state of a broker and the doors every call goes through: the two drivers, the
    listener, the schema, closing. `PostgresBroker` adds the calls (producer, monitoring,
    worker) on top."""

    def __init__(
        self,
        config: PostgresConfig,
        *,
        app: BrokerApp | None = None,
        workflows: WorkflowHooks | None = None,
    ) -> None:
        self._config = config
        self._app = app
        self._workflows = workflows
        schema = self._schema = SchemaGate()
        self._sync = SyncDriver(config, SyncPool(config), schema)
        self._async_pools = AsyncPools(config)
        # The worker's hot path (exchange_async, prefetch_exchange_async) runs one call after
        # another on a pool of its own with one connection: always the same server process, with
        # warm caches (measured on the drain benchmark: about a quarter more tasks/s and a quarter
        # less database CPU per task than taking turns over several connections).
        self._hot_pools = AsyncPools(config, name="horsies-async-hot", size=1)
        self._async = AsyncDriver(config, self._async_pools, self._hot_pools, schema)
        self._listener_lock = threading.Lock()
        self._listener: NotificationListener | None = None
        self._waiters = ResultWaiters(self._get_listener, channels.TASK_DONE)
        self._workflow_waiters = ResultWaiters(self._get_listener, channels.WORKFLOW_DONE)
        self._coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SendCoalescer] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    # -- properties --------------------------------------------------------------------------------

    @property
    def config(self) -> PostgresConfig:
        """The `PostgresConfig` this broker connects with."""
        return self._config

    @property
    def app(self) -> BrokerApp | None:
        """The owning app (workflow features run its code: conditions, child workflows); may be
        None."""
        return self._app

    @app.setter
    def app(self, value: BrokerApp | None) -> None:
        self._app = value

    @property
    def workflows(self) -> WorkflowHooks | None:
        """What finishing a workflow task also does for its workflow (the app's broker has the
        workflow store). Without it, workflow tasks still finish, and their workflows advance
        when a worker's reaper reconciles them."""
        return self._workflows

    @workflows.setter
    def workflows(self, value: WorkflowHooks | None) -> None:
        self._workflows = value

    def _engine(self) -> WorkflowEngine | None:
        hooks = self._workflows
        return None if hooks is None else WorkflowEngine(hooks, self._app)

    @property
    def max_payload_bytes(self) -> int | None:
        """Limit on a task's encoded arguments: the app's ``AppConfig.max_payload_bytes``, the
        default 16 MiB for a broker without an app."""
        app = self._app
        return DEFAULT_MAX_PAYLOAD_BYTES if app is None else app.config.max_payload_bytes

    @property
    def listener(self) -> NotificationListener:
        """The process's shared LISTEN connection for this database (started on first access)."""
        return self._get_listener()

    @property
    def workflow_waiters(self) -> ResultWaiters:
        """The waiters of ``workflow_done`` notifications (used by workflow ``get``)."""
        return self._workflow_waiters

    def _get_listener(self) -> NotificationListener:
        with self._listener_lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if self._listener is None:
                self._listener = acquire_listener(self._config.conninfo)
            return self._listener

    def __repr__(self) -> str:
        return f"PostgresBroker({self._config.masked_url})"

    # -- running operations and programs -----------------------------------------------------------

    def execute(self, op: Op[T], *, action: str, transaction: bool = False) -> T:
        """Run a sans-IO operation (``horsies.broker.steps.Op``) on the sync pool; driver errors
        become ``BrokerError``. The door the workflow API and tools use."""
        return self._sync.run(Run(op, action, transaction))

    async def execute_async(self, op: Op[T], *, action: str, transaction: bool = False) -> T:
        """Async twin of :meth:`execute`."""
        return await self._async.run(Run(op, action, transaction))

    def run_program(self, program: Program[T], within: CallerConnection | None = None) -> T:
        """Run a program (``horsies.broker.programs``) for a sync caller: on the pools, or with
        ``within`` on the caller's connection, in its transaction."""
        return self._effects(within).drive(program)

    async def run_program_async(
        self, program: Program[T], within: CallerConnection | None = None
    ) -> T:
        """Async twin of :meth:`run_program`."""
        return await (await self._effects_async(within)).drive(program)

    def _effects(self, within: CallerConnection | None) -> SyncEffects:
        """What runs a blocking call's statements: the pools, or the caller's connection."""
        if within is None:
            return self._sync
        return CallerSyncDriver(within.sync_connection(), self._schema, echo=self._config.echo)

    async def _effects_async(self, within: CallerConnection | None) -> AsyncEffects:
        """Async twin of :meth:`_effects`."""
        if within is None:
            return self._async
        conn = await within.async_connection()
        return CallerAsyncDriver(conn, self._schema, echo=self._config.echo)

    def _run_sync(self, op: Op[T] | Step, action: str, *, transaction: bool = False) -> T:
        return self._sync.run(Run(op, action, transaction))

    async def _run_async(
        self, op: Op[T] | Step, action: str, *, transaction: bool = False, hot: bool = False
    ) -> T:
        return await self._async.run(Run(op, action, transaction, hot))

    # -- schema ------------------------------------------------------------------------------------

    def ensure_schema_initialized_sync(self) -> None:
        """Create or upgrade the schema now (otherwise done on first use). Idempotent,
        concurrency-safe."""
        self._sync.migrate()

    async def ensure_schema_initialized(self) -> None:
        """Async twin of :meth:`ensure_schema_initialized_sync`."""
        await self._async.migrate()

    # -- shutdown ----------------------------------------------------------------------------------

    def _close_common(self) -> None:
        self._waiters.close()
        self._workflow_waiters.close()
        with self._listener_lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            release_listener(listener)
        self._sync.close()

    def close(self) -> None:
        """Close the pools and release the listener (idempotent); async code: prefer
        :meth:`close_async`."""
        self._close_common()
        self._async_pools.close_all()
        self._hot_pools.close_all()

    async def close_async(self) -> None:
        """Close the current loop's pools, the sync pool and release the listener. Idempotent."""
        await self._async_pools.close_current()
        await self._hot_pools.close_current()
        self._close_common()
        self._async_pools.close_all()
        self._hot_pools.close_all()
