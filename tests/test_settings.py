"""Malformed settings stop `runstream api` and `runstream worker` before anything
starts: one line naming the variable (never its value), and a non-zero exit."""

from __future__ import annotations

import subprocess

import pytest

from runstream.settings import child_environment
from tests.support.processes import RUNSTREAM

BAD_SETTINGS = [
    # A colon for "=": once read as "no keys", which served open.
    ("RUNSTREAM_API_KEYS", "acme:sekrit-key", "RUNSTREAM_API_KEYS: entry 1 is not tenant=key"),
    ("RUNSTREAM_API_KEYS", "acme=k1,=k2", "RUNSTREAM_API_KEYS: entry 2 is not tenant=key"),
    ("RUNSTREAM_LOG_FORMAT", "jsonn", "RUNSTREAM_LOG_FORMAT: Input should be 'json' or 'text'"),
    ("RUNSTREAM_LOG_LEVEL", "loud", "RUNSTREAM_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
    ("RUNSTREAM_WORKER_FLUSH_LANES", "-3", "RUNSTREAM_WORKER_FLUSH_LANES: Input should be greater than 0"),
    ("RUNSTREAM_MAX_ATTEMPTS", "0", "RUNSTREAM_MAX_ATTEMPTS: Input should be greater than 0"),
]


@pytest.mark.parametrize("command", ["api", "worker"])
@pytest.mark.parametrize(("variable", "value", "message"), BAD_SETTINGS)
def test_a_malformed_setting_stops_the_process_with_one_line(command: str, variable: str, value: str, message: str) -> None:
    # A database that does not exist: the process must stop before it tries it.
    env = child_environment(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", **{variable: value})
    done = subprocess.run([RUNSTREAM, command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"runstream: invalid settings: {message}\n"
    assert done.stdout == ""
    assert "sekrit" not in done.stderr
