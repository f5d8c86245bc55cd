"""The tools every agent gets: plain Python functions that Agno turns into tool schemas.

Each docstring is what the model reads about the tool, so it says what the tool
does and what the argument looks like.
"""

from __future__ import annotations

import ast
import asyncio
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

# Bounds that keep one expression cheap: 9**9**9 would otherwise compute for minutes.
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 100
MAX_MAGNITUDE = 10**30


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, unary signs, parentheses.

    Walks the parsed tree with a whitelist of node types, so no name, call or
    attribute can ever run. Raises ValueError for anything else.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError("expression is too long")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc
    return _evaluate_node(tree.body)


def _evaluate_node(node: ast.AST) -> int | float:
    # bool is an int subclass, and no number here.
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate_node(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate_node(node.left), _evaluate_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("exponent is too large")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ValueError("division by zero") from exc
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ValueError("result is out of range")
        return value
    raise ValueError(f"unsupported element in expression: {ast.dump(node)[:60]}")


def format_number(value: int | float) -> str:
    """14 → "14", 3.5 → "3.5", 1/3 → "0.333333333333" (no float noise like 0.30000000000000004)."""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: arithmetic with numbers, + - * / // % ** and parentheses, e.g. "2+3*4".
    """
    try:
        return format_number(evaluate(expression))
    except ValueError as exc:
        # A tool answers the model in text: the error is the tool's result.
        return f"error: {exc}"


def current_utc_time() -> str:
    """Return the current date and time in UTC, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


async def sleep(seconds: float) -> str:
    """Wait silently for the given number of seconds, then say so.

    Args:
        seconds: how long to wait.
    """
    # asyncio.sleep, not time.sleep: the run stays cancellable while it waits,
    # and the worker's other runs share the same event loop.
    await asyncio.sleep(seconds)
    return f"slept {format_number(seconds)} s"


TOOLS: list[Callable[..., Any]] = [calculate, current_utc_time, sleep]
