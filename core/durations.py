"""Durations on the command line: ``30d``, ``12h``, ``90m``, ``45s``, ``2w``."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """For argparse's ``type=``: a bad value is a usage error, not a stack trace."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h, 90m, 45s or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
