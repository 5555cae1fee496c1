"""The one place memwatch turns numbers into text.

Sizes are printed as node-memwatch prints them: 1024-based, lower-case units,
at most two decimals (rounded half away from zero, as JavaScript's toFixed),
trailing zeros dropped, sign kept, and no 32-bit overflow.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["format_size", "format_duration", "format_rate"]

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
