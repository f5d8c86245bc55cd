"""kombu's filesystem transport, with message files that appear whole.

kombu creates a file and then writes it, twice over: a message in the queue
folder, and an exchange's table of queues the first time a queue is bound. A
process reading in between (a consumer polling the folder; a producer looking up
where to deliver) reads an empty file and dies on the JSON error, as seen under
load in dev mode, where the API and the worker start side by side. Here both
files are written in a staging folder and then moved into place in one atomic
step, so a reader sees no file or the whole of it. Everything else is kombu's.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# The scheme runstream.core.broker gives Celery for the filesystem broker.
SCHEME = "runstream-filesystem"


class Channel(filesystem.Channel):
    @property
    def _staging(self) -> Path:
        return Path(self.transport_options["staging_folder"])

    # The signature of kombu's filesystem Channel, which differs from its own base's.
    def _put(self, queue: str, payload: object, **kwargs: object) -> None:  # type: ignore[override]
        # kombu's name: consumers take messages in the order their names sort.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            (self._staging / name).write_bytes(str_to_bytes(dumps(payload)))
            os.replace(self._staging / name, Path(self.data_folder_out) / name)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        table = self._exchange_file(exchange)
        if not table.exists():
            self.control_folder.mkdir(exist_ok=True)
            entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
            draft = self._staging / f"{uuid.uuid4()}.exchange"
            draft.write_bytes(str_to_bytes(dumps([entry])))
            try:
                # Creates the table whole, or fails if another process made it first.
                os.link(draft, table)
                return
            except FileExistsError:
                pass  # then kombu's update under its file lock adds this queue
            finally:
                draft.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel
