"""The events stream: framing, resume, replay/live interleaving, and the hub's
Postgres footprint. Events are appended straight through the db layer to a job
claimed by the test, so every run is deterministic and needs no worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from runstream.api.hub import EventHub, Subscriber
from runstream.api.sse import Frame
from runstream.core.metrics import HUB_READS
from runstream.core.settings import Settings
from runstream.db import events, jobs
from runstream.db.listener import Listener
from runstream.db.queries import NOTIFY_CHANNEL
from tests.support.processes import ApiServer, start_api
from tests.support.sse import complete_body, deltakit_events, frames, read_stream
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def running_job(pool: AsyncConnectionPool) -> uuid.UUID:
    """A job the test plays the worker for (never dispatched, so no worker takes it)."""
    job = await jobs.create_job(pool, tenant="default", message="test", model="offline")
    claim = await jobs.claim_job(pool, job.id, worker="test", stale_after_s=3600)
    assert claim is not None
    return job.id


def deltas(start: int, count: int) -> list[dict]:
    return [{"type": "text_delta", "delta": f"w{i} "} for i in range(start, start + count)]


async def append(pool: AsyncConnectionPool, job_id: uuid.UUID, payloads: list[dict]) -> None:
    result = await events.append_events(pool, job_id, payloads)
    assert result.applied


async def finish(pool: AsyncConnectionPool, job_id: uuid.UUID) -> None:
    result = await events.append_events(pool, job_id, [{"type": "done", "status": "completed"}], new_status="completed")
    assert result.applied


async def stored_rows(pool: AsyncConnectionPool, job_id: uuid.UUID) -> list[events.EventRow]:
    return await events.read_events(pool, job_id, -1, 1_000_000)


async def finished_job(pool: AsyncConnectionPool, n: int) -> uuid.UUID:
    """A completed job with ``n`` events, the last one terminal (ids 0..n-1)."""
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, n - 1))
    await finish(pool, job_id)
    return job_id


def ids(body: str) -> list[int]:
    return [frame.id for frame in frames(body)]


def url(job_id: uuid.UUID | str, query: str = "") -> str:
    return f"/api/jobs/{job_id}/events{query}"


class OpenStream:
    """An events stream being read: the test reads on until the stream has
    delivered what it waits for (bounded by the client's read timeout)."""

    def __init__(self, response: httpx.Response):
        self._chunks = response.aiter_text()
        self.body = ""
        # Blocks (events and comments) received whole so far.
        self.blocks = 0

    def ids(self) -> list[int]:
        return ids(complete_body(self.body))

    async def read_until(self, arrived: Callable[[OpenStream], bool]) -> None:
        while not arrived(self):
            self._take(await anext(self._chunks))

    async def read_to_end(self) -> str:
        async for chunk in self._chunks:
            self._take(chunk)
        return self.body

    def _take(self, chunk: str) -> None:
        # A block ends in a blank line, never in three newlines: counting blank lines
        # from the last character received on counts each block once.
        self.blocks += (self.body[-1:] + chunk).count("\n\n")
        self.body += chunk


# --- framing ---------------------------------------------------------------------


async def test_stream_is_the_stored_log_byte_for_byte(http: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    job_id = await running_job(pool)
    # Payloads whose text would break a naive framer: newlines, CR, quotes, non-ASCII.
    await append(pool, job_id, [{"type": "text_delta", "delta": 'line\nbreak\r\n "q" é 🙂'}])
    await append(pool, job_id, [{"type": "reasoning", "text": "hmm"}, *deltas(0, 20)])
    await append(pool, job_id, [{"type": "tool_call", "tool_name": "t", "argument": '{"a": 1}', "call_id": "c1"}])
    await finish(pool, job_id)

    async with http.stream("GET", url(job_id)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        raw = await response.aread()

    rows = await stored_rows(pool, job_id)
    assert [r.seq for r in rows] == list(range(24))
    assert raw == "".join(f"id: {r.seq}\ndata: {r.data}\n\n" for r in rows).encode()
    assert b"\r" not in raw
    assert b"event:" not in raw
    body = raw.decode()
    # DeltaKit's reading: split on blank lines, JSON.parse each data: line.
    assert deltakit_events(body) == [json.loads(r.data) for r in rows]
    assert ids(body) == list(range(24))
    assert deltakit_events(body)[0]["delta"] == 'line\nbreak\r\n "q" é 🙂'


async def test_keepalive_comment_while_silent(service_env: dict[str, str], log_dir: Path, pool) -> None:
    server = start_api({**service_env, "RUNSTREAM_KEEPALIVE_S": "0.2"}, log_dir, name="api-keepalive")
    try:
        job_id = await running_job(pool)
        await append(pool, job_id, deltas(0, 2))
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30.0) as client,
            client.stream("GET", url(job_id)) as response,
        ):
            stream = OpenStream(response)
            # Silent after its two events: a keep-alive comes, and only then does the run end.
            await stream.read_until(lambda s: ": keepalive\n\n" in s.body)
            await finish(pool, job_id)
            body = await stream.read_to_end()
    finally:
        server.stop()
    assert ": keepalive\n\n" in body
    assert "\r" not in body
    assert ids(body) == [0, 1, 2]
    assert body.endswith('data: {"type": "done", "status": "completed"}\n\n')


# --- replay, live, end -------------------------------------------------------------


async def test_replay_then_live_then_end(http: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 3))
    async with http.stream("GET", url(job_id)) as response:
        stream = OpenStream(response)
        await stream.read_until(lambda s: s.ids() == [0, 1, 2])  # the replay
        for i in range(3, 30, 3):
            # Live: each append reaches the open stream before the next is made.
            await append(pool, job_id, deltas(i, 3))
            await stream.read_until(lambda s, last=i + 2: s.ids() == list(range(last + 1)))
        await finish(pool, job_id)
        body = await stream.read_to_end()
    assert ids(body) == list(range(31))
    assert deltakit_events(body)[-1] == {"type": "done", "status": "completed"}


async def test_joining_a_finished_job_replays_all_and_ends(http: httpx.AsyncClient, pool) -> None:
    job_id = await finished_job(pool, 50)
    body = await read_stream(http, url(job_id), timeout=10)
    assert ids(body) == list(range(50))


async def test_two_subscribers_see_identical_streams(http: httpx.AsyncClient, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 10))

    async def work() -> None:
        for i in range(10, 100, 10):
            await append(pool, job_id, deltas(i, 10))
        await finish(pool, job_id)

    async with http.stream("GET", url(job_id)) as one, http.stream("GET", url(job_id)) as other:
        streams = [OpenStream(one), OpenStream(other)]
        # Both have replayed the first batch: the rest reaches them live, as it is written.
        for stream in streams:
            await stream.read_until(lambda s: s.ids() == list(range(10)))
        _, first, second = await asyncio.gather(work(), *(stream.read_to_end() for stream in streams))
    assert first == second
    assert ids(first) == list(range(101))


# --- resume ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [-1, 0, 7, 18])
async def test_resume_with_last_event_id_header(http: httpx.AsyncClient, pool, k: int) -> None:
    job_id = await finished_job(pool, 20)
    body = await read_stream(http, url(job_id), headers={"Last-Event-ID": str(k)})
    assert ids(body) == list(range(k + 1, 20))


@pytest.mark.parametrize("k", [-1, 0, 7, 18])
async def test_resume_with_query_parameter(http: httpx.AsyncClient, pool, k: int) -> None:
    job_id = await finished_job(pool, 20)
    body = await read_stream(http, url(job_id, f"?last_event_id={k}"))
    assert ids(body) == list(range(k + 1, 20))


async def test_header_wins_over_query(http: httpx.AsyncClient, pool) -> None:
    job_id = await finished_job(pool, 20)
    body = await read_stream(http, url(job_id, "?last_event_id=3"), headers={"Last-Event-ID": "15"})
    assert ids(body) == [16, 17, 18, 19]


async def test_resume_after_the_terminal_event_ends_at_once(http: httpx.AsyncClient, pool) -> None:
    job_id = await finished_job(pool, 5)
    response = await http.get(url(job_id), headers={"Last-Event-ID": "4"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert frames(response.text) == []


async def test_resume_mid_stream_of_a_running_job(http: httpx.AsyncClient, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 10))
    first = complete_body(await read_stream(http, url(job_id), stop_after=4))
    seen = ids(first)
    assert seen[0] == 0 and seen == list(range(len(seen)))
    await append(pool, job_id, deltas(10, 5))
    await finish(pool, job_id)
    rest = await read_stream(http, url(job_id), headers={"Last-Event-ID": str(seen[-1])})
    assert seen + ids(rest) == list(range(16))


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Last-Event-ID": "abc"}, ""),
        ({}, "?last_event_id=abc"),
        ({}, "?last_event_id=1.5"),
        ({}, "?last_event_id=-2"),
        ({}, "?last_event_id=99999999999999999999"),
        ({"Last-Event-ID": "abc"}, "?last_event_id=3"),
        ({}, "?last_event_id=5"),  # beyond the job's newest event (4)
        ({"Last-Event-ID": ""}, ""),  # sent, so it must be an id: the document says integer
        ({"Last-Event-ID": ""}, "?last_event_id=3"),
    ],
)
async def test_bad_resume_point_is_400_json(http: httpx.AsyncClient, pool, headers, query) -> None:
    job_id = await finished_job(pool, 5)
    response = await http.get(url(job_id, query), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_last_event_id"


@pytest.mark.parametrize(("query", "code"), [("?after=x", "invalid_after"), ("?limit=0", "invalid_limit")])
async def test_every_documented_parameter_is_checked_on_a_stream_too(
    http: httpx.AsyncClient, pool, query, code
) -> None:
    # after and limit page the JSON answer; a stream checks them all the same.
    job_id = await finished_job(pool, 5)
    response = await http.get(url(job_id, query))
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)


async def test_unknown_and_malformed_jobs_are_404(http: httpx.AsyncClient) -> None:
    for job_id in (uuid.uuid4(), "not-a-uuid", "1"):
        response = await http.get(url(job_id))
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "not_found", "message": "job not found"}}


# --- interleaving ------------------------------------------------------------------


async def test_live_appends_during_a_long_replay_leave_no_gap_or_duplicate(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    """A backlog of many replay pages, streams that start at different points,
    and appends landing all the while: every stream gets exactly its suffix."""
    seed = 253
    rng = random.Random(seed)
    # Each append is made once the replay from the start has passed a drawn point of
    # the backlog, so the appends land all through the replays, the same way every run.
    gates = sorted(rng.sample(range(20_000), 150))
    sizes = [rng.randint(1, 8) for _ in gates]
    job_id = await running_job(pool)
    for i in range(0, 20_000, 2_000):
        await append(pool, job_id, deltas(i, 2_000))
    starts = [-1, -1, 0, 999, 5_000, 19_990]

    async with http.stream("GET", url(job_id), headers={"Last-Event-ID": str(starts[0])}) as response:
        paced_by = OpenStream(response)

        async def work() -> None:
            next_delta = 20_000
            for gate, size in zip(gates, sizes, strict=True):
                await paced_by.read_until(lambda s, gate=gate: s.blocks > gate)
                await append(pool, job_id, deltas(next_delta, size))
                next_delta += size
            await finish(pool, job_id)

        _, *others = await asyncio.gather(
            work(), *(read_stream(http, url(job_id), headers={"Last-Event-ID": str(k)}) for k in starts[1:])
        )
        bodies = [await paced_by.read_to_end(), *others]
    last = (await stored_rows(pool, job_id))[-1].seq
    for k, body in zip(starts, bodies, strict=True):
        assert ids(body) == list(range(k + 1, last + 1)), f"from {k}, seed {seed}"


# --- Postgres footprint --------------------------------------------------------------


async def api_connections(pool: AsyncConnectionPool, api: ApiServer) -> int:
    """The API process's connections: its pool and listener are named after its pid."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            (f"runstream-api-{api.pid}%",),
        )
        return (await cur.fetchone())["n"]


async def open_streams(http: httpx.AsyncClient, job_id: uuid.UUID, n: int) -> list:
    """``n`` streams, each held open after its first event (so each is subscribed)."""
    streams = []
    for _ in range(n):
        context = http.stream("GET", url(job_id))
        response = await context.__aenter__()
        chunks = response.aiter_raw()
        assert b"id: 0\n" in await anext(chunks)
        streams.append((context, chunks))
    return streams


async def close_streams(streams: list) -> None:
    for context, chunks in streams:
        await chunks.aclose()
        await context.__aexit__(None, None, None)


async def test_postgres_connections_do_not_grow_with_streams(idle_api: ApiServer, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 1))
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=idle_api.url, timeout=30.0, limits=limits) as client:
        one = await open_streams(client, job_id, 1)
        with_one = await api_connections(pool, idle_api)
        fifty = await open_streams(client, job_id, 49)
        with_fifty = await api_connections(pool, idle_api)
        # The streams are live and fed: one append reaches all fifty.
        await finish(pool, job_id)
        for _, chunks in one + fifty:
            assert b'"done"' in await anext(chunks)
        await close_streams(one + fifty)
    assert with_one == with_fifty == Settings.model_fields["api_db_pool_size"].default + 1


async def test_stream_survives_the_listen_connection_dropping(
    http: httpx.AsyncClient, idle_api: ApiServer, pool
) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 2))
    async with http.stream("GET", url(job_id), timeout=20) as response:
        stream = OpenStream(response)
        await stream.read_until(lambda s: s.ids() == [0, 1])  # replayed, now live

        async def drop_listener() -> bool:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s) t",
                    (f"runstream-api-{idle_api.pid}-listen",),
                )
                return (await cur.fetchone())["n"] == 1

        await eventually(drop_listener, what="the API's LISTEN connection terminated")
        # These may land while no connection listens: the reconnect's wake-up covers them.
        await append(pool, job_id, deltas(2, 3))
        await stream.read_until(lambda s: s.ids() == list(range(5)))
        await finish(pool, job_id)
        body = await stream.read_to_end()
    assert ids(body) == list(range(6))


# --- the hub in this process -----------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def small_hub(database_url: str, pool: AsyncConnectionPool) -> AsyncIterator[EventHub]:
    """A hub with tiny pages and buffers, so a short test crosses every path:
    paged catch-up, turning live, falling back, re-reading after a gap."""
    settings = Settings(DATABASE_URL=database_url, replay_page_size=7, stream_buffer_rows=20, listen_ping_s=1.0)
    hub = EventHub(settings, pool, application_name=f"runstream-test-hub-{uuid.uuid4().hex[:8]}")
    await hub.start()
    yield hub
    await hub.stop()


async def collect(
    hub: EventHub, job_id: uuid.UUID, after: int, between_batches: Callable[[], Awaitable[object]] | None = None
) -> list[int]:
    """Consume a subscription to the terminal event; a slow client awaits
    ``between_batches`` before reading on."""
    seqs = []
    with hub.subscribe(job_id, after) as subscriber:
        while True:
            rows = await asyncio.wait_for(subscriber.next_batch(), 20)
            seqs += [row.seq for row in rows]
            if rows and rows[-1].terminal:
                return seqs
            if between_batches is not None:
                await between_batches()


def subscribed_and_live(hub: EventHub, job_id: uuid.UUID) -> bool:
    """The job's subscribers have caught up and wait for the feed to hand them rows."""
    feed = hub.feeds.get(str(job_id))
    return feed is not None and bool(feed.subscribers) and all(s.live for s in feed.subscribers)


async def test_hub_many_subscribers_slow_and_fast_get_exact_suffixes(small_hub: EventHub, pool) -> None:
    seed = 381
    rng = random.Random(seed)
    # Drawn first, so the seed alone decides them: the appends' sizes, and where each
    # subscriber starts, after which append it joins, and (every third one, a slow
    # client) how many more appends it lets pass before reading each next batch.
    sizes = [rng.randint(1, 12) for _ in range(120)]
    subscribers = [
        (rng.randint(-1, 99), rng.randint(0, 60), random.Random(rng.random()) if i % 3 == 0 else None)
        for i in range(16)
    ]
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 100))
    appended = [asyncio.Event() for _ in sizes]
    made = 0

    async def work() -> None:
        nonlocal made
        n = 100
        for size, done in zip(sizes, appended, strict=True):
            await append(pool, job_id, deltas(n, size))
            n += size
            made += 1
            done.set()
        await finish(pool, job_id)

    def slow_client(rng: random.Random) -> Callable[[], Awaitable[object]]:
        """Lets 2 to 6 more appends pass (or the rest) between batches: it falls behind, catching up by pages."""
        return lambda: appended[min(made + rng.randint(2, 6), len(sizes)) - 1].wait()

    async def join(after: int, join_after: int, slow: random.Random | None) -> list[int]:
        await appended[join_after].wait()
        return await collect(small_hub, job_id, after, slow_client(slow) if slow else None)

    # Staggered joins: late subscribers turn live while earlier ones are being fed.
    results = await asyncio.gather(work(), *(join(*subscriber) for subscriber in subscribers))
    last = (await stored_rows(pool, job_id))[-1].seq
    for (after, join_after, _), seqs in zip(subscribers, results[1:], strict=True):
        assert seqs == list(range(after + 1, last + 1)), f"from {after}, joined after append {join_after}, seed {seed}"
    assert small_hub.feeds == {}


async def test_hub_frees_a_subscription_when_its_stream_is_cancelled(small_hub: EventHub, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 3))
    task = asyncio.create_task(collect(small_hub, job_id, -1))
    await eventually(lambda: subscribed_and_live(small_hub, job_id), what="the subscriber waiting for rows")
    assert len(small_hub.feeds[str(job_id)].subscribers) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert str(job_id) not in small_hub.feeds


async def test_hub_listener_reconnects_and_wakes_live_streams(small_hub: EventHub, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 2))
    task = asyncio.create_task(collect(small_hub, job_id, -1))
    await eventually(
        lambda: small_hub.listening and subscribed_and_live(small_hub, job_id),
        what="the hub listening and the subscriber waiting for rows",
    )
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s) t",
            (small_hub.application_name,),
        )
        assert (await cur.fetchone())["n"] == 1
    # These may land while no connection listens: the reconnect's wake-up covers them.
    await append(pool, job_id, deltas(2, 2))
    await finish(pool, job_id)
    assert await asyncio.wait_for(task, 20) == [0, 1, 2, 3, 4]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s", (small_hub.application_name,)
        )
        assert (await cur.fetchone())["n"] == 1


async def test_hub_feeds_only_contiguous_rows(small_hub: EventHub, pool) -> None:
    job_id = await running_job(pool)
    row = lambda seq: Frame(seq, False, None, b"")  # noqa: E731
    with small_hub.subscribe(job_id, 5) as subscriber:
        subscriber.live = True
        assert subscriber.deliver([row(7), row(8)]) is False  # 6 is missing: the feed must read again
        assert subscriber.position == 5
        assert subscriber.deliver([row(3), row(4), row(5), row(6), row(7)]) is True  # keeps only 6, 7
        assert subscriber.position == 7
        assert [r.seq for r in await subscriber.next_batch()] == [6, 7]


async def test_hub_keeps_quiet_streams_alive_and_busy_ones_fed(database_url: str, pool) -> None:
    keepalive_s = 0.3
    settings = Settings(DATABASE_URL=database_url, keepalive_s=keepalive_s, listen_ping_s=1.0)
    hub = EventHub(settings, pool, application_name=f"runstream-test-hub-{uuid.uuid4().hex[:8]}")
    await hub.start()
    quiet_job, busy_job = await running_job(pool), await running_job(pool)
    loop = asyncio.get_running_loop()

    async def keepalives(subscriber: Subscriber, count: int) -> None:
        for _ in range(count):
            assert await asyncio.wait_for(subscriber.next_batch(), 5) == []

    try:
        with hub.subscribe(quiet_job, -1) as quiet:
            started = loop.time()
            await keepalives(quiet, 1)  # a keep-alive, not before its time
            assert loop.time() - started >= keepalive_s
            with hub.subscribe(busy_job, -1) as busy:
                # The busy stream is fed one event after another for as long as the quiet
                # one takes to get three more keep-alives: never a keep-alive in between.
                clock = asyncio.create_task(keepalives(quiet, 3))
                batches: list[list[Frame]] = []
                while not clock.done():
                    await append(pool, busy_job, deltas(len(batches), 1))
                    batches.append(await asyncio.wait_for(busy.next_batch(), 5))
                await clock
                assert len(batches) > 3
                assert all(batches)
                assert [frame.seq for batch in batches for frame in batch] == list(range(len(batches)))
                assert await asyncio.wait_for(busy.next_batch(), 5) == []  # silent again: kept alive
    finally:
        await hub.stop()


async def notifications_of(
    database_url: str, pool, job_ids: list[uuid.UUID], append_them
) -> dict[uuid.UUID, list[events.Notification]]:
    """The NOTIFYs about each of ``job_ids`` that ``append_them()`` sends, as a listener gets them."""
    got: list[events.Notification] = []
    listening = asyncio.Event()
    listener = Listener(
        database_url,
        {NOTIFY_CHANNEL: lambda payload: got.append(events.parse_notification(payload))},
        application_name=f"runstream-test-notifications-{uuid.uuid4().hex[:8]}",
        ping_s=10,
        on_listening=listening.set,
    )
    listen = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listening.wait(), 10)
        await append_them()
        for job_id in job_ids:
            last_seq = (await stored_rows(pool, job_id))[-1].seq
            await eventually(
                lambda job_id=job_id, last_seq=last_seq: any(
                    n.job_id == str(job_id) and n.last_seq == last_seq for n in got
                ),
                timeout=10,
                what=f"the NOTIFY of {job_id}'s commit up to {last_seq}",
            )
    finally:
        listen.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listen
    return {job_id: [n for n in got if n.job_id == str(job_id)] for job_id in job_ids}


async def test_notify_carries_the_commits_rows_exactly_as_stored(database_url: str, pool) -> None:
    job_id = await running_job(pool)
    payloads = [
        {"type": "reasoning", "text": 'quotes " and \\ back\nslash, tab\t, ünïcødé, 1.50e3'},
        {"type": "tool_call", "id": "t1", "name": "calc", "args": {"expr": "2+3*4", "n": 1.0}},
    ]
    [notification] = (await notifications_of(database_url, pool, [job_id], lambda: append(pool, job_id, payloads)))[
        job_id
    ]
    stored = await stored_rows(pool, job_id)
    assert notification.last_seq == 1
    rows = notification.rows()
    assert [(r.seq, r.type, r.data) for r in rows] == [(r.seq, r.type, r.data) for r in stored]
    assert all(abs((a.created_at - b.created_at).total_seconds()) < 1e-5 for a, b in zip(rows, stored, strict=True))


async def test_one_commit_of_several_jobs_notifies_each_job_of_its_own_rows(database_url: str, pool) -> None:
    # APPEND_EVENTS (several jobs in one statement, the worker's group commit), as
    # against APPEND_JOB_EVENTS above: one NOTIFY per job, each with that job's rows only.
    job_ids = [await running_job(pool) for _ in range(5)]
    batches = [
        events.AppendBatch(job_id, [{"type": "reasoning", "text": f"job {i} event {k}"} for k in range(i + 1)])
        for i, job_id in enumerate(job_ids)
    ]

    async def append_all() -> None:
        assert [r.applied for r in await events.append_many(pool, batches)] == [True] * 5

    got = await notifications_of(database_url, pool, job_ids, append_all)
    for i, job_id in enumerate(job_ids):
        [notification] = got[job_id]
        rows = notification.rows()
        assert rows is not None
        assert [(r.seq, json.loads(r.data)) for r in rows] == [
            (k, {"type": "reasoning", "text": f"job {i} event {k}"}) for k in range(i + 1)
        ]
        assert notification.last_seq == i
        assert [(r.seq, r.data) for r in rows] == [(r.seq, r.data) for r in await stored_rows(pool, job_id)]


async def test_notify_leaves_out_rows_that_do_not_fit(database_url: str, pool) -> None:
    job_id = await running_job(pool)
    big = [{"type": "tool_result", "id": "t1", "result": "x" * 8000}]
    many = [{"type": "reasoning", "text": str(i)} for i in range(65)]
    [too_big] = (await notifications_of(database_url, pool, [job_id], lambda: append(pool, job_id, big)))[job_id]
    [too_many] = (await notifications_of(database_url, pool, [job_id], lambda: append(pool, job_id, many)))[job_id]
    assert (too_big.last_seq, too_big.rows()) == (0, None)
    assert (too_many.last_seq, too_many.rows()) == (65, None)


async def test_hub_serves_live_streams_from_the_notify_and_reads_only_what_it_lacks(small_hub: EventHub, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 1))
    with small_hub.subscribe(job_id, -1) as subscriber:
        assert [f.seq for f in await asyncio.wait_for(subscriber.next_batch(), 5)] == [0]
        assert subscriber.live
        await eventually(
            lambda: small_hub._reader is None or small_hub._reader.done(),
            what="the read that turning live asked for to be over",
        )
        reads = HUB_READS._value.get()
        seqs = []
        for i in range(1, 11):
            await append(pool, job_id, deltas(i, 1))
            seqs += [f.seq for f in await asyncio.wait_for(subscriber.next_batch(), 5)]
        assert seqs == list(range(1, 11))
        assert HUB_READS._value.get() == reads  # every row came with its NOTIFY
        # A row too big for a NOTIFY is read.
        await append(pool, job_id, [{"type": "tool_result", "id": "t", "result": "x" * 8000}])
        frames = await asyncio.wait_for(subscriber.next_batch(), 5)
        assert [f.seq for f in frames] == [11]
        assert frames[0].data == f"id: 11\ndata: {(await stored_rows(pool, job_id))[-1].data}\n\n".encode()
        assert HUB_READS._value.get() == reads + 1


async def test_hub_slow_subscriber_falls_back_to_its_own_reads(small_hub: EventHub, pool) -> None:
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 3))
    with small_hub.subscribe(job_id, -1) as subscriber:
        seqs = [row.seq for row in await subscriber.next_batch()]
        assert subscriber.live
        # The client reads nothing while far more than its buffer arrives.
        for i in range(3, 100, 10):
            await append(pool, job_id, deltas(i, 10))
        await eventually(lambda: not subscriber.live, what="the slow subscriber falling back to its own reads")
        assert len(subscriber._buffer) <= small_hub.buffer_rows
        # What it was handed before falling back waits for it, in order; it reads the rest itself.
        assert [frame.seq for frame in subscriber._buffer] == list(range(3, subscriber.position + 1))
        await finish(pool, job_id)
        while not seqs or seqs[-1] != 103:
            seqs += [row.seq for row in await subscriber.next_batch()]
    assert seqs == list(range(104))


async def open_streams_metric(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("runstream_open_streams "):
            return float(line.split()[1])
    raise AssertionError("no runstream_open_streams in /metrics")


async def test_a_client_leaving_mid_run_frees_its_stream_at_once(
    http: httpx.AsyncClient, idle_api: ApiServer, pool: AsyncConnectionPool
) -> None:
    """The connection closes while the run goes on and nothing is being sent: the
    stream's subscription and its slot are freed then, not at the next event or
    keep-alive (the stream runs in the request's task; a watcher ends it)."""
    job_id = await running_job(pool)
    await append(pool, job_id, deltas(0, 1))
    before = await open_streams_metric(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", idle_api.port)
    writer.write(f"GET {url(job_id)} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n".encode())
    received = b""
    while b"id: 0\n" not in received:
        received += await asyncio.wait_for(reader.read(65536), 10)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert await open_streams_metric(http) == before + 1

    writer.close()
    await writer.wait_closed()

    async def freed() -> bool:
        return await open_streams_metric(http) == before

    await eventually(freed, what="the stream of the client that left to be freed")
    # The server is none the worse: the same job streams to the next client.
    await append(pool, job_id, deltas(1, 1))
    await finish(pool, job_id)
    body = await read_stream(http, url(job_id))
    assert [(f.id, f.data["type"]) for f in frames(body)] == [(0, "text_delta"), (1, "text_delta"), (2, "done")]
