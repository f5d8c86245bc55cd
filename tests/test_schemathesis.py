"""Schemathesis against a real API: every check, every phase, stateful links.

The run reads /api/openapi.json from a real API process with keys for two
tenants and a worker behind it, sends what the document allows (and what it
forbids) with valid keys, and checks every answer against the document: no 5xx,
statuses, content types, headers and bodies as documented, schema-valid requests
accepted and schema-invalid ones refused, auth enforced, the links from a created
job followed, and no tenant reading what the other created. It must report zero
failures; the numbers of operations and test cases are printed.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ApiServer, ServiceProcess, start_api

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CONFIG = Path(__file__).parent / "support" / "schemathesis.toml"
KEYS = {"st-alpha": "st-alpha-" + uuid.uuid4().hex, "st-beta": "st-beta-" + uuid.uuid4().hex}
WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
# Test cases per operation and phase: enough to reach every documented status,
# few enough that the whole run stays within about a minute on a loaded machine.
MAX_EXAMPLES = 15
SEED = 21
# Documented, but not run: the tenant's transitions stream never ends by itself, so
# every request to it would only end at the request timeout, and its answer could
# not be read whole to check. tests/test_transitions.py reads it frame by frame.
UNENDING_PATH = "/api/jobs/transitions"


@pytest.fixture(scope="module")
def schemathesis_api(service_env: dict[str, str], worker: ServiceProcess, log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **service_env,  # the worker's queue: jobs finish, so their event streams end
        "RUNSTREAM_API_KEYS": ",".join(f"{tenant}={key}" for tenant, key in KEYS.items()),
        # The run creates many jobs: keep the creation limits out of the way.
        "RUNSTREAM_JOB_RATE_LIMIT": "0",
        "RUNSTREAM_MAX_ACTIVE_JOBS": "0",
        # Any webhook URL of the documented form is taken: whether its host resolves
        # to a private address is up to DNS, which no schema can state. The worker,
        # which has no signing secrets, records each delivery refused and sends nothing.
        "RUNSTREAM_WEBHOOK_SECRETS": ",".join(f"{tenant}={WEBHOOK_SECRET}" for tenant in KEYS),
        "RUNSTREAM_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    server = start_api(env, log_dir, name="schemathesis-api")
    yield server
    server.stop()


def identities(path: Path) -> Path:
    """The two tenants' keys as a Web Fuzzing Commons auth file: schemathesis acts
    as each, and replays one's reads as the other (object_level_authorization)."""
    users = [
        {"name": tenant, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
        for tenant, key in KEYS.items()
    ]
    path.write_text(json.dumps({"auth": users}))
    return path


def test_schemathesis_finds_no_failure(schemathesis_api: ApiServer, tmp_path: Path) -> None:
    # Read from a file, the document as served covers every operation: read from
    # its URL, schemathesis leaves out the operation that serves it.
    document = httpx.get(f"{schemathesis_api.url}/api/openapi.json").json()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    report = tmp_path / "report.json"
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        str(tmp_path / "openapi.json"),
        "--url",
        schemathesis_api.url,
        "--exclude-path",
        UNENDING_PATH,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--auth-wfc",
        str(identities(tmp_path / "auth.json")),
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "NO_COLOR": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    summary = json.loads(report.read_text())
    operations, cases = summary["operations"], summary["test_cases"]
    print(
        f"\nschemathesis: {operations['tested']} operations, {cases['generated']} test cases "
        f"({cases['with_failures']} with failures, {cases['errored']} errored) in {summary['running_time']:.1f}s"
    )
    assert list(document["paths"][UNENDING_PATH]) == ["get"]
    assert operations["tested"] == sum(len(item) for item in document["paths"].values()) - 1
    assert (cases["with_failures"], cases["errored"], summary["failures"], summary["errors"]) == (0, 0, [], [])
    assert {name: phase["status"] for name, phase in summary["phases"].items()} == {
        "examples": "skip",  # the document has no examples
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
