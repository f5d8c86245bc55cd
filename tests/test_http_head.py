"""Request heads are bounded at the HTTP layer, before the app (api/protocol.py).

Against a real API process with API keys: a request target over the limit is 414,
a head over the limit or with too many header fields is 431, each a JSON error;
heads within the limits are served as before, on one connection after another.
And one unauthenticated client flooding headers (a 64 MB header, a million
header fields) is refused early while other clients are served and the API's
memory stays put.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from runstream.core.settings import Settings
from tests.support.processes import ApiServer, start_api

KEY = "rs-head-" + uuid.uuid4().hex
AUTH = f"Authorization: Bearer {KEY}\r\n".encode()
DEFAULTS = Settings()
MIB = 1024 * 1024
ROUNDS = 3


@pytest.fixture(scope="module")
def head_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **service_env,
        "RUNSTREAM_QUEUE": service_env["RUNSTREAM_QUEUE"] + "-head-idle",
        "RUNSTREAM_API_KEYS": f"head={KEY}",
    }
    server = start_api(env, log_dir, name="head-api")
    yield server
    server.stop()


def exchange(port: int, pieces: Iterable[bytes]) -> tuple[bytes, int]:
    """Send ``pieces`` on one connection until they run out or the server stops
    reading; then the server's answer (all it sent before closing) and how many
    bytes were sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received, sent


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP/1.1 responses in ``raw`` (each with a Content-Length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def refused(raw: bytes, status: int, code: str) -> None:
    [(got, headers, body)] = answers(raw)
    assert got == status, raw[:500]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == code


def request(target: str = "/api/jobs?limit=1", fields: Iterable[bytes] = (), auth: bool = True) -> bytes:
    lines = [f"GET {target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [f"Authorization: Bearer {KEY}".encode()] if auth else []
    return b"\r\n".join([*lines, *fields, b"", b""])


def at_the_limits(connection: bytes, extra_bytes: int = 0, extra_fields: int = 0, extra_url: int = 0) -> bytes:
    """A request whose target, head and header count are each at the default
    limit (plus the extras): Host, Authorization, Connection, a padding field
    and numbered ones."""
    prefix = "/api/jobs?limit=1&session_id="
    target = prefix + "s" * (DEFAULTS.max_url_bytes - len(prefix) + extra_url)
    fields = [b"X-F%d: v" % i for i in range(DEFAULTS.max_headers - 4 + extra_fields)] + [b"Connection: " + connection]
    unpadded = len(request(target, [*fields, b"X-Pad: "]))
    padded = request(target, [*fields, b"X-Pad: " + b"a" * (DEFAULTS.max_header_bytes - unpadded + extra_bytes)])
    assert len(padded) == DEFAULTS.max_header_bytes + extra_bytes
    return padded


def test_heads_at_the_limits_are_served_one_after_another(head_api: ApiServer) -> None:
    # Two on one connection: the second head is counted from its own start.
    raw, _ = exchange(head_api.port, [at_the_limits(b"keep-alive"), at_the_limits(b"close")])
    served = answers(raw)
    assert [status for status, _, _ in served] == [200, 200], raw[:500]
    assert all(json.loads(body) == {"jobs": [], "next_cursor": None} for _, _, body in served)


@pytest.mark.parametrize(
    ("over", "status", "code"),
    [
        ({"extra_bytes": 1}, 431, "headers_too_large"),
        ({"extra_fields": 1}, 431, "too_many_headers"),
        ({"extra_url": 1}, 414, "uri_too_long"),
    ],
    ids=["head-bytes", "header-count", "target-bytes"],
)
def test_one_over_a_limit_is_refused_with_a_json_error(head_api: ApiServer, over: dict, status: int, code: str) -> None:
    raw, _ = exchange(head_api.port, [at_the_limits(b"close", **over)])
    refused(raw, status, code)


def flood(head: bytes, filler: bytes, total: int) -> Iterator[bytes]:
    """``head``, then ``total`` bytes of ``filler``, a mebibyte at a time."""
    yield head
    chunk = filler * (MIB // len(filler))
    for _ in range(total // len(chunk)):
        yield chunk


FLOODS = {
    "one 64 MB header": (request(auth=False)[:-2] + b"X-Flood: ", b"a", 64 * MIB, 431, "headers_too_large"),
    "8 million header fields": (request(auth=False)[:-2], b"X-F: v\r\n", 64 * MIB, 431, "too_many_headers"),
    "a 64 MB request target": (b"GET /api/jobs?q=", b"a", 64 * MIB, 414, "uri_too_long"),
}


def test_a_header_flood_is_refused_while_other_clients_are_served(head_api: ApiServer) -> None:
    api = psutil.Process(head_api.pid)
    with httpx.Client(base_url=head_api.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:

        def timed_get() -> float:
            started = time.perf_counter()
            response = client.get("/api/jobs", params={"limit": 1})
            assert response.status_code == 200, response.text
            return time.perf_counter() - started

        baseline = statistics.median(timed_get() for _ in range(20))
        rss_before = api.memory_info().rss
        flooding = threading.Event()
        flooding.set()
        during: list[float] = []
        rss_peak = rss_before

        def other_client() -> None:
            nonlocal rss_peak
            while flooding.is_set():
                during.append(timed_get())
                rss_peak = max(rss_peak, api.memory_info().rss)

        observer = threading.Thread(target=other_client)
        observer.start()
        try:
            for name, (head, filler, total, status, code) in list(FLOODS.items()) * ROUNDS:
                raw, sent = exchange(head_api.port, flood(head, filler, total))
                refused(raw, status, code)
                # Refused early: the connection closed long before the flood was through.
                assert sent < total / 2, (name, sent)
        finally:
            flooding.clear()
            observer.join()
    rss_growth = rss_peak - rss_before
    print(
        f"\nflood: {len(during)} requests of another client served meanwhile, slowest {max(during):.3f}s "
        f"(median before {baseline:.4f}s); API RSS grew {rss_growth / MIB:.1f} MiB"
    )
    assert during, "no request of the other client completed during the floods"
    # Generous for a loaded machine: unbounded heads cost seconds per request.
    assert max(during) < max(1.0, 50 * baseline), (max(during), baseline)
    assert rss_growth < 16 * MIB, rss_growth / MIB
