"""The event hub: one LISTEN connection per process wakes the streams of a job.

A stream is a ``Subscriber`` of its job's ``JobFeed``. It registers before it
reads anything, then catches up by reading pages of the log on its own. When a
page comes back short it has everything committed so far: it turns *live* and
wakes the feed. From then on the feed serves it. A commit's NOTIFY usually
carries the rows it added (db.events.Notification): every live subscriber they
follow on from takes them as they are, with no read. Otherwise (rows too big
for a NOTIFY, a gap, a subscriber turning live, a reconnect) the job is read once for
all its live subscribers, from the oldest position among them, and each gets
the rows after its own position, if they follow on from it without a gap.
Otherwise (a subscriber that turned live behind the others) the job is read
again from the new oldest position. One reader per hub does these reads: every
job woken while a read is in flight is read by the next one, all in one query
(a commit that carries many jobs' events wakes them all at once). Each row therefore reaches each stream
exactly once, in order, whatever the timing of replay, NOTIFYs and reads.

Positions only move forward, and each subscriber has one mover at a time: itself
while catching up, the feed while live. A live subscriber whose client is slow
and whose buffer would outgrow ``stream_buffer_rows`` turns back into a catching-up
one; it reads from where its buffer ends, so the buffer bounds memory.

Connections: the hub holds one LISTEN connection (``db.listener.Listener``, on
``RUNSTREAM_LISTEN_DATABASE_URL``, else ``DATABASE_URL``), which reconnects by
itself and has every feed re-read when it listens anew; every read goes through
the API's fixed pool. Neither depends on the number of open streams.

Where no session of its own can be had (behind a pooler in transaction mode,
with no direct route to Postgres), ``RUNSTREAM_LIVE_UPDATES=poll`` replaces the
LISTEN connection with a poll: every ``poll_interval_s`` each job that has live
streams is woken, and every transitions stream; the one reader reads the jobs
all in one query, from each feed's oldest position, exactly as after a NOTIFY
that carried no rows. The guarantees do not rest on NOTIFYs but on the reads:
a job's seqs commit in order (its row lock), so reading ``seq > position``
never skips a row that commits later, and positions only move forward, so
nothing is sent twice. The cost is latency (up to one interval more) and one
query per interval.

Per-event cost is what limits how many streams one process can feed, so the
work per (stream, event) is kept to a wake-up and a write: rows are encoded to
SSE frames once per read, whatever number of streams send them; delivery lag is
measured once per row per feed; and keep-alives come from one ticker per hub,
not from a timer per waiting stream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

from runstream.api.sse import Frame, event_frames
from runstream.core.metrics import DELIVERY_LAG, HUB_READS
from runstream.core.settings import Settings
from runstream.db import queries, transitions
from runstream.db.connector import Pool
from runstream.db.events import parse_notification, read_events, read_events_of_jobs
from runstream.db.listener import Listener

log = logging.getLogger(__name__)

# The keep-alive ticker runs this many times per keep-alive period, so a silent
# stream gets its keep-alive between 1 and 1 + 1/KEEPALIVE_TICKS periods after its last send.
KEEPALIVE_TICKS = 5
# How often a draining hub looks whether its streams have all ended.
DRAIN_POLL_S = 0.05


def _seq(frame: Frame) -> int:
    return frame.seq


class Subscriber:
    """One open stream of one job. ``position`` is the last seq handed to it,
    whether it read that row itself or the feed put it in its buffer."""

    def __init__(self, feed: JobFeed, after: int):
        self.feed = feed
        self.position = after
        # The loop, looked up once: asyncio looks it up with a getpid() each time.
        self._loop = asyncio.get_running_loop()
        # When next_batch last returned (the keep-alive ticker's clock).
        self.quiet_since = self._loop.time()
        self._keepalive_due = False
        # A list, not a deque: an empty deque costs 600 bytes, times every open stream.
        self._buffer: list[Frame] = []
        # What a waiting next_batch awaits (a bare future: cheaper than an asyncio.Event).
        self._waiter: asyncio.Future[None] | None = None

    @property
    def live(self) -> bool:
        """Fed by the feed (True) or reading on its own (False)."""
        return self in self.feed.live

    @live.setter
    def live(self, live: bool) -> None:
        if live:
            self.feed.live.add(self)
        else:
            self.feed.live.discard(self)

    async def next_batch(self) -> list[Frame]:
        """The next frames, in order; ``[]`` when the stream has been quiet for the
        hub's keep-alive period (its cue to send a keep-alive), and at once once
        the hub is cutting its streams (``EventHub.drain``)."""
        frames = await self._next()
        self.quiet_since = self._loop.time()
        return frames

    async def _next(self) -> list[Frame]:
        while True:
            if self._buffer:
                frames, self._buffer = self._buffer, []
                self._keepalive_due = False
                return frames
            if self.feed.hub.cutting or self._keepalive_due:
                self._keepalive_due = False
                return []
            if not self.live:
                rows = await self.feed.hub.read(self.feed.job_id, self.position)
                if rows:
                    self.position = rows[-1].seq
                if len(rows) < self.feed.hub.page_size:
                    # Caught up with what is committed. What commits from now on
                    # wakes the feed; the wake below covers what committed since
                    # this read.
                    self.live = True
                    self.feed.wake()
                if rows:
                    return rows
                continue
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def deliver(self, rows: list[Frame]) -> bool:
        """Take the rows (read by the feed) that come after ``position``.
        False when they do not reach back to ``position + 1``: the feed must read again."""
        # Live, the rows follow on from the position: no search.
        tail = (
            rows if rows and rows[0].seq == self.position + 1 else rows[bisect_right(rows, self.position, key=_seq) :]
        )
        if not tail:
            return True
        if tail[0].seq != self.position + 1:
            return False
        if len(self._buffer) + len(tail) > self.feed.hub.buffer_rows:
            self.fall_back()
            return True
        self._buffer.extend(tail)
        self.position = tail[-1].seq
        self.wake()
        return True

    def fall_back(self) -> None:
        """Stop being fed: read on its own again, from the end of its buffer."""
        self.live = False
        self.wake()

    def keep_alive(self) -> None:
        """Make a waiting ``next_batch`` return ``[]``: the stream sends a keep-alive."""
        self._keepalive_due = True
        self.wake()

    def wake(self) -> None:
        """Wake a waiting ``next_batch`` (also how the hub ends its streams)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class JobFeed:
    """The subscribers of one job; the hub reads for the live ones."""

    def __init__(self, hub: EventHub, job_id: uuid.UUID):
        self.hub = hub
        self.job_id = job_id
        self.subscribers: set[Subscriber] = set()
        # Those of them that are live: kept apart, so that a stream turning live
        # (which wakes the feed) costs the same with 10 or 10,000 streams open.
        self.live: set[Subscriber] = set()
        # The newest seq this feed has handed to live streams (each row's lag is measured once).
        self.delivered_seq = -1

    def _live(self) -> list[Subscriber]:
        # A copy: delivering can make a subscriber fall back (leave the set).
        return list(self.live)

    def offer(self, rows: list[Frame], last_seq: int) -> None:
        """The rows a commit's NOTIFY carried: each live subscriber they follow on
        from takes them; the feed is read for any they don't (``wake``)."""
        live = self._live()
        for subscriber in live:
            subscriber.deliver(rows)
        if live:
            # Queued after the streams' wake-ups: the metric is not on their way to the client.
            asyncio.get_running_loop().call_soon(self._observe_lag, rows)
        self.wake(last_seq)

    def wake(self, last_seq: int | None = None) -> None:
        """New rows may exist (up to ``last_seq`` when the NOTIFY says; None: unknown)."""
        if not self.live or (last_seq is not None and all(s.position >= last_seq for s in self.live)):
            return
        self.hub.want_read(self)

    def read_from(self) -> int | None:
        """Where the next read starts: the oldest position among the live subscribers."""
        return min(s.position for s in self.live) if self.live else None

    def take(self, rows: list[Frame]) -> bool:
        """Hand rows read from ``read_from`` to the live subscribers. True when the
        feed must be read again: a full page (more may follow), or a subscriber
        that turned live behind the others during the read."""
        again = len(rows) == self.hub.page_size
        self._observe_lag(rows)
        # Subscribers may have come, gone or turned live during the read.
        for subscriber in self._live():
            if not subscriber.deliver(rows):
                again = True
        return again

    def _observe_lag(self, rows: list[Frame]) -> None:
        """Rows that reach live streams are new: their age is delivery lag.
        (Rows a stream catches up on are history, however old.)"""
        now = datetime.now(UTC)
        for row in rows:
            if row.seq > self.delivered_seq and row.created_at is not None:
                DELIVERY_LAG.observe((now - row.created_at).total_seconds())
        if rows:
            self.delivered_seq = max(self.delivered_seq, rows[-1].seq)

    def fall_back(self) -> None:
        # Each live stream falls back to its own reads: it either recovers
        # or fails alone, and its client reconnects with Last-Event-ID.
        for subscriber in self._live():
            subscriber.fall_back()


class EventHub:
    def __init__(self, settings: Settings, pool: Pool, application_name: str):
        assert settings.database_url
        self.poll_s = settings.poll_interval_s
        self.pool = pool
        self.application_name = application_name
        self.page_size = settings.replay_page_size
        self.buffer_rows = settings.stream_buffer_rows
        self.keepalive_s = settings.keepalive_s
        # Keyed by the job id as text: the NOTIFY payload's form.
        self.feeds: dict[str, JobFeed] = {}
        # The LISTEN connection (None when polling). Every time it listens anew it
        # wakes every feed: NOTIFYs sent while none listened are gone.
        self.listener = (
            None
            if settings.live_updates == "poll"
            else Listener(
                settings.listen_database_url or settings.database_url,
                {queries.NOTIFY_CHANNEL: self._on_notify, queries.TRANSITIONS_CHANNEL: self._on_transition},
                application_name=application_name,
                ping_s=settings.listen_ping_s,
                on_listening=self.wake_all,
            )
        )
        # Set when the shutdown grace has run out: every open stream is cut (drain).
        self.cutting = False
        # The task that brings live updates: the listener's, or the poll.
        self._live_updates: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        # Feeds woken since the last read began; one reader at a time serves them all.
        self._wanted: dict[uuid.UUID, JobFeed] = {}
        self._reader: asyncio.Task[None] | None = None
        # The open transitions streams (api.transitions) of each tenant, each
        # woken through its event when a transition of the tenant commits.
        self.transition_watchers: dict[str, set[asyncio.Event]] = {}

    @property
    def listening(self) -> bool:
        """Whether live updates arrive (readiness). When polling they come from the
        pool's reads: ready as the database is."""
        return self.listener is None or self.listener.listening

    async def start(self) -> None:
        if self.listener is None:
            self._live_updates = asyncio.create_task(self._poll_forever(), name="runstream-poll")
        else:
            self._live_updates = asyncio.create_task(self.listener.run(), name="runstream-listen")
        self._ticker = asyncio.create_task(self._keep_alive_forever(), name="runstream-keepalive")

    async def stop(self) -> None:
        for task in (self._live_updates, self._ticker):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if self._reader is not None:
            self._reader.cancel()

    async def drain(self, grace_s: float) -> None:
        """The server is shutting down and takes no new connections: let the open
        streams run to their terminal events for up to ``grace_s``, then cut the
        rest (what a buffer holds is sent first). A cut stream ends uncleanly, so
        its client knows the run is not over and resumes on another process."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self.open_streams:
            log.info("shutting down: %d open stream(s) have %gs to finish", self.open_streams, grace_s)
        while self.open_streams and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        if self.open_streams:
            log.warning("shutdown grace over: cutting %d open stream(s); their clients resume", self.open_streams)
        self.cutting = True
        for feed in self.feeds.values():
            for subscriber in feed.subscribers:
                subscriber.wake()
        self._wake_transition_watchers()

    @property
    def open_streams(self) -> int:
        """Job streams: those a drain waits for. A transitions stream never ends by
        itself, so it is not waited for; it is cut with the rest."""
        return sum(len(feed.subscribers) for feed in self.feeds.values())

    @contextmanager
    def watch_transitions(self, tenant: str) -> Iterator[asyncio.Event]:
        """An event set whenever a transition of ``tenant`` may have committed
        (and on every reconnect of the LISTEN connection). Freed on leaving the block."""
        woken = asyncio.Event()
        watchers = self.transition_watchers.setdefault(tenant, set())
        watchers.add(woken)
        try:
            yield woken
        finally:
            watchers.discard(woken)
            if not watchers and self.transition_watchers.get(tenant) is watchers:
                del self.transition_watchers[tenant]

    def _wake_transition_watchers(self) -> None:
        for watchers in self.transition_watchers.values():
            for woken in watchers:
                woken.set()

    def _on_transition(self, payload: str) -> None:
        _, tenant = transitions.parse_notification(payload)
        for woken in self.transition_watchers.get(tenant, ()):
            woken.set()

    async def read(self, job_id: uuid.UUID, after: int) -> list[Frame]:
        return event_frames(await read_events(self.pool, job_id, after, self.page_size))

    def want_read(self, feed: JobFeed) -> None:
        """Read for ``feed``'s live subscribers soon. Wake-ups during a read fold into
        the next one, which serves every feed woken meanwhile in ONE query."""
        self._wanted[feed.job_id] = feed
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_wanted())

    async def _read_wanted(self) -> None:
        while self._wanted:
            feeds, self._wanted = self._wanted, {}
            after_seqs = {job_id: seq for job_id, feed in feeds.items() if (seq := feed.read_from()) is not None}
            if not after_seqs:
                continue
            HUB_READS.inc()
            try:
                rows = await read_events_of_jobs(self.pool, after_seqs, self.page_size)
            except Exception:
                log.exception("reading events of %d job(s) for their live streams failed", len(after_seqs))
                for feed in feeds.values():
                    feed.fall_back()
                continue
            for job_id in after_seqs:
                if feeds[job_id].take(event_frames(rows[job_id])):
                    # (A feed that replaced this one meanwhile, and is already wanted, stays.)
                    self._wanted.setdefault(job_id, feeds[job_id])

    @contextmanager
    def subscribe(self, job_id: uuid.UUID, after: int) -> Iterator[Subscriber]:
        """Register a stream of ``job_id`` that has every event up to ``after``.
        Leaving the block (end, error, client gone) frees it, and the feed with the last one."""
        key = str(job_id)
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = JobFeed(self, job_id)
        subscriber = Subscriber(feed, after)
        feed.subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            feed.subscribers.discard(subscriber)
            feed.live.discard(subscriber)
            if not feed.subscribers and self.feeds.get(key) is feed:
                del self.feeds[key]

    async def _keep_alive_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.keepalive_s / KEEPALIVE_TICKS)
            quiet_before = loop.time() - self.keepalive_s
            for feed in self.feeds.values():
                for subscriber in feed.subscribers:
                    if subscriber.quiet_since <= quiet_before:
                        subscriber.keep_alive()

    def wake_all(self) -> None:
        for feed in list(self.feeds.values()):
            feed.wake()
        self._wake_transition_watchers()

    def _on_notify(self, payload: str) -> None:
        notification = parse_notification(payload)
        feed = self.feeds.get(notification.job_id)
        if feed is None:
            return
        rows = notification.rows()
        if rows is None:
            feed.wake(notification.last_seq)
        else:
            feed.offer(event_frames(rows), notification.last_seq)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.wake_all()
