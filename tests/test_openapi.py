"""/api/openapi.json says what the server does.

The document is generated from the models the handlers validate and answer with;
these tests pin what used to disagree: the 2xx answers of /healthz, /readyz,
cancel and clear; /metrics open or not as configured, and its content type; the
limits the server enforces (lengths, NUL, blank messages, the metadata shape, the
message limit of this deployment, 414/431 on every route). And, for any body,
the document's NewJob schema and the server's parser give the same verdict.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from runstream.api.app import routes
from runstream.api.errors import ApiError
from runstream.api.openapi import document
from runstream.api.payloads import parse_new_job
from runstream.core.settings import Settings
from tests.support.processes import ApiServer, start_api

KEY = "oa-" + uuid.uuid4().hex
METRICS_TOKEN = "oa-metrics-" + uuid.uuid4().hex
MAX_MESSAGE_CHARS = 5000


@pytest.fixture(scope="module")
def guarded_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **service_env,
        "RUNSTREAM_QUEUE": service_env["RUNSTREAM_QUEUE"] + "-openapi-idle",
        "RUNSTREAM_API_KEYS": f"oa={KEY}",
        "RUNSTREAM_METRICS_TOKEN": METRICS_TOKEN,
        "RUNSTREAM_MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS),
    }
    server = start_api(env, log_dir, name="openapi-api")
    yield server
    server.stop()


def fetch(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/api/openapi.json").json()


def schema_of(doc: dict[str, Any], path: str, method: str, status: int, media_type: str = "application/json") -> dict:
    return doc["paths"][path][method]["responses"][str(status)]["content"][media_type]["schema"]


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    ref = {"$ref": "urn:doc" + schema["$ref"]} if "$ref" in schema else schema
    return Draft202012Validator(ref, registry=registry)


def test_2xx_answers_are_documented_with_the_bodies_sent(guarded_api: ApiServer) -> None:
    doc = fetch(guarded_api.url)
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=guarded_api.url, headers=auth, timeout=30) as client:
        job = client.post("/api/jobs", json={"message": "hi", "session_id": "oa"}).json()
        answers = [
            ("/healthz", "get", client.get("/healthz")),
            ("/readyz", "get", client.get("/readyz")),
            ("/api/jobs/{job_id}/cancel", "post", client.post(f"/api/jobs/{job['job_id']}/cancel")),
            ("/api/sessions/{session_id}/clear", "post", client.post("/api/sessions/oa/clear")),
            ("/api/chat-agno-background-task/clear", "post", client.post("/api/chat-agno-background-task/clear")),
            ("/api/jobs/{job_id}", "get", client.get(f"/api/jobs/{job['job_id']}")),
            ("/api/jobs/{job_id}/webhooks", "get", client.get(f"/api/jobs/{job['job_id']}/webhooks")),
            ("/api/jobs", "get", client.get("/api/jobs", params={"user_id": "", "session_id": "oa"})),
        ]
    for path, method, response in answers:
        assert response.status_code == 200, (path, response.text)
        schema = schema_of(doc, path, method, 200)
        assert schema["$ref"] != "#/components/schemas/Error", path
        validator(doc, schema).validate(response.json())
    # Every field of a job's answer is in the document, and no other.
    assert set(job) == set(doc["components"]["schemas"]["JobWithStream"]["properties"])
    assert {"user_id", "queued", "interrupted", "webhook"} <= set(job)
    # if_busy reject: the 409 and the run it names.
    busy = schema_of(doc, "/api/jobs", "post", 409)["$ref"].rsplit("/", 1)[1]
    detail = doc["components"]["schemas"][busy]["properties"]["error"]["$ref"].rsplit("/", 1)[1]
    assert "active_job" in doc["components"]["schemas"][detail]["required"]
    # Every operation documents a success.
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert any(status.startswith("2") for status in operation["responses"]), (path, method)
            assert "default" not in operation["responses"], (path, method)


def test_metrics_are_documented_as_configured(guarded_api: ApiServer, idle_api: ApiServer) -> None:
    guarded = fetch(guarded_api.url)["paths"]["/metrics"]["get"]
    assert guarded["security"] == [{"metricsToken": []}] and "401" in guarded["responses"]
    assert httpx.get(f"{guarded_api.url}/metrics").status_code == 401
    open_metrics = fetch(idle_api.url)["paths"]["/metrics"]["get"]
    assert open_metrics["security"] == [] and "401" not in open_metrics["responses"]
    scrape = httpx.get(f"{idle_api.url}/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].split(";")[0] in open_metrics["responses"]["200"]["content"]


def test_the_enforced_limits_are_stated(guarded_api: ApiServer) -> None:
    doc = fetch(guarded_api.url)
    new_job = doc["components"]["schemas"]["NewJob"]["properties"]
    # This deployment's message limit, not the default.
    assert new_job["message"]["maxLength"] == MAX_MESSAGE_CHARS
    assert new_job["message"]["minLength"] == 1 and "\\x00" in new_job["message"]["pattern"]
    assert new_job["session_id"]["anyOf"][0] == {"maxLength": 256, "pattern": "^[^\\x00]*$", "type": "string"}
    storable = doc["components"]["schemas"]["StorableJson"]
    assert {"pattern": "^[^\\x00]*$", "type": "string"} in storable["anyOf"]
    list_params = {p["name"]: p["schema"] for p in doc["paths"]["/api/jobs"]["get"]["parameters"]}
    assert (list_params["limit"]["minimum"], list_params["limit"]["maximum"]) == (1, 100)
    assert list_params["cursor"]["maxLength"] == 256
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert {"400", "414", "431"} <= set(operation["responses"]), (path, method)
    post = doc["paths"]["/api/jobs"]["post"]["responses"]
    assert {"202", "400", "413", "422", "429"} <= set(post)


NEW_JOB_SETTINGS = Settings(database_url="postgresql://unused", max_message_chars=40)
NEW_JOB_DOC = document(routes(), NEW_JOB_SETTINGS)
NEW_JOB = validator(NEW_JOB_DOC, {"$ref": "#/components/schemas/NewJob"})
# JSON as it travels: no lone surrogates (not UTF-8), no NaN (not JSON).
text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=50),
    st.sampled_from(["", " ", "\t\n", "\x00", "a\x00", "\u3000", "\x1c", "\ufeff", "x" * 41, " x "]),
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
webhook_urls = st.sampled_from(
    ["https://example.com/hook", "http://[::1]:8080/h", "http://a:65536/", "http://u:p@a/", "ftp://a/", "http://a b/"]
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"message": text},
        optional={
            "session_id": st.one_of(text, st.none()),
            "metadata": values,
            "agent": st.one_of(st.sampled_from([*NEW_JOB_SETTINGS.agent_paths, "nobody"]), text, values),
            "if_busy": st.one_of(st.sampled_from(["enqueue", "reject", "interrupt", "rollback", "queue"]), values),
            "webhook": st.one_of(st.fixed_dictionaries({"url": st.one_of(webhook_urls, text, values)}), values),
        },
    ),
    st.fixed_dictionaries({"message": values}, optional={"session_id": values, "extra": values}),
    values,
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_the_document_and_the_server_agree_on_every_body(body: Any) -> None:
    try:
        parse_new_job(json.dumps(body).encode(), 40, NEW_JOB_SETTINGS.agent_paths)
        accepted = True
    except ApiError as exc:
        assert exc.status == 422, exc.message  # well-formed JSON: never a 400 here
        accepted = False
    assert NEW_JOB.is_valid(body) == accepted, body
