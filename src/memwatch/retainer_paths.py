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
from types import GenericAlias as _GenericAlias
from typing import Any

from memwatch._gcstate import quiet_collect

__all__ = ["retainers", "largest_holder", "RetainerPath", "RetainerStep", "resolve_type"]

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


def _short_matches(name: str, names: Any) -> list[str]:
    """Names whose last dotted parts are ``name`` (``Session`` -> ``__main__.Session``)."""
    return sorted({n for n in names if n.endswith("." + name)})


def _did_you_mean(name: str, names: Any) -> str:
    """``"; did you mean 'a' or 'b'?"`` from names close to ``name`` (in full,
    or by their last dotted part, as a person types a class name), or ``""``."""
    import difflib
    names = list(names)
    short = name.rsplit(".", 1)[-1]
    by_last: dict[str, list[str]] = {}
    for n in names:
        by_last.setdefault(n.rsplit(".", 1)[-1], []).append(n)
    close = difflib.get_close_matches(name, names, n=3)
    for last in difflib.get_close_matches(short, list(by_last), n=3):
        close += sorted(by_last[last])
    close = list(dict.fromkeys(close))[:5]
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _is_class(obj: Any) -> bool:
    """A real class: on 3.10 ``isinstance(list[int], type)`` is true for a
    ``types.GenericAlias``, which is not one."""
    return isinstance(obj, type) and not isinstance(obj, _GenericAlias)


def _all_classes() -> list[type]:
    """Every live class: ``object`` and its subclasses, transitively.

    Not ``gc.get_objects()``: holding that list while Python code runs gives
    every object one more reference, and a tuple another thread is still
    filling with ``tuple(iterable)`` then fails to resize (SystemError in
    that thread).  ``type.__subclasses__`` (never a class's own override)
    reaches every class, each from each of its bases."""
    subclasses = type.__subclasses__
    seen = {id(object)}
    found = [object]
    k = 0
    while k < len(found):
        try:
            below = subclasses(found[k])
        except TypeError:        # a metaclass whose instances are not types
            below = []
        k += 1
        for c in below:
            if id(c) not in seen:
                seen.add(id(c))
                found.append(c)
    return found


def resolve_type(name: str) -> tuple[type, str]:
    """The live type that memwatch calls ``name`` and its full name.

    A short name (``Session``) is resolved to the one type whose full name ends
    with it.  :raises LookupError: no such type (with close names, if any).
    :raises ValueError: the short name fits several types (they are listed)."""
    import builtins
    import types as _types
    from memwatch.typestats import type_name
    name = name.strip()
    found: dict[str, list[type]] = {}
    candidates = [v for v in vars(builtins).values() if _is_class(v)]
    candidates += [v for v in vars(_types).values() if _is_class(v)]
    candidates += _all_classes()
    for tp in candidates:
        bucket = found.setdefault(type_name(tp), [])
        if not any(tp is t for t in bucket):
            bucket.append(tp)
    del candidates
    if name in found and len(found[name]) == 1:
        return found[name][0], name
    if name in found:
        raise ValueError(f"{len(found[name])} different live types are named {name!r} "
                         "(a class defined more than once); pass the class object itself")
    near = _short_matches(name, found)
    if len(near) == 1 and len(found[near[0]]) == 1:
        return found[near[0]][0], near[0]
    if near:
        raise ValueError(f"type name {name!r} is ambiguous: {', '.join(near[:10])}")
    raise LookupError(f"no type named {name!r} in this process{_did_you_mean(name, found)}")


def retainers(obj_or_type: Any, limit: int = 5, *, instances: bool | None = None,
              ignore: Any = (), collect: bool = True) -> list[RetainerPath]:
    """Shortest reference paths from the roots to an object, or to instances of a type.

    :param obj_or_type: the object, or a type (its instances are the targets),
        or a type's name as memwatch prints it (``"app.Session"``; a short
        ``"Session"`` is resolved when one type fits; ``instances=False``
        makes a string the object itself).
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
    if isinstance(obj_or_type, str) and instances is None:
        obj_or_type, _name = resolve_type(obj_or_type)
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
    # Held from outside the graph (a C reference, a caller's local) is the
    # last resort: the search reaches those only after everything the modules
    # and threads hold, and they sort after them, shorter or not.
    paths.sort(key=lambda p: (p.root == "(external)", len(p)))
    return paths


def largest_holder(tp: type, *, ignore: Any = ()) -> tuple[RetainerPath | None, int]:
    """The shortest path to the object holding the most instances of ``tp``,
    and how many it holds (direct references).

    Where :func:`retainers` on a type finds the instance *nearest a root*, this
    finds the container that piles them up: for ``str``/``bytes``/``int``
    (which hold nothing and are in no gc generation) that container is how a
    leak of them is found.  Interned strings (names) are not counted.
    ``(None, 0)`` when nothing holds one.  No collection is run first."""
    from memwatch import _graph
    if not isinstance(tp, type):
        raise TypeError(f"largest_holder() needs a type, not {type(tp).__name__}")
    chain, count, roots = _graph.largest_holder(tp, tuple(ignore))
    try:
        return (_build_path(chain, roots) if chain else None), count
    finally:
        del chain


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
    p.add_argument("--holders", action="store_true",
                   help="the most common holders of TYPE's instances (over up to 1000 paths) "
                   "instead of the paths")
    p.set_defaults(func=_cmd_retainers)


def _cmd_retainers(args: Any) -> int:
    from memwatch.snapshot import load_snapshot
    import re
    import sys
    snap = load_snapshot(args.file)
    name = args.type
    counts = snap.type_counts()
    if name not in counts:
        near = _short_matches(name, counts)
        if len(near) == 1:
            print(f"memwatch retainers: {name!r} is {near[0]!r} in {args.file}", file=sys.stderr)
            name = near[0]
        else:
            hint = (f"; did you mean {' or '.join(repr(c) for c in near[:10])}?" if near
                    else _did_you_mean(name, counts))
            print(f"no object of type {name!r} in {args.file}{hint}")
            return 1
    paths = snap.retainer_paths(name, limit=1000 if args.holders else max(1, args.limit))
    if not paths:
        print(f"no object of type {name!r} is reachable from the roots in {args.file}")
        return 1
    if args.holders:
        # The path up to the holder, list positions folded: one line per container.
        held: dict[str, int] = {}
        for hops in paths:
            full = snap.format_path(hops)
            holder = re.sub(r"\[\d+\]", "[*]", full.rsplit(" -> ", 1)[0]) if " -> " in full \
                else "(a root)"
            held[holder] = held.get(holder, 0) + 1
        print(f"most common holders of {name} ({len(paths)} instances looked at):")
        for holder, n in sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))[:max(1, args.limit)]:
            print(f"{n:>6}  {holder}")
        return 0
    for hops in paths:
        print(snap.format_path(hops))
    return 0
