"""The desk's back office: a few orders and the tickets opened this process.

A real desk reads its own database here; the example keeps it in memory so it
runs anywhere with nothing to set up.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Order:
    number: str
    item: str
    status: str


ORDERS = {
    order.number: order
    for order in (
        Order("1001", "espresso machine", "shipped on Monday, arriving Thursday"),
        Order("1002", "coffee grinder", "waiting for stock, ships next week"),
        Order("1003", "milk frother", "delivered yesterday"),
    )
}

_ticket_numbers = itertools.count(1)


def next_ticket_number() -> int:
    return next(_ticket_numbers)
