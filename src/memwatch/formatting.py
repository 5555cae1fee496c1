"""The one place memwatch turns numbers into text.

Sizes are printed as node-memwatch prints them: 1024-based, lower-case units,
at most two decimals (rounded half away from zero, as JavaScript's toFixed),
trailing zeros dropped, sign kept, and no 32-bit overflow.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["format_size", "format_duration", "format_rate", "format_heapdiff"]

_UNITS = ((1024**3, "gb"), (1024**2, "mb"), (1024, "kb"))
_CENT = Decimal("0.01")


def format_size(num_bytes: int | float) -> str:
    """``1024`` -> ``'1024 bytes'``, ``1536`` -> ``'1.5 kb'``, ``-2120`` -> ``'-2.07 kb'``.

    A value is shown in the largest unit it strictly exceeds, as node-memwatch
    does, so exactly 1024 bytes stays ``'1024 bytes'``."""
    magnitude = abs(num_bytes)
    for factor, unit in _UNITS:
        if magnitude > factor:
            value = (Decimal(num_bytes) / factor).quantize(_CENT, rounding=ROUND_HALF_UP)
            return f"{_trim(value)} {unit}"
    if isinstance(num_bytes, float) and not num_bytes.is_integer():
        return f"{_trim(Decimal(num_bytes).quantize(_CENT, rounding=ROUND_HALF_UP))} bytes"
    return f"{int(num_bytes)} bytes"


def _trim(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_duration(seconds: float) -> str:
    """``20`` -> ``'20s'``, ``61`` -> ``'1m 1s'``, ``3723`` -> ``'1h 2m 3s'``.

    Whole seconds, rounded; zero components inside are kept (``'1h 0m 5s'``)
    so the reading is unambiguous, and leading zero components are dropped."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_rate(num_bytes: float, seconds: float) -> str:
    """Growth per hour as node-memwatch words it: ``'11.67 mb/hr'``.

    A zero or negative duration gives a rate of 0 rather than dividing by zero."""
    per_hour = num_bytes * 3600.0 / seconds if seconds > 0 else 0.0
    return f"{format_size(per_hour)}/hr"


def format_heapdiff(diff: dict, limit: int = 15) -> str:
    """Render a HeapDiff result (node-memwatch's dict shape) as a table.

    One row per type, most significant first, as ``HeapDiff.end()`` sorts them:
    net bytes, objects allocated (``+``) and freed (``-``) during the diff."""
    before, after, change = diff["before"], diff["after"], diff["change"]
    width = max([len("type")] + [min(len(d["what"]), 56) for d in change["details"][:limit]])
    lines = [
        f"before: {before['nodes']} objects, {before['size']}   "
        f"after: {after['nodes']} objects, {after['size']}   "
        f"change: {change['size']} (+{change['allocated_nodes']} / -{change['freed_nodes']} objects)",
        f"{'type':<{width}}  {'size change':>12}  {'+':>9}  {'-':>9}",
    ]
    for d in change["details"][:limit]:
        name = d["what"] if len(d["what"]) <= 56 else "..." + d["what"][-53:]
        lines.append(f"{name:<{width}}  {d['size']:>12}  {d['+']:>9}  {d['-']:>9}")
    hidden = len(change["details"]) - limit
    if hidden > 0:
        lines.append(f"... {hidden} more types")
    return "\n".join(lines)
