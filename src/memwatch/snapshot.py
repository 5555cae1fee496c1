"""Heap snapshots in V8's ``.heapsnapshot`` format, and a reader for them.

``memwatch.write_snapshot(path)`` writes the whole heap (the same objects the
census counts) so that Chrome DevTools' Memory panel and memlab open it:

* one node per object, named by ``memwatch.type_name(type(obj))``, with
  ``self_size = sys.getsizeof(obj)``; node ids are ``2 * index + 1``;
* edges named by dict key (``property``), list/tuple index (``element``),
  attribute (``__slots__``, C members, ``__dict__``, ``__class__``, function
  and type fields); other references are ``hidden`` edges numbered by position;
* the root (node 0) refers to every module in ``sys.modules`` (by name), to
  each thread's running frame (``thread NAME``), and to the synthetic node
  ``(external references)`` whose elements are the objects referenced from
  outside the heap graph (C code, the interpreter, running frames' stacks),
  found as the GC finds its roots.

String contents are left out unless ``include_strings=True``: ``str`` objects
are plain ``str`` nodes, and dict keys name edges only when they are interned
(identifiers: attribute and global names), since heaps hold secrets.  The file
is created with mode 0600, written to a temporary name and renamed, so a
reader never sees half a file.

The reader (:func:`load_snapshot`) checks the structure before use and turns
any problem into a one-line :class:`SnapshotError`; the ``memwatch summary``,
``diff`` and ``retainers`` commands use it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from collections import deque
from typing import Any, Iterator

from memwatch._gcstate import quiet_collect
from memwatch.formatting import format_heapdiff, format_size

__all__ = ["write_snapshot", "load_snapshot", "Snapshot", "SnapshotError", "SnapshotInfo"]

_REQUIRED_NODE_FIELDS = ("type", "name", "id", "self_size", "edge_count")
_REQUIRED_EDGE_FIELDS = ("type", "name_or_index", "to_node")


class SnapshotError(ValueError):
    """A snapshot file that cannot be read: missing, truncated or malformed."""


class SnapshotInfo(dict):
    """What :func:`write_snapshot` wrote: a dict with ``path``, ``nodes`` (heap
    objects: the census total), ``edges``, ``bytes``, ``roots``, ``external``,
    ``elapsed`` (seconds) and ``overhead_bytes`` (peak C bookkeeping)."""

    @property
    def path(self) -> str:
        return self["path"]

    def __fspath__(self) -> str:
        return self["path"]


def write_snapshot(path: str | os.PathLike, *, include_strings: bool = False,
                   collect: bool = True) -> SnapshotInfo:
    """Write the whole heap to ``path`` as a V8 ``.heapsnapshot``.

    :param include_strings: write the contents of ``str`` objects (as string
        nodes) and every str dict key; off by default, since heaps hold secrets.
    :param collect: run a full collection first (ignored by the tracker), so
        garbage waiting for the GC is not written.
    :returns: a :class:`SnapshotInfo` (a dict) describing the file.
    :raises OSError: the file cannot be created or written (nothing is left behind).
    :raises MemoryError: the bookkeeping (about 40 bytes an object) cannot be allocated.
    """
    from memwatch import _graph

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    if collect:
        quiet_collect()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    _writing_started(tmp)
    try:
        try:
            stats = _graph.write_heapsnapshot(fd, include_strings)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        _writing_done(tmp)
    info = SnapshotInfo(stats)
    info["path"] = path
    return info


# A snapshot written from a daemon thread (dump_on_leak runs in the tracker's
# worker) can be cut off by the interpreter's exit, which would leave its
# temporary file behind: at exit, wait a little for such writes, then remove
# what is left.
_writing: set[str] = set()
_writing_cv = threading.Condition()
_atexit_registered = False


def _writing_started(tmp: str) -> None:
    global _atexit_registered
    with _writing_cv:
        _writing.add(tmp)
        if not _atexit_registered:
            import atexit
            atexit.register(_finish_writes_at_exit)
            _atexit_registered = True


def _writing_done(tmp: str) -> None:
    with _writing_cv:
        _writing.discard(tmp)
        _writing_cv.notify_all()


def _finish_writes_at_exit(timeout: float = 10.0) -> None:
    with _writing_cv:
        _writing_cv.wait_for(lambda: not _writing, timeout=timeout)
        left = list(_writing)
    for tmp in left:
        try:
            os.unlink(tmp)
        except OSError:
            pass


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

class Snapshot:
    """A ``.heapsnapshot`` file, checked and indexed for the commands.

    ``nodes``/``edges``/``strings`` are the file's flat arrays; node ``i``
    starts at ``nodes[i * node_field_count]``."""

    def __init__(self, data: Any, source: str = "<snapshot>") -> None:
        self.source = source
        try:
            meta = data["snapshot"]["meta"]
            node_fields = list(meta["node_fields"])
            edge_fields = list(meta["edge_fields"])
            node_types = meta["node_types"][0]
            edge_types = meta["edge_types"][0]
            nodes = data["nodes"]
            edges = data["edges"]
            strings = data["strings"]
        except (KeyError, IndexError, TypeError):
            raise SnapshotError(f"{source}: not a V8 heap snapshot (missing snapshot meta, "
                                "nodes, edges or strings)") from None
        for want, have, what in ((_REQUIRED_NODE_FIELDS, node_fields, "node_fields"),
                                 (_REQUIRED_EDGE_FIELDS, edge_fields, "edge_fields")):
            missing = [f for f in want if f not in have]
            if missing:
                raise SnapshotError(f"{source}: {what} lacks {', '.join(missing)}")
        if not all(isinstance(x, list) for x in (nodes, edges, strings, node_types, edge_types)):
            raise SnapshotError(f"{source}: nodes, edges, strings and type lists must be arrays")
        self.nfc = len(node_fields)
        self.efc = len(edge_fields)
        if len(nodes) % self.nfc or len(edges) % self.efc:
            raise SnapshotError(f"{source}: the nodes or edges array has a partial record")
        if not all(type(v) is int and v >= 0 for v in nodes) or \
                not all(type(v) is int and v >= 0 for v in edges):
            raise SnapshotError(f"{source}: nodes and edges must hold non-negative integers")
        if not all(isinstance(s, str) for s in strings):
            raise SnapshotError(f"{source}: strings must hold only strings")
        self.node_types = [str(t) for t in node_types]
        self.edge_types = [str(t) for t in edge_types]
        self.nodes = nodes
        self.edges = edges
        self.strings = strings
        self.node_count = len(nodes) // self.nfc
        self._n_type = node_fields.index("type")
        self._n_name = node_fields.index("name")
        self._n_id = node_fields.index("id")
        self._n_size = node_fields.index("self_size")
        self._n_ecount = node_fields.index("edge_count")
        self._e_type = edge_fields.index("type")
        self._e_name = edge_fields.index("name_or_index")
        self._e_to = edge_fields.index("to_node")
        if self.node_count == 0:
            raise SnapshotError(f"{source}: the snapshot has no nodes (not even a root)")
        # Where each node's edges start, and a check of every index.
        nstr = len(strings)
        first = [0] * (self.node_count + 1)
        total = 0
        for i in range(self.node_count):
            base = i * self.nfc
            if nodes[base + self._n_type] >= len(self.node_types) or nodes[base + self._n_name] >= nstr:
                raise SnapshotError(f"{source}: node {i} has a type or name out of range")
            total += nodes[base + self._n_ecount]
            first[i + 1] = total
        if total * self.efc != len(edges):
            raise SnapshotError(f"{source}: the nodes announce {total} edges but the file has "
                                f"{len(edges) // self.efc}")
        element = self._edge_type_index("element")
        hidden = self._edge_type_index("hidden")
        for j in range(0, len(edges), self.efc):
            et = edges[j + self._e_type]
            to = edges[j + self._e_to]
            if et >= len(self.edge_types) or to % self.nfc or to // self.nfc >= self.node_count:
                raise SnapshotError(f"{source}: edge {j // self.efc} has a type or target out of range")
            if et not in (element, hidden) and edges[j + self._e_name] >= nstr:
                raise SnapshotError(f"{source}: edge {j // self.efc} has a name out of range")
        self._first_edge = first

    def _edge_type_index(self, name: str) -> int:
        try:
            return self.edge_types.index(name)
        except ValueError:
            return -1

    # -- nodes ---------------------------------------------------------------

    def node_name(self, i: int) -> str:
        return self.strings[self.nodes[i * self.nfc + self._n_name]]

    def node_type(self, i: int) -> str:
        return self.node_types[self.nodes[i * self.nfc + self._n_type]]

    def node_id(self, i: int) -> int:
        return self.nodes[i * self.nfc + self._n_id]

    def node_size(self, i: int) -> int:
        return self.nodes[i * self.nfc + self._n_size]

    def class_name(self, i: int) -> str:
        """The type a node stands for (a string node: ``str``)."""
        return "str" if self.node_type(i) == "string" else self.node_name(i)

    def is_heap_node(self, i: int) -> bool:
        return self.node_type(i) not in ("synthetic", "hidden")

    def edges_of(self, i: int) -> Iterator[tuple[str, Any, int]]:
        """``(edge type, name or index, target node)`` for each edge of node i."""
        e = self.edges
        for j in range(self._first_edge[i] * self.efc, self._first_edge[i + 1] * self.efc, self.efc):
            etype = self.edge_types[e[j + self._e_type]]
            raw = e[j + self._e_name]
            name = raw if etype in ("element", "hidden") else self.strings[raw]
            yield etype, name, e[j + self._e_to] // self.nfc

    # -- the commands' questions ------------------------------------------------

    def type_counts(self) -> dict[str, tuple[int, int]]:
        """``{type name: (count, bytes)}`` over the heap objects."""
        out: dict[str, list[int]] = {}
        for i in range(self.node_count):
            if self.is_heap_node(i):
                slot = out.setdefault(self.class_name(i), [0, 0])
                slot[0] += 1
                slot[1] += self.node_size(i)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def census(self):
        """The snapshot as a :class:`memwatch.Census` (the Summary view)."""
        from memwatch.typestats import Census, TypeStat
        started = time.perf_counter()
        rows = [TypeStat(name, c, s) for name, (c, s) in self.type_counts().items()]
        # When the heap was taken: the file's time (set by load_snapshot); the
        # time it took here: reading, checking and counting the file.
        elapsed = getattr(self, "load_seconds", 0.0) + time.perf_counter() - started
        return Census(rows, timestamp=getattr(self, "written_at", None) or time.time(),
                      elapsed=elapsed)

    def retainer_paths(self, type_name: str, limit: int = 5) -> list[list[tuple[int, str, Any]]]:
        """Shortest paths from the root to up to ``limit`` nodes of ``type_name``.

        Breadth-first from node 0 over every edge but weak ones.  Each path is a
        list of ``(node, edge type, edge name)`` hops, the root excluded, the
        edge being the one that leads to that node."""
        from memwatch.typestats import check_count
        limit = check_count("limit", limit)
        parent: dict[int, tuple[int, str, Any]] = {0: (-1, "", "")}
        queue = deque([0])
        found: list[int] = []
        while queue and len(found) < limit:
            u = queue.popleft()
            out = list(self.edges_of(u))
            if u == 0:
                # Named roots (modules, threads) before synthetic holders,
                # as memwatch.retainers() walks them.
                out.sort(key=lambda e: self.node_type(e[2]) == "synthetic")
            for etype, name, v in out:
                if etype == "weak" or v in parent:
                    continue
                parent[v] = (u, etype, name)
                if self.is_heap_node(v) and self.class_name(v) == type_name:
                    found.append(v)
                    if len(found) >= limit:
                        break
                queue.append(v)
        paths = []
        for v in found:
            hops = []
            while v != 0:
                u, etype, name = parent[v]
                hops.append((v, etype, name))
                v = u
            hops.reverse()
            paths.append(hops)
        return paths

    def format_path(self, hops: list[tuple[int, str, Any]]) -> str:
        """``app.handlers -> dict 'CACHE' -> list[3] -> app.Session``."""
        parts = []
        external = bool(hops) and self.node_type(hops[0][0]) == "synthetic"
        if external:
            hops = hops[1:]
        for k, (node, etype, name) in enumerate(hops):
            if k == 0 and external:
                label = f"{self.class_name(node)} (external)"
            elif k == 0:
                # Reached from the root: a module (by name) or a thread.
                label = str(name) if etype == "property" else self.class_name(node)
            else:
                label = self.class_name(node)
            if k + 1 < len(hops):
                _nxt, netype, nname = hops[k + 1]
                label += edge_suffix(self.class_name(node), netype, nname)
            parts.append(label)
        return " -> ".join(parts)


def edge_suffix(parent_type: str, etype: str, name: Any) -> str:
    """How a reference is shown after its holder's type in a path."""
    if etype == "element":
        return f"[{name}]"
    if etype == "hidden":
        return f" (ref #{name})"
    if name == "__dict__":
        return ""
    if etype == "property":
        if parent_type == "dict" or parent_type.endswith("dict") or name == "(str key)":
            return f" {name!r}"
        return f".{name}"
    if name in ("(key)", "(value)", "(external references)"):
        return f" {name}"
    return f".{name}"


def load_snapshot(path: str | os.PathLike) -> Snapshot:
    """Read and check a ``.heapsnapshot`` file.

    :raises SnapshotError: missing, unreadable, truncated or malformed (one line)."""
    source = os.fspath(path)
    started = time.perf_counter()
    try:
        with open(source, "rb") as f:
            written = os.fstat(f.fileno()).st_mtime
            raw = f.read()
    except FileNotFoundError:
        raise SnapshotError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise SnapshotError(f"{source}: is a directory") from None
    except OSError as e:
        raise SnapshotError(f"{source}: cannot read: {e.strerror or e}") from None
    if not raw.strip():
        raise SnapshotError(f"{source}: the file is empty")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SnapshotError(f"{source}: not valid JSON (truncated or corrupt?): {msg}") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"{source}: not a V8 heap snapshot (the top level is not an object)")
    snap = Snapshot(data, source)
    # A census of the file: taken when the file was written, in the time reading took.
    snap.written_at = written
    snap.load_seconds = time.perf_counter() - started
    return snap


# --------------------------------------------------------------------------
# Command line: summary, diff (registered by memwatch.cli)
# --------------------------------------------------------------------------

def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("summary", help="objects by type in a .heapsnapshot (the Summary view)",
                              description="Objects by type in a .heapsnapshot file.")
    p.add_argument("file")
    p.add_argument("-n", "--limit", type=_row_limit, default=25, help="rows to show (default 25; 0: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_summary)
    p = subparsers.add_parser("diff", help="compare two .heapsnapshot files by type "
                              "(the Comparison view, HeapDiff's table)",
                              description="Compare two .heapsnapshot files, type by type.")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("-n", "--limit", type=_row_limit, default=25, help="rows to show (default 25; 0: all)")
    p.add_argument("--json", action="store_true", help="print HeapDiff's JSON instead of a table")
    p.set_defaults(func=_cmd_diff)


def _row_limit(text: str) -> int | None:
    """-n N: N rows; 0 means all of them (None)."""
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative: give 0 for all rows or a positive count")
    return n or None


def _cmd_summary(args: Any) -> int:
    census = load_snapshot(args.file).census()
    if args.json:
        body = census.to_dict(limit=args.limit)
        body["timestamp"] = _dt.datetime.fromtimestamp(census.timestamp, _dt.timezone.utc).isoformat()
        print(json.dumps(body, indent=2))
    else:
        print(census.format(limit=args.limit or len(census.rows)))
    return 0


def snapshot_diff(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """HeapDiff's dict shape from two snapshots, type by type.

    Snapshots carry no object identity across files, so ``+`` and ``-`` are
    the net growth or shrinkage of each type's count."""
    a = before.type_counts()
    b = after.type_counts()
    details = []
    for name in a.keys() | b.keys():
        ca, sa = a.get(name, (0, 0))
        cb, sb = b.get(name, (0, 0))
        if ca != cb or sa != sb:
            details.append({"what": name, "size_bytes": sb - sa, "size": format_size(sb - sa),
                            "+": max(cb - ca, 0), "-": max(ca - cb, 0)})
    details.sort(key=lambda d: (-abs(d["size_bytes"]), -(d["+"] + d["-"]), d["what"]))

    def totals(t: dict[str, tuple[int, int]]) -> dict[str, Any]:
        size = sum(s for _c, s in t.values())
        return {"nodes": sum(c for c, _s in t.values()), "size_bytes": size, "size": format_size(size)}

    ta, tb = totals(a), totals(b)
    change = tb["size_bytes"] - ta["size_bytes"]
    return {"before": ta, "after": tb,
            "change": {"size_bytes": change, "size": format_size(change),
                       "freed_nodes": sum(d["-"] for d in details),
                       "allocated_nodes": sum(d["+"] for d in details),
                       "details": details}}


def _cmd_diff(args: Any) -> int:
    diff = snapshot_diff(load_snapshot(args.before), load_snapshot(args.after))
    if args.json:
        print(json.dumps(diff, indent=2))
    else:
        print(format_heapdiff(diff, limit=args.limit or len(diff["change"]["details"])))
    return 0


def _timestamp() -> str:
    t = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + "%06dZ" % int((t % 1) * 1e6)
