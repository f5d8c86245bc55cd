"""Fuzzing every route of the OpenAPI document with hypothesis-generated requests.

The routes, their methods and their documented parameters come from the
document the API serves at /api/openapi.json (itself built from the route
table), so a route someone adds is fuzzed without anything here changing.
Values are drawn to hurt: NUL bytes, lone surrogates, huge and odd numbers,
long strings, malformed JSON and random bytes, odd Last-Event-IDs, forged and
foreign tokens, wrong and foreign keys, against a real API process with keys
configured. Every answer must be below 500, carry no traceback or SQL, be a JSON
error when it is an error, and never give one tenant another's job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from tests.support.processes import ApiServer, start_api

EXAMPLES = 2200
KEYS = {"alpha": "fz-alpha-" + uuid.uuid4().hex, "beta": "fz-beta-" + uuid.uuid4().hex}
LEAKS = ("Traceback", 'File "', "psycopg", "asyncpg", "sqlalchemy", "SELECT ", "INSERT INTO", "UPDATE jobs")
SPECIAL = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "%00",
    "-1",
    "0",
    "-0",
    "1e3",
    "9" * 40,
    "-9" * 20,
    "NaN",
    "Infinity",
    "null",
    "{}",
    "[]",
    "%",
    "%ZZ",
    "../../etc/passwd",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "\u202e",
    "\ufeff",
    "ｆｕｌｌ",
    "\U0001f600",
    "a" * 5000,
    str(uuid.uuid4()),
    "2024-01-01T00:00:00Z",
]

text = st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL))
# Strings for JSON bodies may hold lone surrogates too: json.dumps escapes them as \udXXX.
json_text = st.one_of(text, st.text(st.characters(categories=["Cs", "Cc", "Lo"]), max_size=10))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12,
)
# Header values the HTTP client can send: visible latin-1, no surrounding blanks.
visible_latin1 = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=[chr(0x7F)])
header_text = st.one_of(
    st.text(visible_latin1, min_size=1, max_size=60),
    st.sampled_from(["-1", "0", "9" * 40, "1e3", "ｆ".encode().decode("latin-1")]),
)


@dataclass
class World:
    url: str
    document: dict[str, Any]
    alpha_jobs: list[str]
    beta_jobs: list[str]
    tokens: dict[str, str]  # job id -> its stream token
    session: str


@pytest.fixture(scope="module")
def fuzz_api(service_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {
        **service_env,
        "RUNSTREAM_QUEUE": service_env["RUNSTREAM_QUEUE"] + "-fuzz-idle",  # no worker: jobs stay pending
        "RUNSTREAM_API_KEYS": ",".join(f"{t}={k}" for t, k in KEYS.items()),
        "RUNSTREAM_SECRET": "fz-secret-" + uuid.uuid4().hex,
        "RUNSTREAM_MAX_BODY_BYTES": "65536",
        "RUNSTREAM_KEEPALIVE_S": "0.2",
        "RUNSTREAM_CORS_ORIGINS": "https://app.example.com",
        # Fuzzing creates hundreds of jobs: keep the creation limits out of the way.
        "RUNSTREAM_JOB_RATE_LIMIT": "0",
        "RUNSTREAM_MAX_ACTIVE_JOBS": "0",
    }
    server = start_api(env, log_dir, name="fuzz-api")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(fuzz_api: ApiServer) -> World:
    with httpx.Client(base_url=fuzz_api.url, timeout=30) as client:
        document = client.get("/api/openapi.json").json()
        session = "fz-" + uuid.uuid4().hex

        def create(tenant: str) -> dict[str, Any]:
            response = client.post("/api/jobs", json={"message": "seed", "session_id": session}, headers=bearer(tenant))
            assert response.status_code == 202
            return response.json()

        alpha = [create("alpha") for _ in range(3)]
        beta = [create("beta")]
        # One finished job, so streams that end and replay are fuzzed too.
        client.post(alpha[0]["cancel_url"])
    return World(
        url=fuzz_api.url,
        document=document,
        alpha_jobs=[j["job_id"] for j in alpha],
        beta_jobs=[j["job_id"] for j in beta],
        tokens={j["job_id"]: j["stream_token"] for j in alpha + beta},
        session=session,
    )


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in sorted(document["paths"].items()) for method, op in item.items()]


def param_value(data: st.DataObject, world: World, name: str, schema: dict[str, Any]) -> str:
    if name == "job_id":
        known = st.sampled_from(world.alpha_jobs + world.beta_jobs)  # weighted: reach the handlers' depths
        return data.draw(st.one_of(known, known, known, st.uuids().map(str), text), label=name)
    if name == "session_id":
        return data.draw(st.one_of(st.just(world.session), text), label=name)
    if schema.get("enum"):
        return data.draw(st.one_of(st.sampled_from(schema["enum"]), text), label=name)
    if schema.get("type") == "integer":
        return data.draw(st.one_of(st.integers().map(str), text), label=name)
    return data.draw(text, label=name)


def credential(
    data: st.DataObject, world: World, job_id: str | None
) -> tuple[str | None, dict[str, str | bytes], str | None]:
    """(who, headers, token): who the request authenticates as, if anyone."""
    # Mostly valid keys, so that requests get past authentication and into the routes.
    who = data.draw(st.sampled_from(["alpha"] * 5 + ["beta"] * 2 + ["none", "wrong", "garbage"]), label="who")
    headers: dict[str, str | bytes] | None = {
        "alpha": bearer("alpha"),
        "beta": bearer("beta"),
        "none": {},
        "wrong": {"Authorization": "Bearer " + KEYS["alpha"][:-1]},
    }.get(who)
    if headers is None:
        headers = {"Authorization": data.draw(header_text, label="authorization").encode("latin-1")}
    token = None
    if data.draw(st.booleans(), label="with token"):
        tokens = list(world.tokens.values())
        token = data.draw(
            st.one_of(
                st.sampled_from(tokens),
                st.sampled_from(tokens).map(lambda t: t[:-3] + "AAA"),
                st.sampled_from(tokens).map(lambda t: "1" + t),
                text,
            ),
            label="token",
        )
        if who == "none" and token == world.tokens.get(job_id or ""):
            who = "alpha" if job_id in world.alpha_jobs else "beta"
    return (who if who in ("alpha", "beta") else None), headers, token


def body(data: st.DataObject) -> bytes | None:
    new_job = st.fixed_dictionaries(
        {"message": json_text},
        optional={"session_id": st.one_of(json_text, st.integers()), "metadata": json_values},
    )
    plain_job = st.fixed_dictionaries(
        {"message": st.text(min_size=1, max_size=200)},
        optional={"session_id": st.text(max_size=20), "metadata": st.dictionaries(st.text(), json_values, max_size=3)},
    )
    return data.draw(
        st.one_of(
            st.none(),
            plain_job.map(lambda v: json.dumps(v).encode()),
            plain_job.map(lambda v: json.dumps(v).encode()),
            new_job.map(lambda v: json.dumps(v).encode()),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=200),
            st.sampled_from([b"{", b'{"message": "\\ud800"}', b'{"message": "x' + b"y" * 70_000 + b'"}']),
        ),
        label="body",
    )


# What the fuzzer sent that holds a LEAKS marker. Hypothesis also draws string
# constants of the project's own modules (db/queries.py is all SQL), so a job's
# message may be a query, and the API rightly gives it back: a marker counts
# only outside such echoes.
ECHOES: set[str] = set()


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)


def remember_echoes(sent: list[str], content: bytes | None) -> None:
    """Remember the ``sent`` parameter values and the strings of a body that hold a marker."""
    if content:
        try:
            sent += strings(json.loads(content))
        except ValueError:
            sent.append(content.decode("utf-8", "replace"))
    ECHOES.update(text for text in sent if any(leak in text for leak in LEAKS))


def unechoed(content: bytes) -> list[str]:
    """The texts of an answer to look for leaks in: its JSON strings with every echo cut out."""
    try:
        texts = list(strings(json.loads(content)))
    except ValueError:
        texts = [content.decode("utf-8", "replace")]
    for echo in sorted(ECHOES, key=len, reverse=True):
        texts = [text.replace(echo, "") for text in texts]
    return texts


def check(response: httpx.Response, content: bytes, who: str | None, job_id: str | None, world: World) -> None:
    shown = content[:20_000].decode("utf-8", "replace")
    assert response.status_code < 500, shown
    for text in unechoed(content):
        for leak in LEAKS:
            assert leak not in text, shown
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json", shown
        error = json.loads(content)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    foreign = (who == "beta" and job_id in world.alpha_jobs) or (who == "alpha" and job_id in world.beta_jobs)
    if foreign:
        assert response.status_code >= 400, shown


SENT: list[int] = []


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.url, timeout=30) as http:
        yield http


def test_the_openapi_document_is_valid_and_lists_every_route(world: World, fuzz_api: ApiServer) -> None:
    validate(world.document)
    paths = world.document["paths"]
    for path, methods in {
        "/api/jobs": {"get", "post"},
        "/api/jobs/{job_id}": {"get"},
        "/api/jobs/{job_id}/cancel": {"post"},
        "/api/jobs/{job_id}/events": {"get"},
        "/api/openapi.json": {"get"},
        "/healthz": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    assert paths["/api/jobs/{job_id}/events"]["get"]["security"] == [{"apiKey": []}, {"streamToken": []}]
    assert paths["/healthz"]["get"]["security"] == []


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # Fresh examples each run (the point of fuzzing), and a failure prints the
    # @reproduce_failure line that replays its exact draws.
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_fuzz_every_route(data: st.DataObject, world: World, client: httpx.Client) -> None:
    path, method, operation = data.draw(st.sampled_from(operations(world.document)), label="operation")
    values: dict[str, str] = {}
    query: list[tuple[str, str]] = []
    headers: dict[str, str | bytes] = {}
    for param in operation.get("parameters", []):
        where, name = param["in"], param["name"]
        if where == "path":
            values[name] = param_value(data, world, name, param["schema"])
        elif name != "token" and data.draw(st.booleans(), label=f"with {name}"):
            if where == "query":
                query.append((name, param_value(data, world, name, param["schema"])))
            else:
                headers[name] = data.draw(header_text, label=name).encode("latin-1")
    job_id = values.get("job_id")
    who, auth_headers, token = credential(data, world, job_id)
    headers.update(auth_headers)
    if token is not None:
        query.append(("token", token))
    query += data.draw(st.lists(st.tuples(text, text), max_size=2), label="extra query")
    accept = data.draw(st.sampled_from([None, "application/json", "text/event-stream", "*/*"]), label="accept")
    if accept:
        headers["Accept"] = accept
    url = path
    for name, value in values.items():
        url = url.replace("{" + name + "}", quote(value, safe=""))
    content = body(data) if method in ("post", "put", "patch") else None

    request = client.build_request(method.upper(), url, params=query, headers=headers, content=content)
    sent = [*values.values(), *(text for pair in query for text in pair)]
    sent += [value.decode("latin-1") if isinstance(value, bytes) else value for value in headers.values()]
    remember_echoes(sent, content)
    response = client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            received = b""  # a live stream: its status and headers are the answer; hang up
        else:
            received = response.read()
    finally:
        response.close()
    SENT.append(response.status_code)
    check(response, received, who, job_id, world)


def test_enough_requests_were_sent() -> None:
    # Runs after the fuzz test (file order): the CI promise is at least 2,000 requests.
    assert len(SENT) >= 2000, len(SENT)
    assert any(status < 300 for status in SENT) and any(400 <= status < 500 for status in SENT)
