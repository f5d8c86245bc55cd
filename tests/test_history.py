"""Conversation history rebuilt from the log, and the JSON read of the log.

The two-turn and tool-call tests run the real worker and offline model; the
others play the worker through the db layer, so every event is exact.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from runstream.api.history import agno_history, clear
from runstream.db import events, jobs
from runstream.db.sessions import turns_before
from tests.support.sse import deltakit_events, read_stream

pytestmark = pytest.mark.asyncio(loop_scope="session")

TENANT = "default"


def new_session() -> str:
    return f"session-{uuid.uuid4().hex[:12]}"


async def run_to_end(client: httpx.AsyncClient, message: str, session_id: str) -> list[dict[str, Any]]:
    response = await client.post("/api/jobs", json={"message": message, "session_id": session_id})
    assert response.status_code == 202, response.text
    body = await read_stream(client, f"/api/jobs/{response.json()['job_id']}/events")
    return deltakit_events(body)


def answer_text(received: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in received if e["type"] == "text_delta")


async def test_the_second_turn_answers_from_the_first(client: httpx.AsyncClient) -> None:
    session = new_session()
    first = await run_to_end(client, "My favourite colour is teal", session)
    assert first[-1] == {"type": "done", "status": "completed"}
    second = await run_to_end(client, "What did I say?", session)
    assert answer_text(second) == 'You said: "My favourite colour is teal"'
    # Another session does not share the history.
    alone = await run_to_end(client, "What did I say?", new_session())
    assert answer_text(alone) == "You have not said anything before this message."


def without_times(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "created_at"} for m in messages]


def from_agno_agents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DeltaKit's ``fromAgnoAgents`` (packages/core agno converter), line for line:
    tool results attach to the newest unanswered call of the same tool name."""
    result: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for index, msg in enumerate(messages):
        msg_id = msg.get("id") or f"agno_{index}"
        if msg["role"] == "user":
            if current:
                result.append(current)
                current = None
            if msg.get("content"):
                result.append({"id": msg_id, "role": "user", "parts": [{"type": "text", "text": msg["content"]}]})
        elif msg["role"] == "assistant":
            parts: list[dict[str, Any]] = []
            if msg.get("reasoning_content"):
                parts.append({"type": "reasoning", "text": msg["reasoning_content"]})
            for call in msg.get("tool_calls") or []:
                parts.append(
                    {
                        "type": "tool_call",
                        "tool_name": call["function"]["name"],
                        "argument": call["function"]["arguments"],
                        "callId": call["id"],
                    }
                )
            if msg.get("content"):
                parts.append({"type": "text", "text": msg["content"]})
            if parts:
                if current:
                    current["parts"].extend(parts)
                else:
                    current = {"id": msg_id, "role": "assistant", "parts": parts}
        elif msg["role"] == "tool" and current:
            for part in reversed(current["parts"]):
                if part["type"] == "tool_call" and part["tool_name"] == msg["tool_name"] and "result" not in part:
                    part["result"] = msg["content"]
                    break
    if current:
        result.append(current)
    return result


async def test_messages_in_agno_and_deltakit_formats_pair_tool_calls_with_results(
    client: httpx.AsyncClient,
) -> None:
    session = new_session()
    await run_to_end(client, "what is 2+3*4?", session)
    response = await client.get(f"/api/sessions/{session}/messages")
    assert response.status_code == 200
    body = response.json()
    [run] = body["runs"]
    job = run["job_id"]
    assert run == {
        "job_id": job,
        "status": "completed",
        "error": None,
        "in_progress": False,
        "last_event_id": run["last_event_id"],
        "interrupted": False,
    }
    assert body["has_more"] is False
    call_id = "call_1"
    arguments = json.dumps({"expression": "2+3*4"})
    assert without_times(body["messages"]) == [
        {"id": f"{job}-user", "role": "user", "content": "what is 2+3*4?", "job_id": job},
        {
            "id": f"{job}-assistant-1",
            "role": "assistant",
            "job_id": job,
            "reasoning_content": "The user wants 2+3*4 computed; I will call the calculate tool.",
            "content": "Let me calculate 2+3*4.",
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "calculate", "arguments": arguments}}
            ],
        },
        {
            "id": f"{job}-tool-{call_id}",
            "role": "tool",
            "content": "14",
            "tool_call_id": call_id,
            "tool_name": "calculate",
            "tool_args": {"expression": "2+3*4"},
            "job_id": job,
        },
        {
            "id": f"{job}-assistant-2",
            "role": "assistant",
            "job_id": job,
            "reasoning_content": "The calculate tool returned 14; I can answer now.",
            "content": "The result of 2+3*4 is 14.",
        },
    ]
    # What DeltaKit's converter makes of it: the call carries its result.
    converted = from_agno_agents(body["messages"])
    [call] = [p for p in converted[1]["parts"] if p["type"] == "tool_call"]
    assert call == {
        "type": "tool_call",
        "tool_name": "calculate",
        "argument": arguments,
        "callId": call_id,
        "result": "14",
    }

    response = await client.get(f"/api/sessions/{session}/messages", params={"format": "deltakit"})
    assert response.status_code == 200
    assert response.json()["messages"] == [
        {"id": f"{job}-user", "role": "user", "job_id": job, "parts": [{"type": "text", "text": "what is 2+3*4?"}]},
        {
            "id": f"{job}-assistant",
            "role": "assistant",
            "job_id": job,
            "parts": [
                {"type": "reasoning", "text": "The user wants 2+3*4 computed; I will call the calculate tool."},
                {"type": "text", "text": "Let me calculate 2+3*4."},
                {
                    "type": "tool_call",
                    "tool_name": "calculate",
                    "argument": arguments,
                    "callId": call_id,
                    "result": "14",
                },
                {"type": "reasoning", "text": "The calculate tool returned 14; I can answer now."},
                {"type": "text", "text": "The result of 2+3*4 is 14."},
            ],
        },
    ]
    bad = await client.get(f"/api/sessions/{session}/messages", params={"format": "xml"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_format"


async def claimed_job(pool: AsyncConnectionPool, session_id: str, message: str) -> uuid.UUID:
    job = await jobs.create_job(pool, tenant=TENANT, message=message, model="offline", session_id=session_id)
    claim = await jobs.claim_job(pool, job.id, worker="test", stale_after_s=3600)
    assert claim is not None
    return job.id


async def append(pool: AsyncConnectionPool, job_id: uuid.UUID, payloads: list[dict], **guards: Any) -> None:
    assert (await events.append_events(pool, job_id, payloads, **guards)).applied


async def finished_turn(pool: AsyncConnectionPool, session_id: str, message: str, answer: str) -> uuid.UUID:
    job_id = await claimed_job(pool, session_id, message)
    await append(pool, job_id, [{"type": "text_delta", "delta": answer}])
    await append(pool, job_id, [{"type": "done", "status": "completed"}], new_status="completed")
    return job_id


async def test_a_run_in_progress_is_marked_with_its_resume_point(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    done_id = await finished_turn(pool, session, "first", "one")
    job_id = await claimed_job(pool, session, "second")
    # Attempt 1 streams a partial answer, fails transiently and is retried:
    # attempt 2's retry event discards the partial answer.
    await append(pool, job_id, [{"type": "text_delta", "delta": "discarded"}])
    assert await jobs.release_job(pool, job_id, attempt=1, error="model timeout")
    assert await jobs.claim_job(pool, job_id, worker="test", stale_after_s=3600) is not None
    await append(
        pool,
        job_id,
        [
            {"type": "retry", "attempt": 2, "reason": "model timeout"},
            {"type": "reasoning", "text": "Think"},
            {"type": "reasoning", "text": "ing"},
            {"type": "text_delta", "delta": "Hel"},
            {"type": "text_delta", "delta": "lo"},
        ],
    )

    body = (await http.get(f"/api/sessions/{session}/messages", params={"format": "deltakit"})).json()
    assert body["runs"] == [
        {
            "job_id": str(done_id),
            "status": "completed",
            "error": None,
            "in_progress": False,
            "last_event_id": 1,
            "interrupted": False,
        },
        {
            "job_id": str(job_id),
            "status": "running",
            "error": None,
            "in_progress": True,
            "last_event_id": 5,
            "interrupted": False,
        },
    ]
    assert body["messages"][2:] == [
        {"id": f"{job_id}-user", "role": "user", "job_id": str(job_id), "parts": [{"type": "text", "text": "second"}]},
        {
            "id": f"{job_id}-assistant",
            "role": "assistant",
            "job_id": str(job_id),
            "parts": [{"type": "reasoning", "text": "Thinking"}, {"type": "text", "text": "Hello"}],
        },
    ]
    # Resuming after last_event_id yields exactly what the history does not hold yet.
    await append(
        pool,
        job_id,
        [{"type": "text_delta", "delta": "!"}, {"type": "done", "status": "completed"}],
        new_status="completed",
    )
    rest = await read_stream(http, f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": "5"})
    assert deltakit_events(rest) == [{"type": "text_delta", "delta": "!"}, {"type": "done", "status": "completed"}]

    # The DeltaKit alias's history (fromAgnoAgents input): a run in progress shows
    # its question, marked, and none of its partial answer (the resumed stream's
    # replay rebuilds that, under the question).
    job2 = await claimed_job(pool, session, "third, still running")
    await append(pool, job2, [{"type": "text_delta", "delta": "partial"}])
    alias = await agno_history(pool, TENANT, session)
    assert [(m["role"], m.get("content")) for m in alias] == [
        ("user", "first"),
        ("assistant", "one"),
        ("user", "second"),
        ("assistant", "Hello!"),
        ("user", "third, still running"),
    ]
    assert alias[-1]["in_progress"] is True and alias[-1]["job_id"] == str(job2)
    assert not any(m.get("in_progress") for m in alias[:-1])
    assert "partial" not in json.dumps(alias)


async def test_clear_empties_the_conversation_and_keeps_the_log(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    session = new_session()
    old = await finished_turn(pool, session, "remember 7", "ok")
    response = await http.post(f"/api/sessions/{session}/clear")
    assert response.json() == {"status": "ok", "cleared_runs": 1}
    assert (await http.get(f"/api/sessions/{session}/messages")).json()["messages"] == []
    # The audit log is still there, by job id.
    page = (await http.get(f"/api/jobs/{old}/events", headers={"Accept": "application/json"})).json()
    assert [e["data"] for e in page["events"]] == [
        {"type": "text_delta", "delta": "ok"},
        {"type": "done", "status": "completed"},
    ]
    # A new turn starts a fresh conversation: the agent's context is empty.
    new = await finished_turn(pool, session, "what did i say", "nothing")
    new_job = await jobs.get_job(pool, new, TENANT)
    assert await turns_before(pool, new_job, 20) == []
    assert [m["id"] for m in (await http.get(f"/api/sessions/{session}/messages")).json()["messages"]] == [
        f"{new}-user",
        f"{new}-assistant-1",
    ]
    assert await clear(pool, TENANT, session) == 1


async def test_json_pages_of_a_2500_event_log(http: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    job_id = await claimed_job(pool, new_session(), "long")
    sent = [{"type": "text_delta", "delta": f"w{i} "} for i in range(2499)]
    for start in range(0, 2499, 1000):
        await append(pool, job_id, sent[start : start + 1000])
    url = f"/api/jobs/{job_id}/events"
    accept = {"Accept": "application/json"}

    # Still running: the last page is up to date, but not done.
    tail = (await http.get(url, params={"after": 2400}, headers=accept)).json()
    assert (len(tail["events"]), tail["next"], tail["up_to_date"], tail["done"]) == (98, 2498, True, False)

    await append(pool, job_id, [{"type": "done", "status": "completed"}], new_status="completed")
    pages, after = [], -1
    while True:
        response = await http.get(url, params={"after": after, "limit": 1000}, headers=accept)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        page = response.json()
        pages.append(page)
        after = page["next"]
        if page["done"]:
            break
    assert [(len(p["events"]), p["next"], p["up_to_date"], p["done"]) for p in pages] == [
        (1000, 999, False, False),
        (1000, 1999, False, False),
        (500, 2499, True, True),
    ]
    received = [e for p in pages for e in p["events"]]
    assert [e["id"] for e in received] == list(range(2500))
    assert [e["data"] for e in received] == [*sent, {"type": "done", "status": "completed"}]
    assert pages[-1]["status"] == "completed"

    # Past the end of a finished log: an empty page, done.
    end = (await http.get(url, params={"after": 2499}, headers=accept)).json()
    assert (end["events"], end["next"], end["up_to_date"], end["done"]) == ([], 2499, True, True)
    # Errors, as JSON.
    for query, code in (
        ({"after": 2500}, "invalid_after"),
        ({"after": "x"}, "invalid_after"),
        ({"limit": 0}, "invalid_limit"),
        ({"limit": 1001}, "invalid_limit"),
    ):
        response = await http.get(url, params=query, headers=accept)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    missing = await http.get(f"/api/jobs/{uuid.uuid4()}/events", headers=accept)
    assert missing.status_code == 404
