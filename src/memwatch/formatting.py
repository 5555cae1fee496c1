"""The one place memwatch turns numbers into text.

Sizes are printed as node-memwatch prints them: 1024-based, lower-case units,
at most two decimals (rounded half away from zero, as JavaScript's toFixed),
trailing zeros dropped, sign kept, and no 32-bit overflow.
"""
from __future__ import annotations

__all__ = ["format_size", "format_duration", "format_rate", "format_heapdiff",
           "format_comparison", "shorten_name"]

_UNITS = ((1024**3, "gb"), (1024**2, "mb"), (1024, "kb"))


def format_size(num_bytes: int | float) -> str:
    """``1024`` -> ``'1024 bytes'``, ``1536`` -> ``'1.5 kb'``, ``-2120`` -> ``'-2.07 kb'``.

    A value is shown in the largest unit it strictly exceeds, as node-memwatch
    does, so exactly 1024 bytes stays ``'1024 bytes'``."""
    magnitude = abs(num_bytes)
    for factor, unit in _UNITS:
        if magnitude > factor:
            return f"{_cents(num_bytes, factor)} {unit}"
    if isinstance(num_bytes, float) and not num_bytes.is_integer():
        return f"{_cents(num_bytes, 1)} bytes"
    return f"{int(num_bytes)} bytes"


def _cents(value: int | float, factor: int) -> str:
    """``value / factor`` at two decimals, rounded half away from zero on the
    exact value (a float's exact binary fraction, as ``Decimal(float)``
    would), trailing zeros dropped.  In integers: the decimal module is ~340
    objects that every full collection of the watched program would traverse
    (and that a leak's first census would count as growth, if imported then)."""
    num, den = (value, 1) if isinstance(value, int) else value.as_integer_ratio()
    cents, rest = divmod(abs(num) * 100, den * factor)
    if 2 * rest >= den * factor:
        cents += 1
    whole, frac = divmod(cents, 100)
    text = f"{whole}.{frac:02d}".rstrip("0").rstrip(".")
    return "-" + text if num < 0 and cents else text


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


def shorten_name(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, keeping what identifies a type:
    its top-level package and its class name, the middle elided
    (``myapp.services...Session``); a class name too long even for that is cut
    at its end."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    if len(name) <= width:
        return name
    if width <= 3:
        return name[:width]
    parts = name.split(".")
    if len(parts) > 1:
        head, tail = parts[0], parts[-1]
        # Keep as many leading modules as fit before "...Class".
        room = width - len(tail) - 3
        if room >= len(head):
            kept = head
            for part in parts[1:-1]:
                if len(kept) + 1 + len(part) > room:
                    break
                kept += "." + part
            return f"{kept}...{tail}"
        if room >= 1:
            return f"{head[:room]}...{tail}"
    return name[:width - 3] + "..."


def format_heapdiff(diff: dict, limit: int = 15, width: int = 56) -> str:
    """Render a HeapDiff result (node-memwatch's dict shape) as a table.

    One row per type, most significant first, as ``HeapDiff.end()`` sorts them:
    net bytes, objects allocated (``+``) and freed (``-``) during the diff.
    Type names longer than ``width`` are shortened by :func:`shorten_name`."""
    before, after, change = diff["before"], diff["after"], diff["change"]
    name_width = max([len("type")] + [min(len(d["what"]), width) for d in change["details"][:limit]])
    lines = [
        f"before: {before['nodes']} objects, {before['size']}   "
        f"after: {after['nodes']} objects, {after['size']}   "
        f"change: {change['size']} (+{change['allocated_nodes']} / -{change['freed_nodes']} objects)",
        f"{'type':<{name_width}}  {'size change':>12}  {'+':>9}  {'-':>9}",
    ]
    for d in change["details"][:limit]:
        name = shorten_name(d["what"], width)
        lines.append(f"{name:<{name_width}}  {d['size']:>12}  {d['+']:>9}  {d['-']:>9}")
    # an answer cut by ?top says how many rows there were in all
    hidden = change.get("details_total", len(change["details"])) - len(change["details"][:limit])
    if hidden > 0:
        lines.append(f"... {hidden} more types")
    return "\n".join(lines)


def format_comparison(diffs: list, limit: int = 15, width: int = 56) -> str:
    """Render ``new_census.compare_to(old)`` (a list of ``TypeStatDiff``) as a table:
    per type, objects and bytes now and their change, biggest change first."""
    rows = list(diffs)
    shown = rows[:limit]
    name_width = max([len("type")] + [min(len(d.name), width) for d in shown])
    lines = [f"{'type':<{name_width}}  {'objects':>10}  {'change':>9}  {'size':>12}  {'change':>12}"]
    for d in shown:
        change = format_size(d.size_diff)
        if d.size_diff > 0:
            change = "+" + change
        lines.append(f"{shorten_name(d.name, width):<{name_width}}  {d.count:>10}  "
                     f"{d.count_diff:>+9d}  {format_size(d.size):>12}  {change:>12}")
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more types")
    if not rows:
        lines.append("(no change)")
    return "\n".join(lines)
