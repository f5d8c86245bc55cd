"""The DeltaKit recipe's URLs, driven the way its background-sse transport drives them.

DeltaKit's transport POSTs ``{"message"}`` to ``startApi``, reads ``job_id`` (or
``runId``) from the answer, fetches ``eventsApi(id)`` and parses the body by
splitting on a blank line and JSON-parsing each ``data:`` line, and on ``stop()``
POSTs ``cancelApi(id)`` with no custom headers. The recipe's full example also
GETs ``API_URL`` for the history (handed to ``fromAgnoAgents``) and POSTs
``API_URL + "clear"``.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.support.sse import deltakit_events, read_stream
from tests.support.waiting import eventually

API_URL = "/api/chat-agno-background-task/"


async def start(client: httpx.AsyncClient, body: dict) -> str:
    response = await client.post(f"{API_URL}jobs", json=body)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] == "pending"
    return started["job_id"]


async def run_to_end(client: httpx.AsyncClient, message: str) -> list[dict]:
    job_id = await start(client, {"message": message})
    return deltakit_events(await read_stream(client, f"{API_URL}jobs/{job_id}/events"))


def answer_text(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "text_delta")


async def test_a_run_through_the_recipe_urls(client: httpx.AsyncClient) -> None:
    job_id = await start(client, {"message": "What is 6*7?"})
    events = deltakit_events(await read_stream(client, f"{API_URL}jobs/{job_id}/events"))

    assert [e["type"] for e in events if e["type"] != "text_delta"] == [
        "reasoning",
        "tool_call",
        "tool_result",
        "reasoning",
        "done",
    ]
    call = next(e for e in events if e["type"] == "tool_call")
    result = next(e for e in events if e["type"] == "tool_result")
    assert (call["tool_name"], call["argument"]) == ("calculate", '{"expression": "6*7"}')
    assert (result["call_id"], result["output"]) == (call["call_id"], "42")
    assert answer_text(events).endswith("The result of 6*7 is 42.")
    assert events[-1] == {"type": "done", "status": "completed"}

    status = (await client.get(f"{API_URL}jobs/{job_id}")).json()
    assert (status["job_id"], status["status"]) == (job_id, "completed")


async def test_stop_posts_cancel_with_no_headers(client: httpx.AsyncClient) -> None:
    # startBody may add fields: here a silent 30 s tool call, so the run is mid-way when stopped.
    job_id = await start(client, {"message": "wait", "metadata": {"offline": {"tool_sleep_s": 30}}})

    async def running() -> bool:
        return (await client.get(f"{API_URL}jobs/{job_id}")).json()["status"] == "running"

    async def stop_once_running() -> httpx.Response:
        await eventually(running, what=f"job {job_id} to be running")
        # What fetch(cancelApi(id), {method: "POST"}) sends: no body, no custom header.
        async with httpx.AsyncClient(base_url=str(client.base_url)) as bare:
            return await bare.post(f"{API_URL}jobs/{job_id}/cancel")

    body, cancelled = await asyncio.gather(
        read_stream(client, f"{API_URL}jobs/{job_id}/events", timeout=20), stop_once_running()
    )
    assert cancelled.status_code == 200
    assert cancelled.json() == {"status": "ok", "job_status": "running"}
    assert deltakit_events(body)[-1] == {"type": "done", "status": "cancelled"}
    assert (await client.get(f"{API_URL}jobs/{job_id}")).json()["status"] == "cancelled"


async def test_history_for_from_agno_agents_and_clear(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{API_URL}clear")).status_code == 200
    assert (await client.get(API_URL)).json() == []

    first = await run_to_end(client, "What is 6*7?")
    second = await run_to_end(client, "Tell me about durable streams")
    history = (await client.get(API_URL)).json()

    # Agno's message format, oldest first: each turn's user message, then the
    # assistant's messages, with the tool call and its result paired by id.
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    user_1, calls, tool, answer_1, user_2, answer_2 = history
    assert user_1["content"] == "What is 6*7?"
    assert user_2["content"] == "Tell me about durable streams"
    [tool_call] = calls["tool_calls"]
    assert tool_call["function"] == {"name": "calculate", "arguments": '{"expression": "6*7"}'}
    assert (tool["tool_call_id"], tool["content"]) == (tool_call["id"], "42")
    assert calls["content"] + answer_1["content"] == answer_text(first)
    assert answer_2["content"] == answer_text(second)

    cleared = await client.post(f"{API_URL}clear")
    assert cleared.json() == {"status": "ok", "cleared_runs": 2}
    assert (await client.get(API_URL)).json() == []
