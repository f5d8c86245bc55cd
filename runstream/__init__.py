"""Runstream: durable, resumable AI-agent runs.

What a host application uses, importable from here::

    app = runstream.create_app()          # the ASGI app (settings from the environment)
    async with runstream.lifespan(app):   # its pools and LISTEN connection, when mounted
        ...
    runstream.Principal(tenant, user_id)  # what an authenticator (RUNSTREAM_AUTH) answers
    raise runstream.Unauthorized(code, message)   # an authenticator's 401

They load on first use, so ``import runstream`` (a worker, ``runstream --version``)
does not import the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "create_app": "runstream.api.app",
    "lifespan": "runstream.api.app",
    "Principal": "runstream.api.tenancy",
    "Unauthorized": "runstream.api.auth",
}

__all__ = ["Principal", "Unauthorized", "__version__", "create_app", "lifespan"]

if TYPE_CHECKING:
    from runstream.api.app import create_app, lifespan
    from runstream.api.auth import Unauthorized
    from runstream.api.tenancy import Principal


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'runstream' has no attribute {name!r}")
