"""A host application: its own FastAPI routes and lifespan, with Runstream
mounted under /agents, composed the way the README's "Mount in your app" says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import runstream

agents = runstream.create_app()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Starlette runs no lifespan of a mounted app: the host enters Runstream's.
    async with runstream.lifespan(agents):
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"from": "host"}


app.mount("/agents", agents)
