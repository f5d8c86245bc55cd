"""The offline model driven through Agno's own agent loop, in process: the exact
payloads a run produces, the tools really running, and the knobs."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from agno.agent import Agent
from agno.models.message import Message

from runstream.tasks.agent_events import COMPLETED, run_payloads
from runstream.tasks.model_errors import PermanentModelError, TransientModelError, UnknownModelError, is_transient
from runstream.tasks.models import build_model
from runstream.tasks.offline_model import OfflineKnobs, OfflineModel, find_expression, plain_answer
from runstream.tasks.registry import load_registry
from runstream.tasks.run_job import prepare_run
from runstream.tasks.tools import TOOLS, calculate, evaluate


def offline_agent(*, attempt: int = 1, **knobs) -> tuple[Agent, OfflineModel]:
    model = OfflineModel(delay_ms=0, knobs=OfflineKnobs(**knobs), attempt=attempt)
    return Agent(model=model, tools=list(TOOLS), telemetry=False), model


async def payloads_of(agent: Agent, message) -> list[dict]:
    return [p async for p in run_payloads(agent, message)]


# asyncio may wake a sleeper up to one tick of the loop's clock early.
TICK = time.get_clock_info("monotonic").resolution


async def timed_payloads_of(agent: Agent, message) -> list[tuple[float, dict]]:
    """Each payload with the time it arrived by the event loop's clock, the one
    asyncio.sleep paces by. The run is pulled one payload at a time, so a pause
    in the run shows as a gap between two arrivals."""
    loop = asyncio.get_running_loop()
    return [(loop.time(), p) async for p in run_payloads(agent, message)]


def words(text: str) -> list[dict]:
    """The text_delta payloads the offline model streams for ``text``: one per word."""
    parts = text.split(" ")
    return [{"type": "text_delta", "delta": w + " "} for w in parts[:-1]] + [{"type": "text_delta", "delta": parts[-1]}]


async def test_tool_prompt_runs_the_calculator_through_agnos_loop():
    agent, _ = offline_agent()
    assert await payloads_of(agent, "What is 2+3*4?") == [
        {"type": "reasoning", "text": "The user wants 2+3*4 computed; I will call the calculate tool."},
        *words("Let me calculate 2+3*4."),
        {"type": "tool_call", "tool_name": "calculate", "argument": '{"expression": "2+3*4"}', "call_id": "call_1"},
        {"type": "tool_result", "call_id": "call_1", "output": "14"},
        {"type": "reasoning", "text": "The calculate tool returned 14; I can answer now."},
        *words("The result of 2+3*4 is 14."),
        COMPLETED,
    ]


async def test_runs_are_deterministic():
    first = await payloads_of(offline_agent()[0], "What is (7 - 2) ** 2 / 4?")
    second = await payloads_of(offline_agent()[0], "What is (7 - 2) ** 2 / 4?")
    assert first == second
    assert {"type": "tool_result", "call_id": "call_1", "output": "6.25"} in first


async def test_time_prompt_calls_the_clock_and_quotes_it():
    before = datetime.now(UTC).replace(microsecond=0)
    payloads = await payloads_of(offline_agent()[0], "What time is it?")
    assert [p["type"] for p in payloads] == [
        "reasoning",
        *["text_delta"] * 5,
        "tool_call",
        "tool_result",
        "reasoning",
        *["text_delta"] * 6,
        "done",
    ]
    call, result = payloads[6], payloads[7]
    assert call == {"type": "tool_call", "tool_name": "current_utc_time", "argument": "{}", "call_id": "call_1"}
    stamp = datetime.fromisoformat(result["output"])
    assert before <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
    answer = "".join(p["delta"] for p in payloads if p["type"] == "text_delta")
    assert answer == f"Let me check the clock.The current UTC time is {result['output']}."


async def test_plain_prompt_answers_in_the_asked_number_of_words():
    agent, _ = offline_agent(words=12)
    payloads = await payloads_of(agent, "Tell me about durable streams")
    assert payloads[0] == {"type": "reasoning", "text": "No tool is needed for this prompt; I will answer it directly."}
    assert payloads[1:-1] == words(plain_answer("Tell me about durable streams", 12))
    assert len("".join(p["delta"] for p in payloads[1:-1]).split()) == 12
    assert payloads[-1] == COMPLETED


async def test_plain_answer_depends_on_the_prompt():
    assert plain_answer("hello", 30) == plain_answer("hello", 30)
    assert plain_answer("hello", 30) != plain_answer("goodbye", 30)
    assert len(plain_answer("hello", 3).split()) == 3


async def test_fail_knob_is_a_permanent_error():
    agent, model = offline_agent(fail="the model refused")
    assert await payloads_of(agent, "hi") == [{"type": "error", "message": "the model refused"}]
    assert isinstance(model.failure, PermanentModelError)
    assert not is_transient(model.failure)


async def test_fail_attempts_knob_fails_the_first_attempts_only():
    agent, model = offline_agent(attempt=2, fail_attempts=2)
    assert await payloads_of(agent, "hi") == [
        {"type": "error", "message": "offline model: simulated transient failure (attempt 2 of 2)"}
    ]
    assert isinstance(model.failure, TransientModelError)
    assert is_transient(model.failure)

    agent, model = offline_agent(attempt=3, fail_attempts=2, words=5)
    payloads = await payloads_of(agent, "hi")
    assert payloads[-1] == COMPLETED
    assert model.failure is None


async def test_tool_sleep_knob_makes_a_silent_tool_call():
    agent, _ = offline_agent(tool_sleep_s=0.3)
    timed = await timed_payloads_of(agent, "anything")
    payloads = [payload for _, payload in timed]
    assert payloads == [
        {"type": "reasoning", "text": "The job asks for a silent tool call of 0.3 s; I will call the sleep tool."},
        *words("Let me wait 0.3 seconds."),
        {"type": "tool_call", "tool_name": "sleep", "argument": '{"seconds": 0.3}', "call_id": "call_1"},
        {"type": "tool_result", "call_id": "call_1", "output": "slept 0.3 s"},
        {"type": "reasoning", "text": "The sleep tool returned slept 0.3 s; I can answer now."},
        *words("The sleep tool answered: slept 0.3 s."),
        COMPLETED,
    ]
    # The tool really waited between its call and its result.
    [called] = [at for at, payload in timed if payload["type"] == "tool_call"]
    [answered] = [at for at, payload in timed if payload["type"] == "tool_result"]
    assert answered - called >= 0.3 - TICK


async def test_the_model_sees_earlier_turns():
    conversation = [
        Message(role="user", content="my name is Ada"),
        Message(role="assistant", content="Hello Ada"),
        Message(role="user", content="What did I say?"),
    ]
    payloads = await payloads_of(offline_agent()[0], conversation)
    assert "".join(p["delta"] for p in payloads if p["type"] == "text_delta") == 'You said: "my name is Ada"'


async def test_words_are_paced_by_the_delay():
    model = OfflineModel(delay_ms=20, knobs=OfflineKnobs(words=11))
    timed = await timed_payloads_of(Agent(model=model, telemetry=False), "pace me")
    arrivals = [at for at, payload in timed if payload["type"] == "text_delta"]
    assert len(arrivals) == 11
    # Every word after the first waits its 20 ms, not just the run as a whole.
    assert [later - earlier >= 0.02 - TICK for earlier, later in itertools.pairwise(arrivals)] == [True] * 10


def test_expressions_are_found_in_prose():
    assert find_expression("What is 2+3*4?") == "2+3*4"
    assert find_expression("calculate (1 + 2) * 3 please") == "(1 + 2) * 3"
    assert find_expression("in 2024 we shipped") is None
    assert find_expression("no numbers here") is None


def test_calculator_evaluates_arithmetic_only():
    assert calculate("2+3*4") == "14"
    assert calculate("7/2") == "3.5"
    assert calculate("0.1+0.2") == "0.3"
    assert calculate("-(2**10) // 3 % 7") == "1"
    assert calculate("1/0") == "error: division by zero"
    assert calculate("9**9**9") == "error: exponent is too large"
    assert calculate("__import__('os').system('true')").startswith("error: unsupported element")
    with pytest.raises(ValueError):
        evaluate("2 +")


def test_knobs_are_validated():
    with pytest.raises(PermanentModelError, match="invalid metadata.offline"):
        OfflineKnobs.from_metadata({"offline": {"words": "many"}})
    with pytest.raises(PermanentModelError, match="invalid metadata.offline"):
        OfflineKnobs.from_metadata({"offline": {"wrods": 3}})
    assert OfflineKnobs.from_metadata({}) == OfflineKnobs()


def test_model_specs():
    model = build_model("offline", attempt=2, metadata={"offline": {"words": 4}}, offline_delay_ms=5)
    assert isinstance(model, OfflineModel)
    assert (model.attempt, model.knobs.words, model.delay_ms) == (2, 4, 5)

    from agno.models.openai import OpenAIChat
    from agno.models.openrouter import OpenRouter

    openai = build_model("openai:gpt-4o-mini", attempt=1)
    assert isinstance(openai, OpenAIChat) and openai.id == "gpt-4o-mini"
    router = build_model("openrouter:moonshotai/kimi-k2.5", attempt=1)
    assert isinstance(router, OpenRouter) and router.id == "moonshotai/kimi-k2.5"

    with pytest.raises(UnknownModelError, match="unknown model provider 'acme'"):
        build_model("acme:x", attempt=1)
    with pytest.raises(UnknownModelError):
        build_model("gpt-4o", attempt=1)


def test_provider_errors_are_classified():
    from agno.exceptions import ModelAuthenticationError, ModelProviderError, ModelRateLimitError

    assert is_transient(ModelRateLimitError("slow down"))
    assert is_transient(ModelProviderError("bad gateway", status_code=502))
    assert is_transient(ModelProviderError("overloaded", status_code=529))
    assert is_transient(TimeoutError())
    assert not is_transient(ModelProviderError("bad request", status_code=400))
    assert not is_transient(ModelAuthenticationError("no key"))
    assert not is_transient(ValueError("bug"))


async def test_the_builtin_assistant_is_built_from_the_job_row():
    from runstream.core.settings import Settings

    settings = Settings(offline_delay_ms=0)
    job = {
        "id": uuid.uuid4(),
        "tenant": "t",
        "user_id": None,
        "session_id": None,
        "agent": None,
        "model": "offline",
        "attempt": 1,
        "metadata": {"offline": {"words": 3}},
        "message": "hi",
    }
    run = await prepare_run(job, settings, load_registry(settings.agent_paths), [])
    payloads = await payloads_of(run.runnable, run.input)
    assert [p["type"] for p in payloads] == ["reasoning", "text_delta", "text_delta", "text_delta", "done"]
    assert json.dumps(payloads[1:4]) == json.dumps(words("You said: hi"))
