"""The worker process's event loop and what lives on it.

Celery's thread pool gives each task a thread, but agent runs wait on models and
tools, not on CPU: so every run of the process goes to ONE asyncio event loop in
a background thread, which owns the process's database pool, its ``EventWriter``
(so one group commit serves all runs), its ``Supervisor`` and its ``Reaper``. A
task thread submits its run with ``run`` and blocks until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import httpx
import uvloop

from runstream.core.settings import Settings, get_settings
from runstream.db.agents import record_agents
from runstream.db.connector import Pool, open_pool
from runstream.tasks.event_writer import EventWriter
from runstream.tasks.reaper import Reaper
from runstream.tasks.registry import get_registry
from runstream.tasks.supervisor import Supervisor

log = logging.getLogger("runstream.worker")

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """The worker's event loop: uvloop, as the API's (uvicorn's default). Every
    append goes through it, and its I/O costs about half of asyncio's in CPU."""
    return uvloop.new_event_loop()


class Runtime:
    def __init__(self, settings: Settings):
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set: the worker needs the database")
        self.settings = settings
        self.registry = get_registry()
        self.loop = new_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="runstream-loop", daemon=True)
        self._thread.start()
        self.pool: Pool
        self.writer: EventWriter
        self.supervisor: Supervisor
        self.reaper: Reaper
        self.webhook_http: httpx.AsyncClient
        try:
            self.run(self._open())
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise

    async def _open(self) -> None:
        settings = self.settings
        assert settings.database_url is not None
        self.pool = await open_pool(
            settings.database_url,
            settings.worker_db_pool_size,
            name="runstream-worker",
            prepared_statements=settings.prepared_statements,
        )
        self.writer = EventWriter(self.pool)
        self.supervisor = Supervisor(
            self.pool,
            poll_s=settings.cancel_poll_s,
            heartbeat_s=settings.heartbeat_s,
            run_timeout_s=settings.run_timeout_s,
        )
        self.supervisor.start()
        self.reaper = Reaper(self.pool, settings)
        self.reaper.start()
        # What each agent resolved to, for the API's agent list (db.agents).
        await record_agents(
            self.pool,
            [
                {"name": a.name, "import_path": a.path, "kind": a.kind, "description": a.description}
                for a in self.registry.values()
            ],
        )
        # One client for every webhook attempt: its TLS context is built once
        # (building one blocks the loop), and connections to a receiver are reused.
        self.webhook_http = httpx.AsyncClient(follow_redirects=False, timeout=settings.webhook_timeout_s)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block the calling thread until it returns."""
        return self.submit(coro).result()

    def hand_back(self) -> None:
        """From any thread: the worker is going down, hand every run back (Supervisor.hand_back_all)."""
        self.loop.call_soon_threadsafe(self.supervisor.hand_back_all)

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    async def _close(self) -> None:
        await self.reaper.stop()
        await self.supervisor.stop()
        await self.webhook_http.aclose()
        await self.pool.close()


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, started on first use (by whichever task thread comes first)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
            size = _runtime.settings.worker_db_pool_size
            log.info("worker runtime started: one event loop, %d database connections", size)
        return _runtime


def started_runtime() -> Runtime | None:
    """The process's runtime if it was started, without starting it."""
    return _runtime


def close_runtime() -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None
