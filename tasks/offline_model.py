"""``OfflineModel``: a real Agno ``Model`` that needs no network.

It runs inside Agno's own agent loop: it streams reasoning, then text word by
word, and asks for tools with OpenAI-style tool calls, which Agno executes before
calling the model again with the tool's result. Everything it says is a pure
function of the conversation, so runs are reproducible.

Rules, applied to the newest message of the conversation:

* a tool result → reasoning, then an answer that quotes the tool's output:
  a team leader's ``delegate_task_to_member`` → the same task to the next member
  of the roster not yet asked, and after the last one "<member id> answered:
  <output>" for each member, in roster order;
  ``delegate_task_to_members`` (broadcast) → "The team answered: <output>";
  ``calculate`` → "The result of <expression> is <output>.",
  ``current_utc_time`` → "The current UTC time is <output>.",
  any other tool → "The <tool> tool answered: <output>."
* a user message, checked in this order:
  1. knob ``fail`` → raises ``PermanentModelError(<message>)``;
  2. knob ``fail_attempts: k`` and this is attempt k or earlier → raises ``TransientModelError``;
  3. knob ``tool_sleep_s: x`` → "Let me wait <x> seconds." and a call of ``sleep(seconds=x)``;
  4. a team leader (offered ``delegate_task_to_member``) → "Let me ask <member id>." and a
     delegation of the prompt to the first member of the roster in its system message;
     offered ``delegate_task_to_members`` instead → "Let me ask the team." and one call;
  5. the text names a tool the agent offers (other than Runstream's own) → "Let me use
     <tool>." and a call of it: the words after its name fill its first parameter;
  6. the text contains "your instructions" (any case) → "My instructions are: <the system
     message, on one line>" (or "I have no instructions.");
  7. the text contains "what did i say" (any case) → repeats the previous user message;
  8. the text contains an arithmetic expression (two numbers joined by + - * / // % **,
     parentheses allowed, e.g. "what is 2+3*4?") → "Let me calculate <expression>." and a
     call of ``calculate(expression=<expression>)``;
  9. the text contains the word "time" → "Let me check the clock." and a call of
     ``current_utc_time()``;
  10. otherwise a plain answer: "You said: <the first words of the prompt> Here is the offline
     answer: <filler words chosen by a hash of the prompt>", exactly ``words`` words long
     (knob ``words``, default 30).
  A tool is only called when the agent offers it; otherwise the rules go on.
  An agent with an ``output_schema`` gets its final answer as one JSON object of that
  schema (see ``structured_answer``).
  Rules 3 to 10 also answer a prompt sent as a list of messages (history first).

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
from runstream.tasks.tools import TOOLS, evaluate, format_number

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
_INSTRUCTIONS = "your instructions"
# A team leader's system message lists its members as <member id="..." name="...">.
_MEMBER = re.compile(r'<member id="([^"]+)"')
DELEGATE = "delegate_task_to_member"
# Runstream's own tools have rules of their own; any other tool is called by name.
BUILTIN_TOOL_NAMES = frozenset(tool.__name__ for tool in TOOLS)
BROADCAST = "delegate_task_to_members"


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
    # Agno then hands an agent's ``output_schema`` over as ``response_format``.
    supports_native_structured_outputs: bool = True

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
        reply = self.structured(self.reply(messages, offered_tools(tools)), response_format)
        yield ModelResponse(role="assistant", reasoning_content=reply.reasoning)
        for index, word in enumerate(stream_words(reply.text)):
            # Yields to the event loop even at 0 ms: the worker's other runs, and a
            # cancel, get their turn between words.
            await asyncio.sleep(self.delay_ms / 1000 if index else 0)
            yield ModelResponse(content=word)
        if reply.tool_name is not None:
            yield ModelResponse(tool_calls=tool_calls(reply, messages))

    async def ainvoke(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> ModelResponse:
        # Agno asks for an agent's structured output (``output_schema``) in one piece.
        reply = self.structured(self.reply(messages, offered_tools(tools)), response_format)
        await asyncio.sleep(0)
        return ModelResponse(
            role="assistant",
            reasoning_content=reply.reasoning,
            content=reply.text,
            tool_calls=tool_calls(reply, messages) if reply.tool_name is not None else [],
        )

    @staticmethod
    def structured(reply: Reply, response_format: Any) -> Reply:
        """A final answer (no tool call) as a JSON object of the agent's ``output_schema``, if it has one."""
        if isinstance(response_format, type) and issubclass(response_format, BaseModel) and reply.tool_name is None:
            return Reply(reply.reasoning, structured_answer(response_format, reply.text))
        return reply

    def reply(self, messages: list[Message], tools: dict[str, dict[str, Any]]) -> Reply:
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

    # Agno's async agent loop only calls ainvoke_stream and ainvoke; the other entry
    # points belong to runs Runstream never makes (blocking ones).
    def invoke(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("OfflineModel only runs asynchronously: use agent.arun(..., stream=True)")

    def invoke_stream(self, *args: Any, **kwargs: Any) -> Iterator[ModelResponse]:
        raise NotImplementedError("OfflineModel only runs asynchronously: use agent.arun(..., stream=True)")

    # Nothing to parse: ainvoke_stream builds ModelResponses itself.
    def _parse_provider_response(self, response: ModelResponse, **kwargs: Any) -> ModelResponse:
        return response

    def _parse_provider_response_delta(self, response: ModelResponse) -> ModelResponse:
        return response


def answer_prompt(prompt: str, messages: list[Message], tools: dict[str, dict[str, Any]], knobs: OfflineKnobs) -> Reply:
    if knobs.tool_sleep_s is not None and "sleep" in tools:
        seconds = format_number(knobs.tool_sleep_s)
        return Reply(
            f"The job asks for a silent tool call of {seconds} s; I will call the sleep tool.",
            f"Let me wait {seconds} seconds.",
            "sleep",
            {"seconds": knobs.tool_sleep_s},
        )
    members = roster(messages)
    if DELEGATE in tools and members:
        return delegate(members[0], prompt)
    if BROADCAST in tools:
        return Reply(
            "This is a task for the whole team; I will ask every member.",
            "Let me ask the team.",
            BROADCAST,
            {"task": prompt},
        )
    if _INSTRUCTIONS in prompt.lower():
        system = " ".join(m.get_content_string() for m in messages if m.role == "system").split()
        text = f"My instructions are: {' '.join(system)}" if system else "I have no instructions."
        return Reply("The user asks for my instructions; I will quote them.", text)
    named = named_tool(prompt, tools)
    if named is not None:
        name, arguments = named
        return Reply(f"The user asks for the {name} tool; I will call it.", f"Let me use {name}.", name, arguments)
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


def delegate(member: str, task: str) -> Reply:
    return Reply(
        f"The team member {member} should handle this; I will delegate the task.",
        f"Let me ask {member}.",
        DELEGATE,
        {"member_id": member, "task": task},
    )


def roster(messages: list[Message]) -> list[str]:
    """The member ids a team leader's system message lists, in order."""
    system = " ".join(m.get_content_string() for m in messages if m.role == "system")
    return _MEMBER.findall(system)


def answer_delegation(messages: list[Message]) -> Reply:
    """After a member's answer: ask the next member, or answer with what they all said."""
    answers = [
        (tool_call_arguments(messages, m.tool_call_id).get("member_id", ""), m.get_content_string())
        for m in messages
        if m.role == "tool" and m.tool_name == DELEGATE
    ]
    asked = {member for member, _ in answers}
    remaining = [member for member in roster(messages) if member not in asked]
    if remaining:
        task = tool_call_arguments(messages, messages[-1].tool_call_id).get("task", "")
        return delegate(remaining[0], task)
    return Reply(
        "Every member has answered; I will pass on what they said.",
        " ".join(f"{member} answered: {output}" for member, output in answers),
    )


def answer_tool_result(result: Message, messages: list[Message]) -> Reply:
    tool = result.tool_name or "the"
    output = result.get_content_string()
    if tool == DELEGATE:
        return answer_delegation(messages)
    reasoning = f"The {tool} tool returned {output}; I can answer now."
    if tool == BROADCAST:
        return Reply(reasoning, f"The team answered: {output}")
    if tool == "calculate":
        expression = tool_call_arguments(messages, result.tool_call_id).get("expression", "")
        return Reply(reasoning, f"The result of {expression} is {output}.")
    if tool == "current_utc_time":
        return Reply(reasoning, f"The current UTC time is {output}.")
    return Reply(reasoning, f"The {tool} tool answered: {output}.")


def structured_answer(schema: type[BaseModel], text: str) -> str:
    """The answer as a JSON object of ``schema``: text fields hold ``text``, number
    fields its word count, flags true, lists empty; other fields keep their defaults."""
    values: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        kind = info.annotation
        if kind is str:
            values[name] = text
        elif kind in (int, float):
            values[name] = len(text.split())
        elif kind is bool:
            values[name] = True
        elif getattr(kind, "__origin__", None) is list:
            values[name] = []
    return json.dumps(values)


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


def offered_tools(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The functions offered to the model: {name: JSON schema of its parameters}."""
    return {
        t["function"]["name"]: t["function"].get("parameters") or {} for t in tools or [] if t.get("type") == "function"
    }


def named_tool(prompt: str, tools: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """A call of the first offered tool (other than Runstream's own) whose name the
    prompt mentions; the words after the name are its first parameter (a number
    when the parameter is one), other required parameters are left empty."""
    for name, schema in tools.items():
        if name in BUILTIN_TOOL_NAMES or name in (DELEGATE, BROADCAST):
            continue
        position = prompt.find(name)
        if position < 0:
            continue
        rest = prompt[position + len(name) :].strip(" :.?!")
        properties: dict[str, Any] = schema.get("properties") or {}
        arguments: dict[str, Any] = {}
        for index, (parameter, spec) in enumerate(properties.items()):
            if index > 0 and parameter not in (schema.get("required") or []):
                continue
            value: Any = rest if index == 0 else ""
            if spec.get("type") in ("integer", "number"):
                try:
                    value = int(value) if spec["type"] == "integer" else float(value)
                except ValueError:
                    value = 0
            arguments[parameter] = value
        return name, arguments
    return None


def tool_calls(reply: Reply, messages: list[Message]) -> list[dict[str, Any]]:
    """The reply's tool call in OpenAI form, with an id unique in the conversation."""
    return [
        {
            "id": f"call_{count_tool_calls(messages) + 1}",
            "type": "function",
            "function": {"name": reply.tool_name, "arguments": json.dumps(reply.tool_args or {})},
        }
    ]


def count_tool_calls(messages: list[Message]) -> int:
    return sum(len(m.tool_calls or []) for m in messages if m.role == "assistant")


def tool_call_arguments(messages: list[Message], call_id: str | None) -> dict[str, Any]:
    for message in reversed(messages):
        for call in message.tool_calls or []:
            if call.get("id") == call_id:
                return json.loads(call["function"].get("arguments") or "{}")
    return {}
