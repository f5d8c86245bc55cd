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

positions = st.tuples(st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC)), st.uuids())
schemathesis.openapi.format(CURSOR_FORMAT, positions.map(lambda position: encode_cursor(*position)))


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    """Not sent: a request whose only fault is a header the document does not name.
    An HTTP API takes headers it does not know (clients and every proxy on the way
    add their own), so such a request is valid and answered as usual; schemathesis'
    coverage phase counts it as one the API must refuse."""
    data = case.meta.phase.data if case.meta else None
    return not (
        getattr(data, "scenario", None) == "object_unexpected_properties"
        and getattr(data, "parameter_location", None) == "header"
    )
