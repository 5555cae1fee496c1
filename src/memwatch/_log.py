"""memwatch's logger ("memwatch"), with ``logging`` imported on first use.

Why: the tracker runs inside every watched program, and ``logging`` (with
``traceback``, ``string`` and what they import) is about 900 objects that
each full collection of that program then traverses: pyperformance's
gc_traversal paid about 1% more instructions for memwatch's imports alone.
memwatch logs only when something goes wrong, so a program that never
imports logging itself never pays for it."""
from __future__ import annotations

__all__ = ["log"]


class _Logger:
    """Forwards every attribute to ``logging.getLogger("memwatch")``."""

    __slots__ = ()

    def __getattr__(self, name: str):
        import logging
        return getattr(logging.getLogger("memwatch"), name)


log = _Logger()
