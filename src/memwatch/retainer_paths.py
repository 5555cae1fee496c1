"""memwatch.retainers() (module memwatch.retainer_paths): why is this object still alive?

Shortest reference paths from the roots (the modules in ``sys.modules``, the
threads' running frames, and objects referenced from outside the heap graph:
C code, the interpreter, running frames' stacks) to an object, or to the
instances of a type, found in C by an iterative breadth-first walk over the
same graph ``memwatch.write_snapshot()`` writes.  Each path prints on one line::

    app.handlers -> dict 'CACHE' -> list[3] -> app.Session

and exposes its steps as data (:class:`RetainerStep`).  Paths hold only
strings and numbers: the call keeps nothing alive once it returns.  The
caller's own references (its frames, the argument) are not paths.  Naming an
attribute of an instance whose attributes live inline (3.11+) may create the
instance's ``__dict__``, as ``vars(obj)`` would.
"""
from __future__ import annotations

import reprlib
import sys
from typing import Any

from memwatch._gcstate import quiet_collect

__all__ = ["retainers", "RetainerPath", "RetainerStep"]

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40


class RetainerStep:
    """One object on a path: its type name and how it refers to the next one.

    ``kind`` is ``'module'`` / ``'thread'`` / ``'external'`` (how a path's
    first step is a root), then for the reference to the next step: ``'key'``
    (a dict value, ``name`` = repr of the key), ``'index'``, ``'attr'``,
    ``'internal'``, ``'keyof'``, ``'member'``, ``'ref'`` (unnamed, its
    position), ``'dict'`` (the object's own ``__dict__``) or ``None`` (last)."""

    __slots__ = ("type_name", "kind", "name", "label")

    def __init__(self, type_name: str, kind: str | None, name: Any, label: str) -> None:
        self.type_name = type_name
        self.kind = kind
        self.name = name
        self.label = label

    def __repr__(self) -> str:
        return f"<RetainerStep {self.label!r}>"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "kind": self.kind, "name": self.name, "label": self.label}


class RetainerPath:
    """A shortest chain of references from a root to the object."""

    __slots__ = ("root", "steps")

    def __init__(self, root: str, steps: list[RetainerStep]) -> None:
        self.root = root
        self.steps = steps

    def __str__(self) -> str:
        return " -> ".join(s.label for s in self.steps)

    def __repr__(self) -> str:
        return f"<RetainerPath {str(self)!r}>"

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "path": str(self), "steps": [s.to_dict() for s in self.steps]}


def _suffix(kind: str | None, name: Any) -> str:
    if kind == "key":
        return f" {name}"
    if kind == "index":
        return f"[{name}]"
    if kind in ("attr", "internal"):
        return f".{name}"
    if kind == "keyof":
        return " (key)"
    if kind == "member":
        return " (member)"
    if kind == "ref":
        return f" (ref #{name})"
    return ""


def _name_reference(parent: Any, child: Any) -> tuple[str | None, Any]:
    from memwatch import _graph
    found = _graph.label_reference(parent, child)
    if found is None:
        return None, None
    kind, name = found
    if kind == "key":
        if isinstance(name, int) and not isinstance(name, bool):
            return "index", name
        return "key", _repr.repr(name)
    if kind == "internal" and name == "__dict__":
        return "dict", None
    if kind == "ref":
        # Attributes kept inline (3.11+): name them through the instance dict.
        try:
            d = object.__getattribute__(parent, "__dict__")
        except Exception:
            d = None
        if isinstance(d, dict):
            for k, v in d.items():
                if v is child and isinstance(k, str):
                    return "attr", k
    return kind, name


def _build_path(chain: list[Any], roots: dict[int, str]) -> RetainerPath:
    from memwatch.typestats import type_name
    steps = []
    if chain and chain[0] is None:
        root = "(external)"
        chain = chain[1:]
        first_kind = "external"
    else:
        root = roots.get(id(chain[0]), type_name(type(chain[0]))) if chain else ""
        first_kind = "thread" if root.startswith("thread ") else "module"
    for k, obj in enumerate(chain):
        tname = type_name(type(obj))
        if k == 0:
            head = f"{tname} (external)" if first_kind == "external" else root
        else:
            head = tname
        if k + 1 < len(chain):
            kind, name = _name_reference(obj, chain[k + 1])
            label = head + _suffix(kind, name)
        else:
            kind, name, label = None, None, head
        steps.append(RetainerStep(tname, first_kind if k == 0 and kind is None and len(chain) > 1
                                  else kind, name, label))
    return RetainerPath(root, steps)


def retainers(obj_or_type: Any, limit: int = 5, *, instances: bool | None = None,
              ignore: Any = (), collect: bool = True) -> list[RetainerPath]:
    """Shortest reference paths from the roots to an object, or to instances of a type.

    :param obj_or_type: the object, or a type (its instances are the targets).
    :param limit: at most this many paths: for an object, one per distinct
        referrer (nearest first); for a type, one per instance (nearest first).
    :param instances: force the meaning of a type argument (``False``: the
        paths to the class object itself).
    :param ignore: objects (your own containers) that no path may go through.
    :param collect: run a full collection first (ignored by the tracker).
    :returns: a list of :class:`RetainerPath`, shortest first; empty when the
        object is not reachable from any root (garbage, or held only by you).
    """
    from memwatch import _graph

    from memwatch.typestats import check_count
    # More than sys.maxsize paths cannot exist: "all of them", not an overflow.
    limit = min(check_count("limit", limit), sys.maxsize)
    by_type = isinstance(obj_or_type, type) if instances is None else bool(instances)
    if by_type and not isinstance(obj_or_type, type):
        raise TypeError("instances=True needs a type")
    if collect:
        quiet_collect()
    chains, roots = _graph.shortest_paths(obj_or_type, by_type, limit, tuple(ignore))
    try:
        paths = [_build_path(chain, roots) for chain in chains]
    finally:
        del chains
    paths.sort(key=len)
    return paths


# --------------------------------------------------------------------------
# Command line: retainers FILE TYPE (registered by memwatch.cli)
# --------------------------------------------------------------------------

def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("retainers", help="shortest paths from the roots to objects of a "
                              "type, in a .heapsnapshot (the Containment question)",
                              description="Shortest reference paths from the roots to "
                              "objects of TYPE in a .heapsnapshot file.")
    p.add_argument("file")
    p.add_argument("type", help="type name as memwatch prints it, e.g. app.Session or dict")
    p.add_argument("-n", "--limit", type=int, default=5, help="paths to show (default 5)")
    p.set_defaults(func=_cmd_retainers)


def _cmd_retainers(args: Any) -> int:
    from memwatch.snapshot import load_snapshot
    snap = load_snapshot(args.file)
    paths = snap.retainer_paths(args.type, limit=max(1, args.limit))
    if not paths:
        print(f"no object of type {args.type!r} is reachable from the roots in {args.file}")
        return 1
    for hops in paths:
        print(snap.format_path(hops))
    return 0
