"""From a job's model spec to an Agno model.

``offline`` → ``OfflineModel``; ``openai:<id>`` → Agno's ``OpenAIChat``;
``openrouter:<id>`` → Agno's ``OpenRouter``. Provider models read their API key
the way Agno does (``OPENAI_API_KEY``, ``OPENROUTER_API_KEY``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from agno.models.base import Model

from runstream.tasks.model_errors import KeepsFailure, PermanentModelError, UnknownModelError
from runstream.tasks.offline_model import OfflineKnobs, OfflineModel

PROVIDERS = ("openai", "openrouter")


def build_model(
    spec: str, *, attempt: int, metadata: dict[str, Any] | None = None, offline_delay_ms: float = 30.0
) -> Model:
    """The model a job's run uses. Raises PermanentModelError for a spec or knobs that cannot work."""
    if spec == "offline":
        knobs = OfflineKnobs.from_metadata(metadata)
        return OfflineModel(delay_ms=offline_delay_ms, knobs=knobs, attempt=attempt)
    provider, sep, model_id = spec.partition(":")
    if not sep or not model_id:
        raise UnknownModelError(f"model spec {spec!r} is neither 'offline' nor '<provider>:<model id>'")
    return provider_class(provider)(id=model_id)


@cache
def provider_class(provider: str) -> type[Model]:
    """Agno's class for ``provider``, with ``KeepsFailure`` mixed in (see tasks.model_errors)."""
    # Imported here: the provider classes need the OpenAI SDK (the ``providers``
    # extra), which an offline-only install does not have.
    base: type[Model]
    try:
        if provider == "openai":
            from agno.models.openai import OpenAIChat

            base = OpenAIChat
        elif provider == "openrouter":
            from agno.models.openrouter import OpenRouter

            base = OpenRouter
        else:
            raise UnknownModelError(f"unknown model provider {provider!r}: use one of {', '.join(PROVIDERS)}")
    except ImportError as exc:
        message = f"model provider {provider!r} needs the OpenAI SDK: pip install 'runstream[providers]'"
        raise PermanentModelError(message) from exc
    return type(base.__name__, (KeepsFailure, base), {"__module__": __name__})
