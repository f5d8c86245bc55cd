"""``runstream api``: uvicorn's server, with a shutdown that ends SSE streams first.

On SIGTERM uvicorn stops accepting connections, then waits up to
``timeout_graceful_shutdown`` for the open ones to finish. An SSE stream of a
running job would not finish on its own, so every shutdown would stall for the
whole timeout and then cut the streams. Instead the hub ends every stream at
once, cleanly (the chunked body is terminated; no terminal event): clients
reconnect with Last-Event-ID, to another process, and resume exactly.
"""

from __future__ import annotations

import gc
import socket

import uvicorn
from starlette.applications import Starlette

# What is left of the graceful timeout for ordinary requests in flight.
GRACEFUL_SHUTDOWN_S = 5
# Allocations between young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


class ApiServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette):
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Set before uvicorn closes the listening sockets, which it does before it
        # first yields: no stream can start on this process after this point.
        hub = getattr(self.app.state, "hub", None)
        if hub is not None:
            hub.end_streams()
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


def serve(app: Starlette, *, host: str, port: int, log_level: str) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # None: uvicorn keeps the logging set up by the caller (JSON lines) instead of its own.
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = ApiServer(config, app)
    tune_garbage_collector()
    server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the server could not start (port taken, ...)
