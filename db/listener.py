"""One LISTEN connection that stays up: each NOTIFY to its channel's callback, reconnects after a loss.

A NOTIFY is only a wake-up; the tables are the truth. One sent while no
connection listens (Postgres restarting, a broken link) is gone for good, so
each time the channels are listened to anew, the first time and after every
loss, ``on_listening`` is called: the caller re-reads whatever it follows.

The connection is psycopg's, as every other one of the project, and it is read
the way an asyncio protocol reads: the event loop calls back when the socket
has data, libpq consumes it, and each notification goes to its channel's
callback within that call. (psycopg's ``notifies()`` generator registers the
socket with the loop and arms a timer for every wait: it cost 1.9x the CPU per
notification at the bench's rate, bench/README.md.)

A link can die without a packet saying so: every ``ping_s`` the connection is
asked a ``SELECT 1``, and one that has not answered within ``ping_s`` counts as
lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import psycopg
from psycopg import pq, sql

from runstream.db import queries
from runstream.db.connector import plain_url

log = logging.getLogger(__name__)

# Reconnect delays: quick after a blip, capped when Postgres is down.
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
CONNECT_TIMEOUT_S = 10

# A channel's callback takes the NOTIFY's payload.
Handler = Callable[[str], None]


class ConnectionLost(Exception):
    """The LISTEN connection broke, or stopped answering its pings."""


class Listener:
    """``run`` listens on the channels of ``handlers`` until cancelled."""

    def __init__(
        self,
        database_url: str,
        handlers: Mapping[str, Handler],
        *,
        application_name: str,
        ping_s: float,
        on_listening: Callable[[], None],
    ):
        self.database_url = plain_url(database_url)
        self.handlers = dict(handlers)
        self.application_name = application_name
        self.ping_s = ping_s
        self.on_listening = on_listening
        # True while the connection is up and listening.
        self.listening = False
        # The server process of the current connection (None between connections).
        self.backend_pid: int | None = None

    async def run(self) -> None:
        delay = BACKOFF_MIN_S
        while True:
            try:
                connection = await self._connect()
            except (psycopg.Error, OSError) as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = BACKOFF_MIN_S
            try:
                await self._listen(connection)
            except (psycopg.Error, OSError, ConnectionLost) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self.listening = False
                self.backend_pid = None
                await connection.close()
            await asyncio.sleep(BACKOFF_MIN_S)

    async def _connect(self) -> psycopg.AsyncConnection:
        connection = await psycopg.AsyncConnection.connect(
            self.database_url,
            autocommit=True,
            application_name=self.application_name,
            connect_timeout=CONNECT_TIMEOUT_S,
            # Nothing prepared: the URL may lead through a pooler.
            prepare_threshold=None,
        )
        try:
            for channel in self.handlers:
                await connection.execute(sql.SQL(queries.LISTEN).format(sql.Identifier(channel)))
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _listen(self, connection: psycopg.AsyncConnection) -> None:
        """Hand over notifications until the connection is lost (raises why)."""
        pgconn = connection.pgconn
        encoding = connection.info.encoding
        socket = pgconn.socket
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        answered: asyncio.Future[None] | None = None

        def readable() -> None:
            try:
                pgconn.consume_input()
                if pgconn.status != pq.ConnStatus.OK:
                    raise ConnectionLost(pgconn.get_error_message() or "the connection went bad")
            except (psycopg.Error, ConnectionLost) as exc:
                loop.remove_reader(socket)
                if not lost.done():
                    lost.set_exception(exc)
                return
            while (notification := pgconn.notifies()) is not None:
                self._hand_over(notification.relname.decode(encoding), notification.extra.decode(encoding))
            if answered is not None and not pgconn.is_busy():
                while pgconn.get_result() is not None:
                    pass
                if not answered.done():
                    answered.set_result(None)

        loop.add_reader(socket, readable)
        try:
            self.backend_pid = pgconn.backend_pid
            self.listening = True
            log.info("listening on %s", ", ".join(self.handlers))
            self.on_listening()
            while True:
                await self._within(lost, None)
                answered = loop.create_future()
                pgconn.send_query(queries.PING.encode())
                pgconn.flush()
                await self._within(lost, answered)
                answered = None
        finally:
            loop.remove_reader(socket)

    async def _within(self, lost: asyncio.Future[None], answered: asyncio.Future[None] | None) -> None:
        """Wait ``ping_s`` for ``answered`` (None: just wait); raise as soon as ``lost`` is."""
        waited = [lost] if answered is None else [lost, answered]
        await asyncio.wait(waited, timeout=self.ping_s, return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            lost.result()  # raises why
        if answered is not None and not answered.done():
            raise ConnectionLost(f"no answer to a ping in {self.ping_s:g}s")

    def _hand_over(self, channel: str, payload: str) -> None:
        handler = self.handlers.get(channel)
        if handler is None:
            return
        try:
            handler(payload)
        except Exception:
            # One bad notification must not stop the others of the same read.
            log.exception("handling a NOTIFY on %s failed", channel)
