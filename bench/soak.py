"""``runstream soak``: a seeded chaos soak on private services.

It starts a Postgres cluster and a Redis of its own (free ports), API processes
and workers, submits jobs of every kind (plain answers, tool calls, transient
and permanent model failures, cancels), follows each with a client that drops
its connection now and then and resumes on any API with ``Last-Event-ID`` or
``?last_event_id=``, and meanwhile breaks things at random: kill -9 or SIGTERM
of a worker or an API, Postgres restarted ``-m immediate`` or frozen (SIGSTOP)
for seconds, the broker killed and started again empty.

Then it checks every job in the database: one terminal state; its rows gap-free
with one terminal row, the last; what its client received over all its
connections equal to the rows byte for byte; a ``retry`` event opening every
later attempt; every 202 backed by a row. A 5xx other than the documented 503
``database_unavailable`` is an anomaly, and so is a request that hangs past the
bound. The plan (jobs, faults, timings) comes from the seed. It prints a tally
per fault and one summary line, and exits non-zero on any anomaly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from runstream.bench.private_services import ThrowawayPostgres, ThrowawayRedis
from runstream.bench.services import NO_LIMITS, RUNSTREAM, Service, free_port
from runstream.core.settings import child_environment
from runstream.db.audit import all_jobs, job_log
from runstream.db.connector import open_pool
from runstream.db.events import TERMINAL_TYPES
from runstream.db.migrate import upgrade_to_head

FAULTS = (
    "worker_kill9",
    "worker_sigterm",
    "api_kill9",
    "api_sigterm",
    "postgres_restart",
    "postgres_sigstop",
    "broker_restart",
)
FINISHED = ("completed", "failed", "cancelled")

# Recovery quick enough for a soak of minutes, and the same in every process.
SOAK_SETTINGS = {
    **NO_LIMITS,
    "RUNSTREAM_HEARTBEAT_S": "0.5",
    "RUNSTREAM_STALE_AFTER_S": "3",
    "RUNSTREAM_REAPER_INTERVAL_S": "0.5",
    "RUNSTREAM_PENDING_TIMEOUT_S": "3",
    "RUNSTREAM_CANCEL_POLL_S": "0.2",
    "RUNSTREAM_REDIS_VISIBILITY_TIMEOUT_S": "10",
    "RUNSTREAM_RETRY_BACKOFF_S": "0.2",
    "RUNSTREAM_RETRY_BACKOFF_MAX_S": "1",
    # Hand-backs and lost workers count as attempts; the soak causes many.
    "RUNSTREAM_MAX_ATTEMPTS": "25",
    "RUNSTREAM_OFFLINE_DELAY_MS": "10",
    "RUNSTREAM_KEEPALIVE_S": "1",
    "RUNSTREAM_SHUTDOWN_GRACE_S": "1",
    "RUNSTREAM_API_DB_WAIT_S": "3",
    "RUNSTREAM_LOG_LEVEL": "INFO",
}


@dataclass(frozen=True)
class SoakOptions:
    seed: int
    jobs: int
    duration_s: float  # how long faults are injected; jobs are submitted over most of it
    apis: int = 2
    workers: int = 2
    # A request (or a silence on an open stream) longer than this is a hang.
    request_bound_s: float = 30.0
    # After the faults stop, how long every job and client gets to finish.
    drain_s: float = 180.0
    log_dir: Path | None = None


@dataclass(frozen=True)
class JobPlan:
    index: int
    kind: str
    at_s: float  # when it is submitted, from the start of the soak
    message: str
    offline: dict[str, Any]
    cancel_after_s: float | None
    # How many events each of the client's deliberate connections reads before it hangs up.
    cut_after: tuple[int, ...]


@dataclass(frozen=True)
class FaultPlan:
    at_s: float
    kind: str
    target: int  # which worker or API
    pause_s: float  # how long Postgres stays frozen


def plan_jobs(rng: random.Random, count: int, over_s: float) -> list[JobPlan]:
    kinds = ["plain", "plain", "tool", "sleep_tool", "transient", "permanent", "cancel"]
    plans = []
    for index in range(count):
        kind = rng.choice(kinds)
        cancel_after = None
        message = f"soak job {index}: tell me something"
        offline: dict[str, Any] = {"words": rng.randint(20, 250)}
        if kind == "tool":
            message = f"soak job {index}: what is {rng.randint(2, 99)}*{rng.randint(2, 99)}?"
            offline = {}
        elif kind == "sleep_tool":
            offline = {"tool_sleep_s": round(rng.uniform(0.2, 2.0), 1)}
        elif kind == "transient":
            offline["fail_attempts"] = rng.randint(1, 2)
        elif kind == "permanent":
            offline = {"fail": f"soak permanent failure {index}"}
        elif kind == "cancel":
            offline = rng.choice([{"words": 600}, {"tool_sleep_s": 8}])
            cancel_after = round(rng.uniform(0.1, 3.0), 2)
        cuts = tuple(rng.randint(1, 40) for _ in range(rng.randint(0, 3)))
        plans.append(JobPlan(index, kind, rng.uniform(0, over_s), message, offline, cancel_after, cuts))
    return sorted(plans, key=lambda plan: plan.at_s)


def plan_faults(rng: random.Random, duration_s: float, apis: int, workers: int) -> list[FaultPlan]:
    plans = []
    at = rng.uniform(2.0, 5.0)
    while at < duration_s:
        kind = rng.choice(FAULTS)
        target = rng.randrange(workers if kind.startswith("worker") else apis)
        plans.append(FaultPlan(round(at, 2), kind, target, round(rng.uniform(1.0, 3.0), 1)))
        at += rng.uniform(1.5, 6.0)
    return plans


@dataclass
class Received:
    """What one job's client got, over all its connections."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0
    finished: bool = False

    @property
    def last_id(self) -> int:
        return self.frames[-1][0] if self.frames else -1


@dataclass
class Tally:
    faults: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    # Jobs whose run started over (a ``retry`` event), and how many times in all.
    retried_jobs: int = 0
    retry_events: int = 0
    # Which fault last happened before each anomaly: the tally per fault.
    anomalies_after: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    last_fault: str = "none"

    def anomaly(self, kind: str, detail: str) -> None:
        self.anomalies[kind] += 1
        self.anomalies_after[self.last_fault] += 1
        if len(self.details) < 50:
            self.details.append(f"{kind}: {detail}")


class Cluster:
    """The private services and the Runstream processes the soak breaks."""

    def __init__(self, options: SoakOptions, log_dir: Path, tally: Tally):
        self.options = options
        self.log_dir = log_dir
        self.tally = tally
        self.postgres = ThrowawayPostgres()
        self.broker = ThrowawayRedis()
        self.api_ports = [free_port() for _ in range(options.apis)]
        self.apis: list[Service | None] = [None] * options.apis
        self.workers: list[Service | None] = [None] * options.workers
        self.started = 0  # processes started so far: unique names and log files
        self.database_url = ""
        self.env: dict[str, str] = {}

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    def start(self) -> None:
        self.postgres.start()
        self.broker.start()
        self.database_url = self.postgres.create_database("runstream")
        upgrade_to_head(self.database_url)
        services = child_environment(
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker.url,
            RUNSTREAM_QUEUE="soak",
            RUNSTREAM_DATA_DIR=str(self.log_dir / "data"),
        )
        self.env = {**services, **SOAK_SETTINGS}
        for index in range(self.options.apis):
            self.start_api(index)
        for index in range(self.options.workers):
            self.start_worker(index)
        for worker in self.workers:
            assert worker is not None
            worker.wait_until(partial(worker_ready, worker), timeout=120)

    def _name(self, kind: str, index: int) -> str:
        self.started += 1
        return f"{kind}{index}-{self.started}"

    def start_api(self, index: int) -> None:
        port = self.api_ports[index]
        api = Service(self._name("api", index), [RUNSTREAM, "api", "--port", str(port)], self.env, self.log_dir, port)
        self.apis[index] = api
        api.wait_healthy("/healthz")

    def start_worker(self, index: int) -> None:
        name = self._name("worker", index)
        self.workers[index] = Service(name, [RUNSTREAM, "worker", "-n", f"soak-{name}@%h"], self.env, self.log_dir)

    def check_alive(self) -> None:
        """A process that exited without being told to is an anomaly; it is replaced,
        and so is one whose repair after a fault failed."""
        for index, worker in enumerate(self.workers):
            if worker is not None and worker.proc.poll() is not None:
                self.tally.anomaly("worker_exited", f"{worker.name} exited on its own with {worker.proc.returncode}")
            if worker is None or worker.proc.poll() is not None:
                self.start_worker(index)
        for index, api in enumerate(self.apis):
            if api is not None and api.proc.poll() is not None:
                self.tally.anomaly("api_exited", f"{api.name} exited on its own with {api.proc.returncode}")
            if api is None or api.proc.poll() is not None:
                self.repair(self.start_api, index)

    def repair(self, start: Any, index: int) -> None:
        try:
            start(index)
        except (RuntimeError, TimeoutError) as exc:
            self.tally.anomaly("restart_failed", f"{start.__name__}({index}): {str(exc)[:300]}")

    def close(self) -> None:
        for process in [*self.apis, *self.workers]:
            if process is not None and process.proc.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.proc.wait(10)
        self.broker.remove()
        self.postgres.remove()


def worker_ready(worker: Service) -> bool:
    return " ready." in worker.log()


def _wait_exit(process: Service, timeout: float) -> int | None:
    try:
        return process.proc.wait(timeout)
    except Exception:
        return None


async def inject(cluster: Cluster, fault: FaultPlan, tally: Tally) -> None:
    """One fault, and the repair an operator's supervisor would make."""
    tally.faults[fault.kind] += 1
    tally.last_fault = fault.kind
    bound = cluster.options.request_bound_s * 4
    if fault.kind.startswith("worker"):
        worker = cluster.workers[fault.target]
        assert worker is not None
        cluster.workers[fault.target] = None  # not "exited on its own"
        if fault.kind == "worker_kill9":
            os.killpg(worker.pid, signal.SIGKILL)
            await asyncio.to_thread(_wait_exit, worker, 10)
        else:
            os.killpg(worker.pid, signal.SIGTERM)
            # Its runs are handed back at once; it exits when they are.
            if await asyncio.to_thread(_wait_exit, worker, bound) is None:
                tally.anomaly("slow_shutdown", f"{worker.name} still up {bound}s after SIGTERM")
                os.killpg(worker.pid, signal.SIGKILL)
        cluster.start_worker(fault.target)
    elif fault.kind.startswith("api"):
        api = cluster.apis[fault.target]
        assert api is not None
        cluster.apis[fault.target] = None
        os.killpg(api.pid, signal.SIGKILL if fault.kind == "api_kill9" else signal.SIGTERM)
        if await asyncio.to_thread(_wait_exit, api, bound) is None:
            tally.anomaly("slow_shutdown", f"{api.name} still up {bound}s after SIGTERM")
            os.killpg(api.pid, signal.SIGKILL)
        await asyncio.to_thread(cluster.repair, cluster.start_api, fault.target)
    elif fault.kind == "postgres_restart":
        await asyncio.to_thread(cluster.postgres.stop, "immediate")
        await asyncio.to_thread(cluster.postgres.start)
    elif fault.kind == "postgres_sigstop":
        frozen = await asyncio.to_thread(cluster.postgres.freeze)
        try:
            await asyncio.sleep(fault.pause_s)
        finally:
            cluster.postgres.thaw(frozen)
    elif fault.kind == "broker_restart":
        await asyncio.to_thread(cluster.broker.kill)
        await asyncio.to_thread(cluster.broker.start)


class Soak:
    def __init__(self, options: SoakOptions, cluster: Cluster, tally: Tally):
        self.options = options
        self.cluster = cluster
        self.tally = tally
        self.rng = random.Random(options.seed ^ 0x5EED)  # which API a request goes to
        self.accepted: dict[uuid.UUID, JobPlan] = {}
        self.received: dict[uuid.UUID, Received] = {}
        self.http = httpx.AsyncClient(timeout=options.request_bound_s)

    def api(self) -> str:
        return self.rng.choice(self.cluster.api_urls)

    async def request(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response | None:
        """A request to any API, again on another when one is down or answers the
        documented 503; None when ``deadline`` passes first."""
        while time.monotonic() < deadline:
            try:
                response = await self.http.request(method, self.api() + path, **kwargs)
            except httpx.TimeoutException:
                self.tally.anomaly("hang", f"{method} {path} unanswered after {self.options.request_bound_s}s")
                continue
            except httpx.TransportError:
                self.tally.responses["connection_error"] += 1
                await asyncio.sleep(0.2)
                continue
            self.tally.responses[str(response.status_code)] += 1
            if response.status_code == 503 and is_database_unavailable(response):
                await asyncio.sleep(min(float(response.headers["Retry-After"]), 1.0))
                continue
            if response.status_code >= 500:
                self.tally.anomaly("5xx", f"{method} {path}: {response.status_code} {response.text[:200]}")
                await asyncio.sleep(0.2)
                continue
            return response
        return None

    async def run_job(self, plan: JobPlan, started: float, deadline: float) -> None:
        await asyncio.sleep(max(0.0, started + plan.at_s - time.monotonic()))
        body = {"message": plan.message, "metadata": {"offline": plan.offline, "soak": plan.kind}}
        response = await self.request("POST", "/api/jobs", deadline, json=body)
        if response is None or response.status_code != 202:
            self.tally.anomaly("submit", f"job {plan.index}: {response and response.status_code}")
            return
        job_id = uuid.UUID(response.json()["job_id"])
        self.accepted[job_id] = plan
        received = self.received[job_id] = Received()
        tasks = [asyncio.create_task(self.follow(job_id, plan, received, deadline))]
        if plan.cancel_after_s is not None:
            tasks.append(asyncio.create_task(self.cancel(job_id, plan.cancel_after_s, deadline)))
        await asyncio.gather(*tasks)

    async def cancel(self, job_id: uuid.UUID, after_s: float, deadline: float) -> None:
        await asyncio.sleep(after_s)
        response = await self.request("POST", f"/api/jobs/{job_id}/cancel", deadline)
        if response is None or response.status_code != 200:
            self.tally.anomaly("cancel", f"{job_id}: {response and response.status_code}")

    async def follow(self, job_id: uuid.UUID, plan: JobPlan, received: Received, deadline: float) -> None:
        """Read the stream to its terminal event, over as many connections as it takes."""
        cuts = list(plan.cut_after)
        while not received.finished:
            if time.monotonic() > deadline:
                self.tally.anomaly("unfinished_stream", f"{job_id}: last id {received.last_id}")
                return
            path, headers = f"/api/jobs/{job_id}/events", {}
            if received.frames:
                # Both ways a client resumes: EventSource's header, or the query parameter.
                if self.rng.random() < 0.5:
                    headers["Last-Event-ID"] = str(received.last_id)
                else:
                    path += f"?last_event_id={received.last_id}"
            cut_after = cuts.pop(0) if cuts else None
            received.connections += 1
            try:
                await self.read_stream(path, headers, received, cut_after)
            except httpx.TimeoutException:
                self.tally.anomaly("hang", f"stream of {job_id} silent for {self.options.request_bound_s}s")
            except httpx.TransportError:
                self.tally.responses["stream_cut"] += 1
                await asyncio.sleep(0.2)

    async def read_stream(self, path: str, headers: dict[str, str], received: Received, cut_after: int | None) -> None:
        async with self.http.stream("GET", self.api() + path, headers=headers) as response:
            self.tally.responses[str(response.status_code)] += 1
            if response.status_code != 200:
                await response.aread()
                if response.status_code == 503 and is_database_unavailable(response):
                    await asyncio.sleep(1.0)
                else:
                    self.tally.anomaly("stream_status", f"{path}: {response.status_code} {response.text[:200]}")
                    await asyncio.sleep(0.5)
                return
            buffer = b""
            count = 0
            async for chunk in response.aiter_bytes():
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if not block.startswith(b"id: "):
                        continue  # keep-alive comments, the retry hint
                    seq = int(block[4 : block.index(b"\n")])
                    received.frames.append((seq, block + b"\n\n"))
                    count += 1
                    if payload_of(block.split(b"\n", 1)[1].removeprefix(b"data: "))["type"] in TERMINAL_TYPES:
                        received.finished = True
                if cut_after is not None and count >= cut_after and not received.finished:
                    return  # the client hangs up on purpose, and will resume
            if not received.finished:
                self.tally.anomaly("clean_end_without_terminal", f"{path}: after id {received.last_id}")

    async def run(self, job_plans: list[JobPlan], fault_plans: list[FaultPlan]) -> None:
        started = time.monotonic()
        deadline = started + self.options.duration_s + self.options.drain_s
        jobs = asyncio.gather(*[self.run_job(plan, started, deadline) for plan in job_plans])
        for fault in fault_plans:
            await asyncio.sleep(max(0.0, started + fault.at_s - time.monotonic()))
            await asyncio.to_thread(self.cluster.check_alive)
            await inject(self.cluster, fault, self.tally)
        await asyncio.sleep(max(0.0, started + self.options.duration_s - time.monotonic()))
        self.tally.last_fault = "none"
        await asyncio.to_thread(self.cluster.check_alive)
        await jobs
        await self.http.aclose()


def is_database_unavailable(response: httpx.Response) -> bool:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return code == "database_unavailable" and "Retry-After" in response.headers


def payload_of(data: str | bytes) -> dict[str, Any]:
    return json.loads(data)


def frame(row: dict[str, Any]) -> bytes:
    return f"id: {row['seq']}\ndata: {row['data']}\n\n".encode()


async def audit(soak: Soak, tally: Tally) -> int:
    """Check every job of the log; returns how many there are."""
    pool = await open_pool(soak.cluster.database_url, 2, name="runstream-soak-audit")
    try:
        jobs = {job["id"]: job for job in await all_jobs(pool)}
        for job_id in soak.accepted:
            if job_id not in jobs:
                tally.anomaly("202_without_row", str(job_id))
        for job_id, job in jobs.items():
            rows = await job_log(pool, job_id)
            plan = soak.accepted.get(job_id)
            tally.outcomes[f"{plan.kind if plan else 'unacknowledged'}:{job['status']}"] += 1
            retries = sum(row["type"] == "retry" for row in rows)
            tally.retried_jobs += retries > 0
            tally.retry_events += retries
            check_job(job, rows, plan, soak.received.get(job_id), tally)
        return len(jobs)
    finally:
        await pool.close()


def check_job(
    job: dict[str, Any], rows: list[dict[str, Any]], plan: JobPlan | None, received: Received | None, tally: Tally
) -> None:
    job_id = job["id"]
    if job["status"] not in FINISHED:
        tally.anomaly("not_terminal", f"{job_id}: {job['status']}")
        return
    if [row["seq"] for row in rows] != list(range(len(rows))) or job["last_seq"] != len(rows) - 1:
        tally.anomaly("gap", f"{job_id}: seqs {[row['seq'] for row in rows][-10:]}, last_seq {job['last_seq']}")
    terminals = [row for row in rows if row["type"] in TERMINAL_TYPES]
    if len(terminals) != 1 or rows[-1]["type"] not in TERMINAL_TYPES:
        tally.anomaly("terminal_rows", f"{job_id}: {len(terminals)} terminal row(s), last {rows[-1:]}")
    elif job["status"] != ("failed" if rows[-1]["type"] == "error" else payload_of(rows[-1]["data"]).get("status")):
        tally.anomaly("status_mismatch", f"{job_id}: status {job['status']}, last row {rows[-1]['data']}")
    attempts_seen: list[int] = []
    for row in rows:
        if attempts_seen and row["attempt"] < attempts_seen[-1]:
            tally.anomaly("attempt_order", f"{job_id}: attempt {row['attempt']} after {attempts_seen[-1]}")
        if not attempts_seen or row["attempt"] != attempts_seen[-1]:
            opens = row["type"] == "retry" and payload_of(row["data"]).get("attempt") == row["attempt"]
            if attempts_seen and not opens:
                tally.anomaly("retry_missing", f"{job_id}: attempt {row['attempt']} opens with {row['data'][:80]}")
            attempts_seen.append(row["attempt"])
    if plan is not None:
        check_outcome(job, plan, tally)
        if received is None or [frame_ for _, frame_ in received.frames] != [frame(row) for row in rows]:
            got = [seq for seq, _ in received.frames] if received else []
            tally.anomaly("stream_differs", f"{job_id}: received ids {got[-12:]} of {len(rows)} rows")


def check_outcome(job: dict[str, Any], plan: JobPlan, tally: Tally) -> None:
    """What each kind of job must end as; a run that used up its attempts on lost workers may fail."""
    status, error = job["status"], job["error"] or ""
    gave_up = status == "failed" and error.startswith("gave up after")
    expected = {
        "permanent": status == "failed" and plan.offline.get("fail", "") in error,
        "cancel": status in ("cancelled", "completed") or gave_up,
    }.get(plan.kind, status == "completed" or gave_up)
    if not expected:
        tally.anomaly("outcome", f"{job['id']} ({plan.kind}): {status} {error[:120]}")


def report(options: SoakOptions, tally: Tally, jobs: int, elapsed: float, log_dir: Path) -> str:
    lines = [f"runstream soak: seed {options.seed}, logs in {log_dir}"]
    lines.append("faults (injected / anomalies after it):")
    for kind in FAULTS:
        lines.append(f"  {kind:18} {tally.faults[kind]:4} / {tally.anomalies_after[kind]}")
    if tally.anomalies_after["none"]:
        lines.append(f"  {'(no fault yet)':18}    - / {tally.anomalies_after['none']}")
    lines.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items())))
    lines.append(f"runs started over: {tally.retried_jobs} jobs, {tally.retry_events} retry events")
    lines.append("responses: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.responses.items())))
    if tally.anomalies:
        lines.append("anomalies: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.anomalies.items())))
        lines.extend(f"  {detail}" for detail in tally.details)
    total_faults = sum(tally.faults.values())
    lines.append(
        f"soak seed={options.seed} jobs={jobs} faults={total_faults} anomalies={sum(tally.anomalies.values())}"
        f" elapsed={elapsed:.0f}s {'PASS' if not tally.anomalies else 'FAIL'}"
    )
    return "\n".join(lines)


async def soak(options: SoakOptions) -> int:
    started = time.monotonic()
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="runstream-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    job_plans = plan_jobs(rng, options.jobs, options.duration_s * 0.8)
    fault_plans = plan_faults(rng, options.duration_s, options.apis, options.workers)
    tally = Tally()
    cluster = Cluster(options, log_dir, tally)
    try:
        await asyncio.to_thread(cluster.start)
        runner = Soak(options, cluster, tally)
        await runner.run(job_plans, fault_plans)
        jobs = await audit(runner, tally)
    finally:
        await asyncio.to_thread(cluster.close)
    print(report(options, tally, jobs, time.monotonic() - started, log_dir), flush=True)
    return 1 if tally.anomalies else 0


def main(options: SoakOptions) -> int:
    return asyncio.run(soak(options))
