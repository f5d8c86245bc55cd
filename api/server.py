"""``runstream api``: uvicorn's server, with a shutdown that never ends a stream
cleanly before its terminal event.

On SIGTERM the server stops accepting connections, then lets open SSE streams run
to their jobs' terminal events for up to ``RUNSTREAM_SHUTDOWN_GRACE_S``. Streams
still open then are cut *uncleanly* (the chunked body is never terminated), so no
client mistakes the cut for the end of the run: DeltaKit's ``fetch`` reader sees
an error, ``EventSource`` reconnects with Last-Event-ID, curl reports a transfer
closed with data outstanding. Then uvicorn's own graceful shutdown follows for
ordinary requests in flight.
"""

from __future__ import annotations

import gc
import socket

import uvicorn
from starlette.applications import Starlette

from runstream.api.protocol import HeadLimits, bounded_head_protocol

# What is left of the graceful timeout for ordinary requests in flight.
GRACEFUL_SHUTDOWN_S = 5
# Allocations between young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


class ApiServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, shutdown_grace_s: float):
        super().__init__(config)
        self.app = app
        self.shutdown_grace_s = shutdown_grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hub = getattr(self.app.state, "hub", None)
        if hub is not None:
            # No new connections from here on (uvicorn closes them again: a no-op).
            for server in self.servers:
                server.close()
            await hub.drain(self.shutdown_grace_s)
        await super().shutdown(sockets)


def tune_garbage_collector() -> None:
    """Every event allocates a few short-lived objects per open stream. With the
    default thresholds, thousands of streams set the collector off hundreds of
    times a second, and each pass promotes what those streams hold, so full
    passes over every stream follow: about a tenth of the process's CPU in the
    fan-out bench (bench/README.md). Collect young objects 70x less often, and
    leave what startup made (modules, the app) out of every pass."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def serve(
    app: Starlette,
    *,
    host: str,
    port: int,
    log_level: str,
    trust_proxy_headers: bool,
    shutdown_grace_s: float,
    head_limits: HeadLimits,
) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # httptools with a bound on every request head (uvicorn sets none).
        http=bounded_head_protocol(head_limits),
        # uvicorn would take X-Forwarded-Proto/-For from any loopback peer; here
        # proxy headers count only when the operator says a proxy sets them, and
        # then from whoever reaches the port (the proxy is the only way in).
        proxy_headers=trust_proxy_headers,
        forwarded_allow_ips="*" if trust_proxy_headers else None,
        # None: uvicorn keeps the logging set up by the caller (JSON lines) instead of its own.
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = ApiServer(config, app, shutdown_grace_s)
    tune_garbage_collector()
    server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the server could not start (port taken, ...)
