"""Keep stream tokens out of the logs.

uvicorn's access log writes each request's path with its query string, and a
stream token travels in the query (``?token=``): for its lifetime it is a
credential for a job. The filter replaces it before any handler formats the
line. (API keys travel in the Authorization header, which nothing logs.)
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

# Every query parameter as it stands in the line: its name and its value.
QUERY_PARAMETER = re.compile(r"([?&])([^=&\s\"]*)=([^&\s\"]*)")


def _redact_parameter(match: re.Match[str]) -> str:
    # By the decoded name: the server decodes `%74oken` to `token` and accepts it.
    if unquote_plus(match.group(2)) != "token":
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}=REDACTED"


def redact(text: str) -> str:
    return QUERY_PARAMETER.sub(_redact_parameter, text)


class RedactStreamTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def install() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactStreamTokens) for f in access.filters):
        access.addFilter(RedactStreamTokens())
