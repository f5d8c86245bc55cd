"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

The list cursor's schema has the format ``runstream-cursor``: opaque, valid only
as this API wrote it. Schemathesis cannot guess such values, so it is told how
the API writes them: a (created_at, id) position, encoded as the API encodes it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import schemathesis
from hypothesis import strategies as st

from runstream.api.cursor import encode_cursor
from runstream.api.params import CURSOR_FORMAT

positions = st.fixed_dictionaries(
    {"created_at": st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC)), "id": st.uuids()}
)
schemathesis.openapi.format(CURSOR_FORMAT, positions.map(encode_cursor))
