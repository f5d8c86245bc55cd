"""Every setting Runstream reads, in one place.

This is the only module that reads the environment. Names:
``DATABASE_URL`` and ``CELERY_BROKER_URL`` are unprefixed (the conventional names
operators already set); everything else is ``RUNSTREAM_*``.
"""

from __future__ import annotations

import base64
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _key_entries(api_keys: SecretStr | str) -> list[tuple[str, str] | None]:
    """``RUNSTREAM_API_KEYS`` (and the other ``tenant=value`` lists) entry by entry
    (blank ones skipped, positions kept): ``(tenant, key)``, or None for an entry
    that is not ``tenant=key``."""
    text = api_keys.get_secret_value() if isinstance(api_keys, SecretStr) else api_keys
    entries: list[tuple[str, str] | None] = []
    for item in text.split(","):
        tenant, sep, key = (part.strip() for part in item.partition("="))
        if item.strip():
            entries.append((tenant, key) if sep and tenant and key else None)
    return entries


# The offline assistant Runstream ships: the registry's entry when none is configured.
BUILTIN_AGENT = "assistant"
BUILTIN_AGENT_PATH = "runstream.tasks.assistant:build_assistant"
# An agent's name is a URL- and log-safe key.
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# ``package.module:attribute`` (dotted on both sides), as ``uvicorn app:app`` takes it.
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def _agent_entries(agents: str) -> dict[str, str]:
    """``name=module:attr,...`` → {name: "module:attr"}, in order. Raises ValueError
    naming the first entry that is malformed or repeats a name."""
    entries: dict[str, str] = {}
    for position, item in enumerate((i for i in agents.split(",") if i.strip()), start=1):
        name, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not _AGENT_NAME.fullmatch(name) or not _IMPORT_PATH.fullmatch(path):
            raise ValueError(f"entry {position} ({item.strip()!r}) is not name=module:attribute")
        if name in entries:
            raise ValueError(f"agent {name!r} is listed twice")
        entries[name] = path
    if not entries:
        raise ValueError("lists no agent")
    return entries


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_", extra="ignore")

    # --- services -------------------------------------------------------------
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    celery_broker_url: str | None = Field(default=None, validation_alias=AliasChoices("CELERY_BROKER_URL"))
    # Behind a pooler in transaction mode (PgBouncer's pool_mode=transaction),
    # server-side prepared statements outlive the transaction that made them on
    # a server connection the next transaction may not get: set this to false
    # there. (psycopg prepares a statement after its 5th use by default.)
    prepared_statements: bool = True
    # The API's one LISTEN connection needs a session of its own, which a pooler
    # in transaction mode cannot give: point this at Postgres directly (unset:
    # DATABASE_URL). Where no direct connection is allowed, set
    # ``live_updates`` to "poll": the API then reads the jobs its live streams
    # follow every ``poll_interval_s`` instead of listening (api/hub.py).
    listen_database_url: str | None = None
    live_updates: Literal["listen", "poll"] = "listen"
    poll_interval_s: float = Field(default=0.1, gt=0)
    # The broker queue the API sends to and the worker consumes. Distinct names
    # let several Runstreams (or test runs) share one broker.
    queue: str = "runstream"
    # Where dev mode keeps the embedded Postgres cluster and the filesystem broker.
    data_dir: Path = Path(".runstream")

    # --- model ----------------------------------------------------------------
    model: str = "offline"
    offline_delay_ms: float = 30.0

    # --- agents (docs/agents.md) ----------------------------------------------
    # The agents this deployment serves: ``name=module:attribute,...``, where the
    # attribute is an Agno Agent, Team or Workflow, or a factory ``(ctx) -> one``.
    # Replacing the list drops the built-in assistant unless it is listed again.
    agents: str = f"{BUILTIN_AGENT}={BUILTIN_AGENT_PATH}"
    # The agent of jobs that name none; empty: the first one listed.
    default_agent: str = ""

    # --- API ------------------------------------------------------------------
    # --- security (docs/security.md) -----------------------------------------
    # ``tenant=key,tenant=key``. Empty: the API runs open, as tenant "default".
    # Secret types keep the values out of every repr, so they cannot reach a log.
    api_keys: SecretStr = SecretStr("")
    # ``module:callable``: your own authenticator instead of the key list, an async
    # ``(request) -> Principal(tenant, user_id)`` that refuses with a 401
    # (docs/security.md). Unset: the API keys above.
    auth: str | None = None
    # The JWT authenticator (RUNSTREAM_AUTH=runstream.api.jwt_auth:JwtAuthenticator):
    # HS256 with a shared secret, or RS256 with the issuer's public key (PEM).
    # A token must carry ``exp``, ``aud`` (this audience), ``sub`` (the user) and
    # ``tenant``; ``iss`` is checked when an issuer is set.
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_key: SecretStr | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Clock skew allowed on ``exp`` and ``nbf``.
    jwt_leeway_s: float = Field(default=30.0, ge=0)
    # Signs stream tokens. Unset: a random one per process (tokens then open
    # streams only on the process that issued them): set it when several API
    # processes serve one deployment.
    secret: SecretStr | None = None
    stream_token_ttl_s: int = 3600
    # Serving open on a non-loopback address is refused unless this is set.
    allow_open: bool = False
    # When set, /metrics needs ``Authorization: Bearer <this>``.
    metrics_token: SecretStr | None = None
    # Behind a reverse proxy you trust: X-Forwarded-Proto/-Host/-Prefix decide the
    # base of the absolute URLs the API hands out (api/urls.py). Off: ignored.
    trust_proxy_headers: bool = False
    cors_origins: str = ""
    # Also allow any http://localhost / 127.0.0.1 / [::1] origin, any port (dev mode).
    cors_allow_localhost: bool = False
    max_body_bytes: int = 1_048_576
    # A request's head, bounded before any of it reaches the app (api/protocol.py):
    # its target (path and query; beyond: 414), the whole head (request line and
    # headers; beyond: 431) and its number of header fields (beyond: 431).
    max_url_bytes: PositiveInt = 8192
    max_header_bytes: PositiveInt = 32_768
    max_headers: PositiveInt = 100
    max_message_chars: int = 100_000
    # Open SSE streams one API process serves, in all and per tenant; beyond: 429.
    max_streams: int = 5000
    max_streams_per_tenant: int = 1000
    # Jobs a tenant may create per window (0: no limit), and may have pending or
    # running at once (0: no limit); beyond either: 429 at creation.
    job_rate_limit: int = 600
    job_rate_window_s: int = 60
    max_active_jobs: int = 1000
    keepalive_s: float = 15.0
    # On SIGTERM, how long open streams may run on to their terminal events
    # before they are cut (uncleanly, so clients resume): api/server.py.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Connections in the API's query pool. Fixed: it never grows with open streams.
    api_db_pool_size: int = 8
    # How long a request waits for a database connection before it answers 503
    # database_unavailable (Postgres down or restarting).
    api_db_wait_s: float = Field(default=5.0, gt=0)
    # Rows per read when a stream replays or catches up.
    replay_page_size: int = 1000
    # How long a publish to the broker may take before the API gives up (the
    # job stays pending and the reaper dispatches it later).
    dispatch_timeout_s: float = 2.0
    # A live stream buffers at most this many rows for a slow client; beyond
    # that it falls back to reading pages on its own, so memory stays bounded.
    stream_buffer_rows: int = 2000
    # The LISTEN connection is pinged this often, so a link that died silently
    # is noticed (and every stream re-reads) instead of waiting forever.
    listen_ping_s: float = 10.0
    # /readyz gives each dependency (database, broker) this long to answer.
    readiness_timeout_s: float = 2.0

    # --- worker ---------------------------------------------------------------
    worker_concurrency: PositiveInt = 32
    worker_db_pool_size: PositiveInt = 4
    # Group commits a worker process runs at once, each over its own set of jobs
    # and on its own connection (tasks/event_writer.py). Less than
    # worker_db_pool_size (checked when read): one connection stays free for
    # heartbeats and the reaper.
    worker_flush_lanes: PositiveInt = 2
    heartbeat_s: float = 5.0
    # A running job whose heartbeat is older than this is considered abandoned:
    # a new attempt may claim it, and the reaper dispatches it again.
    stale_after_s: float = 30.0
    # The reaper (tasks.reaper, a loop in every worker process) looks this often
    # for jobs the broker will not deliver: pending for longer than
    # ``pending_timeout_s`` past the moment they became available (the API died
    # before dispatching, the broker lost the message), or running with a stale
    # heartbeat. It dispatches them again, or fails them past ``max_attempts``.
    reaper_interval_s: float = 5.0
    pending_timeout_s: float = 60.0
    # How often a running job checks whether cancel was requested.
    cancel_poll_s: float = 0.5
    max_attempts: PositiveInt = 3
    # Backoff before a retried attempt (transient model error): about base, 2·base,
    # 4·base … seconds, capped, with jitter.
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    # Redis only: an unacknowledged message is redelivered after this long. A
    # crashed run comes back sooner through the reaper (stale heartbeat); this is
    # the broker's own backstop. A run longer than this gets a second delivery,
    # which the claim guard turns away while the first one's heartbeat is alive.
    redis_visibility_timeout_s: int = 300
    run_timeout_s: float = 600.0
    # A run paused for a person (a tool needing confirmation, input or external
    # execution) that nobody answers within this long fails with the error
    # "pause timed out" (the reaper ends it). Time paused is not run time.
    pause_timeout_s: PositiveFloat = 86400.0

    # Earlier runs of its session the agent sees as context (0: none).
    history_runs: int = 20

    # --- sessions and webhooks (docs/sessions-and-webhooks.md) ------------------
    # What a job created in a session whose run is still active does, unless its
    # request says (``if_busy``).
    session_if_busy: Literal["enqueue", "reject", "interrupt", "rollback"] = "enqueue"
    # ``tenant=url,...``: where a tenant's jobs without a webhook of their own announce their end.
    webhook_urls: str = ""
    # ``tenant=whsec_<base64>,...``: the key that signs a tenant's webhooks (Standard Webhooks).
    webhook_secrets: SecretStr = SecretStr("")
    # Webhooks to loopback, private and link-local addresses are refused unless this is set.
    webhook_allow_private: bool = False
    # One attempt (connect, send, read the answer) may take this long at most.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: PositiveInt = 8
    # Backoff between attempts: base, 2·base, 4·base … seconds, capped.
    webhook_backoff_s: float = Field(default=5.0, ge=0)
    webhook_backoff_max_s: float = Field(default=3600.0, ge=0)
    # The worker's Prometheus exporter port; unset: no exporter.
    worker_metrics_port: int | None = None

    # --- logs -----------------------------------------------------------------
    # "json" (one object per line, for log pipelines) or "text" (for a terminal).
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator(
        "database_url",
        "celery_broker_url",
        "listen_database_url",
        "secret",
        "metrics_token",
        "auth",
        "jwt_key",
        "jwt_audience",
        "jwt_issuer",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_keys")
    @classmethod
    def _keys_are_pairs(cls, value: SecretStr) -> SecretStr:
        # A malformed list must not read as "no keys", which would serve open.
        # The message says which entry, by position, never what it holds.
        for position, pair in enumerate(_key_entries(value), start=1):
            if pair is None:
                raise ValueError(f"entry {position} is not tenant=key")
        return value

    @field_validator("auth")
    @classmethod
    def _auth_is_a_target(cls, value: str | None) -> str | None:
        if value is not None:
            module, sep, attribute = value.strip().partition(":")
            if not (sep and module and attribute):
                raise ValueError("must be module:callable, e.g. runstream.api.jwt_auth:JwtAuthenticator")
            return f"{module}:{attribute}"
        return value

    @field_validator("agents")
    @classmethod
    def _agents_are_entries(cls, value: str) -> str:
        _agent_entries(value)
        return value

    @field_validator("default_agent")
    @classmethod
    def _default_agent_is_listed(cls, value: str, info: ValidationInfo) -> str:
        listed = info.data.get("agents")
        if value and listed is not None and value not in _agent_entries(listed):
            raise ValueError(f"{value!r} is not in RUNSTREAM_AGENTS")
        return value

    @property
    def agent_paths(self) -> dict[str, str]:
        """The registry as configured: {agent name: "module:attribute"}, in the listed order."""
        return _agent_entries(self.agents)

    @property
    def default_agent_name(self) -> str:
        return self.default_agent or next(iter(self.agent_paths))

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Rules between settings, each a misconfiguration that would otherwise
        # show up only under load or after a failure.
        broken = [
            message
            for holds, message in (
                (
                    self.worker_flush_lanes < self.worker_db_pool_size,
                    f"{_variable('worker_flush_lanes')} must be less than {_variable('worker_db_pool_size')}"
                    " (one connection stays free for heartbeats and the reaper)",
                ),
                (
                    self.stale_after_s > self.heartbeat_s + self.cancel_poll_s,
                    f"{_variable('stale_after_s')} must be more than {_variable('heartbeat_s')}"
                    f" + {_variable('cancel_poll_s')} (the longest gap between two heartbeats of a live run)",
                ),
                (
                    self.retry_backoff_max_s >= self.retry_backoff_s,
                    f"{_variable('retry_backoff_max_s')} must be at least {_variable('retry_backoff_s')}",
                ),
                (
                    self.max_streams_per_tenant <= self.max_streams,
                    f"{_variable('max_streams_per_tenant')} must be at most {_variable('max_streams')}",
                ),
                # Both set would leave one of them silently unused.
                (
                    not (self.auth and self.api_key_map),
                    f"{_variable('auth')} and {_variable('api_keys')} are both set: choose one authenticator",
                ),
            )
            if not holds
        ]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_are_keys(cls, value: SecretStr) -> SecretStr:
        for position, pair in enumerate(_key_entries(value), start=1):
            if pair is None or not _is_webhook_secret(pair[1]):
                raise ValueError(f"entry {position} is not tenant=whsec_<base64 key>")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _urls_are_pairs(cls, value: str) -> str:
        for position, pair in enumerate(_key_entries(value), start=1):
            if pair is None or not pair[1].startswith(("http://", "https://")):
                raise ValueError(f"entry {position} is not tenant=http(s)://...")
        return value

    @model_validator(mode="after")
    def _default_webhooks_are_signed(self) -> Settings:
        # A default webhook nobody could verify would be refused at every send.
        unsigned = sorted(set(self.webhook_url_map) - {t for t, _ in filter(None, _key_entries(self.webhook_secrets))})
        if unsigned:
            raise ValueError(
                f"RUNSTREAM_WEBHOOK_URLS names tenants with no secret in RUNSTREAM_WEBHOOK_SECRETS: {', '.join(unsigned)}"
            )
        return self

    @property
    def webhook_url_map(self) -> dict[str, str]:
        """{tenant: default webhook URL}."""
        return dict(filter(None, _key_entries(self.webhook_urls)))

    def webhook_secret(self, tenant: str) -> str | None:
        return dict(filter(None, _key_entries(self.webhook_secrets))).get(tenant)

    @property
    def api_key_map(self) -> dict[str, str]:
        """``tenant=key,tenant=key`` → {key: tenant} (the form is checked when read)."""
        return {key: tenant for tenant, key in filter(None, _key_entries(self.api_keys))}

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def _is_webhook_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    except ValueError:
        return False


class SettingsError(Exception):
    """A setting in the environment is malformed; the message names each variable."""


def _variable(field: str) -> str:
    # Each field is read from RUNSTREAM_<FIELD>, except the unprefixed two.
    return field.upper() if field.upper() in SERVICE_VARIABLES else f"RUNSTREAM_{field.upper()}"


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # One line naming each variable; never the value (it may be a secret).
        # A rule between settings (no one field's error) names its variables itself.
        problems = "; ".join(
            f"{_variable(str(error['loc'][0]))}: {_reason(error['msg'])}" if error["loc"] else _reason(error["msg"])
            for error in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


# The variables that point a process at its database and broker.
SERVICE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL")


def child_environment(
    *, keep_settings: bool = False, defaults: dict[str, str] | None = None, **settings: str
) -> dict[str, str]:
    """The environment for a Runstream subprocess: this process's, plus ``settings``.

    Without ``keep_settings`` every Runstream setting of the caller is dropped first,
    so nothing of the caller's own leaks into the child (tests, bench). With it, the
    caller's settings pass through (dev mode hands the user's configuration to its
    children), and ``defaults`` fill in only what the caller did not set.
    """
    env = dict(defaults or {})
    env.update(
        (k, v)
        for k, v in os.environ.items()
        if keep_settings or not (k.startswith("RUNSTREAM_") or k in SERVICE_VARIABLES)
    )
    env.update(settings)
    return env
