"""``OfflineModel``: a real Agno ``Model`` that needs no network.

It runs inside Agno's own agent loop: it streams reasoning, then text word by
word, and asks for tools with OpenAI-style tool calls, which Agno executes before
calling the model again with the tool's result. Everything it says is a pure
function of the conversation, so runs are reproducible.

Rules, applied to the newest message of the conversation:

* a tool result → reasoning, then an answer that quotes the tool's output:
  ``calculate`` → "The result of <expression> is <output>.",
  ``current_utc_time`` → "The current UTC time is <output>.",
  any other tool → "The <tool> tool answered: <output>."
* a user message, checked in this order:
  1. knob ``fail`` → raises ``PermanentModelError(<message>)``;
  2. knob ``fail_attempts: k`` and this is attempt k or earlier → raises ``TransientModelError``;
  3. knob ``tool_sleep_s: x`` → "Let me wait <x> seconds." and a call of ``sleep(seconds=x)``;
  4. the text contains "what did i say" (any case) → repeats the previous user message;
  5. the text contains an arithmetic expression (two numbers joined by + - * / // % **,
     parentheses allowed, e.g. "what is 2+3*4?") → "Let me calculate <expression>." and a
     call of ``calculate(expression=<expression>)``;
  6. the text contains the word "time" → "Let me check the clock." and a call of
     ``current_utc_time()``;
  7. otherwise a plain answer: "You said: <the first words of the prompt> Here is the offline
     answer: <filler words chosen by a hash of the prompt>", exactly ``words`` words long
     (knob ``words``, default 30).
  A tool is only called when the agent offers it; otherwise the rules go on.

The pause between streamed words is ``delay_ms`` (setting ``RUNSTREAM_OFFLINE_DELAY_MS``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from agno.models.base import Model
from agno.models.message import Message
from agno.models.response import ModelResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runstream.tasks.model_errors import KeepsFailure, PermanentModelError, TransientModelError
from runstream.tasks.tools import evaluate, format_number

DEFAULT_WORDS = 30
# How much of the prompt a plain answer echoes.
ECHO_WORDS = 8
FILLER = (
    "events are kept in order so a reader can resume from any point and the stream "
    "stays durable while workers come and go the answer arrives word by word"
).split()

# A candidate arithmetic expression: a run of digits, operators, parentheses and spaces.
_EXPRESSION_RUN = re.compile(r"[\d.+\-*/%() ]+")
# ...that really joins two numbers with an operator.
_BINARY_OPERATION = re.compile(r"\d\s*\)*\s*(\*\*|//|[-+*/%])\s*\(*\s*[-+]?[\d.]")
_TIME_WORD = re.compile(r"\btime\b", re.IGNORECASE)
_RECALL = "what did i say"


class OfflineKnobs(BaseModel):
    """A job's ``metadata.offline``: how the offline model should shape its run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    words: int = Field(default=DEFAULT_WORDS, ge=1, le=100_000)
    fail_attempts: int = Field(default=0, ge=0)
    fail: str | None = None
    tool_sleep_s: float | None = Field(default=None, ge=0)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> OfflineKnobs:
        """Raises PermanentModelError for knobs that do not validate: no attempt would fix them."""
        try:
            return cls.model_validate((metadata or {}).get("offline") or {})
        except ValidationError as exc:
            raise PermanentModelError(f"invalid metadata.offline: {exc.errors()[0]['msg']}") from exc


@dataclass(frozen=True)
class Reply:
    """What the model says on one call: reasoning, then text, then maybe one tool call."""

    reasoning: str
    text: str
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None


@dataclass
class OfflineModel(KeepsFailure, Model):
    id: str = "offline"
    name: str = "Offline"
    provider: str = "Runstream"
    delay_ms: float = 30.0
    knobs: OfflineKnobs = field(default_factory=OfflineKnobs)
    # The job's attempt number, for the ``fail_attempts`` knob.
    attempt: int = 1

    async def ainvoke_stream(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> AsyncIterator[ModelResponse]:
        reply = self.reply(messages, offered_tools(tools))
        yield ModelResponse(role="assistant", reasoning_content=reply.reasoning)
        for index, word in enumerate(stream_words(reply.text)):
            # Yields to the event loop even at 0 ms: the worker's other runs, and a
            # cancel, get their turn between words.
            await asyncio.sleep(self.delay_ms / 1000 if index else 0)
            yield ModelResponse(content=word)
        if reply.tool_name is not None:
            yield ModelResponse(
                tool_calls=[
                    {
                        "id": f"call_{count_tool_calls(messages) + 1}",
                        "type": "function",
                        "function": {"name": reply.tool_name, "arguments": json.dumps(reply.tool_args or {})},
                    }
                ]
            )

    def reply(self, messages: list[Message], tools: set[str]) -> Reply:
        latest = messages[-1]
        if latest.role == "tool":
            return answer_tool_result(latest, messages)
        self.fail_if_asked()
        return answer_prompt(latest.get_content_string(), messages, tools, self.knobs)

    def fail_if_asked(self) -> None:
        if self.knobs.fail is not None:
            raise PermanentModelError(self.knobs.fail)
        if self.attempt <= self.knobs.fail_attempts:
            raise TransientModelError(
                f"offline model: simulated transient failure (attempt {self.attempt} of {self.knobs.fail_attempts})"
            )

    # Agno's streamed agent loop only calls ainvoke_stream; the other entry points
    # belong to runs Runstream never makes (blocking or not streamed).
    def invoke(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("OfflineModel only streams asynchronously: use agent.arun(..., stream=True)")

    async def ainvoke(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("OfflineModel only streams asynchronously: use agent.arun(..., stream=True)")

    def invoke_stream(self, *args: Any, **kwargs: Any) -> Iterator[ModelResponse]:
        raise NotImplementedError("OfflineModel only streams asynchronously: use agent.arun(..., stream=True)")

    # Nothing to parse: ainvoke_stream builds ModelResponses itself.
    def _parse_provider_response(self, response: ModelResponse, **kwargs: Any) -> ModelResponse:
        return response

    def _parse_provider_response_delta(self, response: ModelResponse) -> ModelResponse:
        return response


def answer_prompt(prompt: str, messages: list[Message], tools: set[str], knobs: OfflineKnobs) -> Reply:
    if knobs.tool_sleep_s is not None and "sleep" in tools:
        seconds = format_number(knobs.tool_sleep_s)
        return Reply(
            f"The job asks for a silent tool call of {seconds} s; I will call the sleep tool.",
            f"Let me wait {seconds} seconds.",
            "sleep",
            {"seconds": knobs.tool_sleep_s},
        )
    if _RECALL in prompt.lower():
        earlier = [m.get_content_string() for m in messages[:-1] if m.role == "user"]
        if earlier:
            return Reply(
                "The user asks what they said before; I will quote their previous message.",
                f'You said: "{earlier[-1]}"',
            )
        return Reply(
            "The user asks what they said before, but this is the first message.",
            "You have not said anything before this message.",
        )
    expression = find_expression(prompt)
    if expression is not None and "calculate" in tools:
        return Reply(
            f"The user wants {expression} computed; I will call the calculate tool.",
            f"Let me calculate {expression}.",
            "calculate",
            {"expression": expression},
        )
    if _TIME_WORD.search(prompt) and "current_utc_time" in tools:
        return Reply(
            "The user asks for the time; I will call the current_utc_time tool.",
            "Let me check the clock.",
            "current_utc_time",
            {},
        )
    return Reply(
        "No tool is needed for this prompt; I will answer it directly.",
        plain_answer(prompt, knobs.words),
    )


def answer_tool_result(result: Message, messages: list[Message]) -> Reply:
    tool = result.tool_name or "the"
    output = result.get_content_string()
    reasoning = f"The {tool} tool returned {output}; I can answer now."
    if tool == "calculate":
        expression = tool_call_arguments(messages, result.tool_call_id).get("expression", "")
        return Reply(reasoning, f"The result of {expression} is {output}.")
    if tool == "current_utc_time":
        return Reply(reasoning, f"The current UTC time is {output}.")
    return Reply(reasoning, f"The {tool} tool answered: {output}.")


def plain_answer(prompt: str, count: int) -> str:
    echo = prompt.split()[:ECHO_WORDS]
    words = ["You", "said:", *echo, "Here", "is", "the", "offline", "answer:"]
    # Seeded by the prompt: the same prompt always gets the same answer.
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    while len(words) < count:
        words.append(rng.choice(FILLER))
    return " ".join(words[:count])


def find_expression(text: str) -> str | None:
    """The first arithmetic expression in ``text`` that evaluates, e.g. "what is 2+3*4?" → "2+3*4"."""
    for run in _EXPRESSION_RUN.findall(text):
        candidate = run.strip(" .")
        if not _BINARY_OPERATION.search(candidate):
            continue
        try:
            evaluate(candidate)
        except ValueError:
            continue
        return candidate
    return None


def stream_words(text: str) -> list[str]:
    """The deltas of a streamed text: each word with the space after it, so they join back to ``text``."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def offered_tools(tools: list[dict[str, Any]] | None) -> set[str]:
    return {t["function"]["name"] for t in tools or [] if t.get("type") == "function"}


def count_tool_calls(messages: list[Message]) -> int:
    return sum(len(m.tool_calls or []) for m in messages if m.role == "assistant")


def tool_call_arguments(messages: list[Message], call_id: str | None) -> dict[str, Any]:
    for message in reversed(messages):
        for call in message.tool_calls or []:
            if call.get("id") == call_id:
                return json.loads(call["function"].get("arguments") or "{}")
    return {}
