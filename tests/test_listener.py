"""``db.listener.Listener`` against a real Postgres: each NOTIFY reaches its
channel's callback; a terminated backend, a server that is not there yet and a
link that falls silent each end in a new connection that listens again, says
so through ``on_listening`` (the caller's cue to re-read), and hears what is
sent from then on."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime

import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from runstream.bench.services import free_port
from runstream.db import queries
from runstream.db.listener import Listener
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

WAIT_S = 15.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    await eventually(condition, timeout=WAIT_S, interval=0.01, what=what)


class ListenerLog(logging.Handler):
    """What the listener logged, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages)


class Probe:
    """A listener on a channel of its own, and what it heard and said."""

    def __init__(self, database_url: str, ping_s: float = 10.0):
        self.channel = f"listener_test_{uuid.uuid4().hex[:8]}"
        self.heard: list[str] = []
        self.times_listening = 0
        self.listener = Listener(
            database_url,
            {self.channel: self.heard.append},
            application_name=f"runstream-test-{self.channel}",
            ping_s=ping_s,
            on_listening=self._listening,
        )

    def _listening(self) -> None:
        self.times_listening += 1


@pytest.fixture
def listener_log() -> AsyncIterator[ListenerLog]:
    handler = ListenerLog()
    logger = logging.getLogger("runstream.db.listener")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@asynccontextmanager
async def running(probe: Probe) -> AsyncIterator[None]:
    task = asyncio.create_task(probe.listener.run())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def notify(pool: AsyncConnectionPool, channel: str, payload: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def backends_of(pool: AsyncConnectionPool, probe: Probe) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (probe.listener.application_name,),
        )
        return [row["pid"] for row in await cur.fetchall()]


async def last_ping(pool: AsyncConnectionPool, pid: int | None) -> datetime | None:
    """When backend ``pid`` last finished a ping; None while it has not, or is in one."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT state_change FROM pg_stat_activity WHERE pid = %s AND query = %s AND state = 'idle'",
            (pid, queries.PING),
        )
        row = await cur.fetchone()
    return None if row is None else row["state_change"]


class Link:
    """A TCP proxy in front of Postgres. ``freeze`` makes the connections it
    carries fall silent, both ways, with their sockets left open (a link that
    died without a packet saying so); connections made after it flow."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._epoch = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def url(self, database_url: str) -> str:
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def freeze(self) -> None:
        self._epoch += 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, server_w]
        epoch = self._epoch

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with suppress(OSError):
                while data := await source.read(65536):
                    if epoch == self._epoch:
                        sink.write(data)
                        await sink.drain()
            sink.close()

        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))


async def test_a_terminated_backend_is_replaced_the_loss_reported_and_listening_resumes(
    database_url: str, pool: AsyncConnectionPool, listener_log: ListenerLog
) -> None:
    probe = Probe(database_url)
    async with running(probe):
        await until(lambda: probe.times_listening == 1, "listening")
        first = probe.listener.backend_pid
        assert await backends_of(pool, probe) == [first]
        await notify(pool, probe.channel, "before")
        await until(lambda: probe.heard == ["before"], "the first NOTIFY heard")

        async with pool.connection() as conn:
            cur = await conn.execute("SELECT pg_terminate_backend(%s) AS done", (first,))
            assert (await cur.fetchone())["done"] is True
        await until(lambda: probe.times_listening == 2, "listening again")
        assert listener_log.count("LISTEN connection lost") == 1
        assert probe.listener.listening
        second = probe.listener.backend_pid
        assert second is not None and second != first
        assert await backends_of(pool, probe) == [second]

        await notify(pool, probe.channel, "after")
        await until(lambda: probe.heard == ["before", "after"], "the NOTIFY after the reconnect heard")


async def test_it_backs_off_while_postgres_is_unreachable_then_listens(
    database_url: str, pool: AsyncConnectionPool, listener_log: ListenerLog
) -> None:
    link = Link(make_url(database_url).port or 5432)
    probe = Probe(link.url(database_url))
    async with running(probe):
        await until(lambda: listener_log.count("LISTEN connection failed") >= 3, "three failed connects")
        retries = [m.rsplit("retrying in ", 1)[1] for m in listener_log.messages if "connection failed" in m]
        assert retries[:3] == ["0.1s", "0.2s", "0.4s"]
        assert (probe.times_listening, probe.listener.listening) == (0, False)

        await link.start()
        try:
            await until(lambda: probe.times_listening == 1, "listening once Postgres is reachable")
            await notify(pool, probe.channel, "up")
            await until(lambda: probe.heard == ["up"], "the NOTIFY heard")
        finally:
            await link.close()


async def test_a_link_that_falls_silent_is_found_by_its_ping_and_replaced(
    database_url: str, pool: AsyncConnectionPool, listener_log: ListenerLog
) -> None:
    link = Link(make_url(database_url).port or 5432)
    await link.start()
    probe = Probe(link.url(database_url), ping_s=0.3)
    try:
        async with running(probe):
            await until(lambda: probe.times_listening == 1, "listening")
            first = probe.listener.backend_pid
            # A ping goes out only once the previous one was answered: two on the
            # same backend show a live link is kept.
            first_ping = await eventually(lambda: last_ping(pool, first), timeout=WAIT_S, what="a first ping")

            async def a_later_ping() -> bool:
                ping = await last_ping(pool, first)
                return ping is not None and ping != first_ping

            await eventually(a_later_ping, timeout=WAIT_S, interval=0.01, what="a second ping on the same backend")
            assert probe.times_listening == 1
            await notify(pool, probe.channel, "one")
            await until(lambda: probe.heard == ["one"], "the first NOTIFY heard")

            link.freeze()
            await until(lambda: listener_log.count("no answer to a ping in 0.3s") == 1, "the silent link found")
            await until(lambda: probe.times_listening == 2, "listening on a new connection")
            assert probe.listener.backend_pid != first
            await notify(pool, probe.channel, "two")
            await until(lambda: probe.heard == ["one", "two"], "the NOTIFY on the new connection heard")
    finally:
        await link.close()
