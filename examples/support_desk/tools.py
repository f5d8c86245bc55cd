"""The desk's tools: plain Python functions, which Agno offers the model as tools.

A tool's docstring is what the model reads about it, so it says what the tool
does and what each argument looks like. Sync and async functions both work.
"""

from __future__ import annotations

import asyncio

from examples.support_desk.data import ORDERS, next_ticket_number


def order_status(order_number: str) -> str:
    """Look up where an order is.

    Args:
        order_number: the order's number, e.g. "1001".
    """
    order = ORDERS.get(order_number.strip().lstrip("#"))
    if order is None:
        # Raising would work too (Agno hands the model the error); a plain answer reads better.
        return f"there is no order {order_number}"
    return f"order {order.number} ({order.item}) is {order.status}"


async def open_ticket(subject: str) -> str:
    """Open a support ticket for a problem the desk cannot solve at once.

    Args:
        subject: one line saying what the problem is.
    """
    # An async tool: a real desk would await its ticketing system's API here.
    await asyncio.sleep(0)
    return f"ticket #{next_ticket_number()} opened: {subject}"


TOOLS = [order_status, open_ticket]
