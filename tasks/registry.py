"""The agents a worker serves: ``RUNSTREAM_AGENTS`` resolved to Agno objects.

Each entry is ``name=module:attribute`` (as ``uvicorn app:app`` takes it; the
working directory is importable). The attribute is an Agno ``Agent``, ``Team`` or
``Workflow``, used as is by every run, or a factory ``(ctx) -> Agent | Team |
Workflow`` (sync or async) called once per attempt with the job's ``AgentContext``.

The worker resolves every entry at start-up and refuses to start, with one line
naming the entry, when one does not resolve; it then records what it found
(kind, description) in Postgres, where the API reads it without importing any
agent code (db.agents).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import typing
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from agno.agent import Agent
from agno.models.base import Model
from agno.models.message import Message
from agno.team import Team
from agno.workflow import Workflow

from runstream.core.settings import get_settings
from runstream.tasks.agent_events import Runnable
from runstream.tasks.model_errors import PermanentModelError
from runstream.tasks.models import build_model

KINDS: dict[type, str] = {Agent: "agent", Team: "team", Workflow: "workflow"}


class RegistryError(Exception):
    """An entry of RUNSTREAM_AGENTS does not resolve to something runnable; the message names it."""


class AgentBuildError(Exception):
    """A factory failed, or built something that is not an Agent, Team or Workflow."""


@dataclass(frozen=True)
class AgentContext:
    """What a factory knows about the attempt it builds an agent for."""

    job_id: uuid.UUID
    attempt: int
    tenant: str
    # The user the job was submitted for, when the job records one.
    user: str | None
    session_id: str | None
    message: str
    metadata: Mapping[str, Any]
    # The job's model spec: "offline", "openai:<id>", "openrouter:<id>".
    model: str
    # The earlier turns of the session, oldest first, as Agno messages.
    history: tuple[Message, ...] = field(default=())

    def build_model(self) -> Model:
        """The Agno model of this job's spec, as the built-in assistant uses it
        (the offline model honours the job's ``metadata.offline`` knobs)."""
        return build_model(
            self.model,
            attempt=self.attempt,
            metadata=dict(self.metadata),
            offline_delay_ms=get_settings().offline_delay_ms,
        )


def kind_of(value: Any) -> str | None:
    for cls, kind in KINDS.items():
        if isinstance(value, cls):
            return kind
    return None


@dataclass(frozen=True)
class RegisteredAgent:
    name: str
    path: str
    target: Any
    # agent, team or workflow; a factory's is read from its return annotation
    # ("factory" when that names none of them).
    kind: str
    description: str | None

    @property
    def is_factory(self) -> bool:
        return kind_of(self.target) is None

    async def build(self, ctx: AgentContext) -> Runnable:
        """The object to run for one attempt. Raises AgentBuildError when a factory
        fails, PermanentModelError when the job's model cannot be built."""
        if not self.is_factory:
            return self.target
        try:
            built = self.target(ctx)
            if inspect.isawaitable(built):
                built = await built
        except PermanentModelError:
            raise  # the job's model spec or knobs: its own message says it best
        except Exception as exc:
            raise AgentBuildError(f"agent {self.name!r} could not be built: {type(exc).__name__}: {exc}") from exc
        if kind_of(built) is None:
            raise AgentBuildError(
                f"agent {self.name!r}: its factory returned {type(built).__name__}, not an Agno Agent, Team or Workflow"
            )
        return built


def _factory_kind(factory: Any) -> str:
    try:
        returned = typing.get_type_hints(factory).get("return")
    except Exception:  # noqa: BLE001 - an annotation that does not resolve says nothing
        return "factory"
    for candidate in typing.get_args(returned) or (returned,):
        for cls, kind in KINDS.items():
            if isinstance(candidate, type) and issubclass(candidate, cls):
                return kind
    return "factory"


def _description(target: Any) -> str | None:
    text = getattr(target, "description", None) if kind_of(target) else inspect.getdoc(target)
    if not text:
        return None
    return str(text).strip().splitlines()[0]


def resolve(name: str, path: str) -> RegisteredAgent:
    module_name, _, attribute = path.partition(":")
    # As uvicorn and celery -A do: modules of the directory the worker runs in import.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RegistryError(f"agent {name!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say how
        raise RegistryError(f"agent {name!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise RegistryError(f"agent {name!r}: {module_name!r} has no attribute {attribute!r}") from None
    kind = kind_of(target)
    if kind is None:
        if not callable(target) or inspect.isclass(target):
            raise RegistryError(
                f"agent {name!r}: {path} is a {type(target).__name__}, "
                "not an Agno Agent, Team, Workflow or a factory (ctx) -> one of them"
            )
        kind = _factory_kind(target)
    return RegisteredAgent(name, path, target, kind, _description(target))


def load_registry(paths: Mapping[str, str]) -> dict[str, RegisteredAgent]:
    """Every entry resolved, in order. Raises RegistryError for the first that does not."""
    return {name: resolve(name, path) for name, path in paths.items()}


@cache
def get_registry() -> dict[str, RegisteredAgent]:
    """The process's registry, from its settings (resolved once)."""
    return load_registry(get_settings().agent_paths)


def models_of(runnable: Any) -> Iterator[Model]:
    """The models inside an agent, a team (leader and members) or a workflow's steps."""
    seen: set[int] = set()
    stack = [runnable]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Model):
            yield item
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            continue
        for attribute in ("model", "members", "steps", "agent", "team"):
            value = getattr(item, attribute, None)
            if value is not None and not inspect.isroutine(value):
                stack.append(value)
