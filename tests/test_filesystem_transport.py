"""The dev-mode broker under concurrent send and receive.

kombu's stock filesystem transport creates its files (messages, and an exchange's
table of queues) and then writes them, so a reader can find one empty and die on
the JSON error. Runstream's transport moves whole files into place. These rounds
start a producer and a consumer side by side on a fresh folder, as dev mode starts
the API and the worker, and check every message arrives whole. (Against kombu's
stock transport the same rounds fail with "Expecting value".)
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection

from runstream.core import filesystem_transport
from runstream.core.broker import broker_url, celery_config, transport_options
from runstream.core.settings import Settings

ROUNDS = 20
MESSAGES = 50
# Large enough that writing one takes a while: the window the race needs.
PAYLOAD = "x" * 200_000


def connection(settings: Settings) -> Connection:
    return Connection(broker_url(settings), transport_options=transport_options(settings))


def produce(data_dir: str, name: str) -> None:
    """The API's side, in a process of its own as in dev mode (kombu keeps its
    binding state per process: one process would hide the race)."""
    settings = Settings(CELERY_BROKER_URL="filesystem://", data_dir=Path(data_dir))
    with connection(settings) as conn, conn.SimpleQueue(name) as queue:
        for n in range(MESSAGES):
            queue.put({"n": n, "body": PAYLOAD})


def test_filesystem_broker_is_runstreams_own() -> None:
    assert broker_url(Settings(CELERY_BROKER_URL="filesystem://")) == "runstream-filesystem://"
    assert broker_url(Settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0")) == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_every_message_arrives_whole_while_the_consumer_polls(tmp_path: Path, round_: int) -> None:
    settings = Settings(CELERY_BROKER_URL="filesystem://", data_dir=tmp_path)
    name = f"race-{round_}"
    received: list[dict] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with connection(settings) as conn, conn.SimpleQueue(name) as queue:
                while len(received) < MESSAGES:
                    message = queue.get(timeout=30)
                    received.append(message.payload)
                    message.ack()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producer = multiprocessing.get_context("spawn").Process(target=produce, args=(str(tmp_path), name))
    producer.start()
    producer.join(60)
    consumer.join(60)

    assert producer.exitcode == 0
    assert not consumer.is_alive()
    assert errors == []
    assert sorted(m["n"] for m in received) == list(range(MESSAGES))
    assert all(m["body"] == PAYLOAD for m in received)
    # Nothing is left half-written in the staging folder.
    assert list((tmp_path / "broker" / "staging").iterdir()) == []


def test_celery_keeps_runstreams_transport_when_the_url_is_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Celery reads CELERY_BROKER_URL itself, ahead of its configuration: without
    # the read/write URLs in celery_config it would bypass Runstream's transport.
    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")
    app = Celery("probe", set_as_current=False)
    app.conf.update(celery_config(Settings(data_dir=tmp_path)))
    for conn in (app.connection_for_read(), app.connection_for_write()):
        with conn:
            assert type(conn.default_channel) is filesystem_transport.Channel
