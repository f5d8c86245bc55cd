"""The one logging setup of every Runstream process (API, worker, CLI).

JSON lines by default: ``{"time", "level", "logger", "message", ...}`` plus any
``extra`` a call passes. Job transitions log ``extra={"job_id": ..., "status": ...}``
(``job_fields``), so a log pipeline can follow one job across the API and the
workers by its id.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from runstream.core.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_fields(job_id: uuid.UUID | str, status: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a job-transition log line."""
    return {"job_id": str(job_id), "status": status, **more}


def configure_logging(settings: Settings) -> None:
    """Route every logger (uvicorn's and Celery's too) to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_default=str,
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Libraries that configure their own handlers would print each line twice.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
