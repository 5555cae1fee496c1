"""A heap profile as gzipped profile.proto (pprof) and as folded stacks.

profile.proto is encoded by hand (its few messages need about forty lines of
varints), so memwatch needs no protobuf package.  The sample types are Go's
heap profile's, in Go's order, so every pprof consumer's heap views work:
alloc_objects/count, alloc_space/bytes, inuse_objects/count,
inuse_space/bytes (the default).  Field numbers from
https://github.com/google/pprof/blob/main/proto/profile.proto.
"""
from __future__ import annotations

import gzip
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from memwatch.heapprofile import HeapProfile

SAMPLE_TYPES = (("alloc_objects", "count"), ("alloc_space", "bytes"),
                ("inuse_objects", "count"), ("inuse_space", "bytes"))


def _varint(value: int, out: bytearray) -> None:
    if value < 0:
        value += 1 << 64          # int64 two's complement, as protobuf does
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _key(field: int, wire: int, out: bytearray) -> None:
    _varint((field << 3) | wire, out)


def _int_field(field: int, value: int, out: bytearray) -> None:
    if value:
        _key(field, 0, out)
        _varint(value, out)


def _bytes_field(field: int, data: bytes | bytearray, out: bytearray) -> None:
    _key(field, 2, out)
    _varint(len(data), out)
    out += data


def _packed(field: int, values, out: bytearray) -> None:
    body = bytearray()
    for v in values:
        _varint(v, body)
    _bytes_field(field, body, out)


class _Strings:
    def __init__(self) -> None:
        self.table = [""]
        self.index = {"": 0}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.table)
            self.table.append(s)
        return i


def _value_type(strings: _Strings, type_: str, unit: str) -> bytearray:
    m = bytearray()
    _int_field(1, strings(type_), m)
    _int_field(2, strings(unit), m)
    return m


def encode_profile(profile: "HeapProfile", *, compress: bool = True) -> bytes:
    strings = _Strings()
    out = bytearray()
    for type_, unit in SAMPLE_TYPES:
        _bytes_field(1, _value_type(strings, type_, unit), out)

    functions: dict = {}      # (name, filename) -> id
    locations: dict = {}      # (name, filename, lineno) -> id
    func_msgs = bytearray()
    loc_msgs = bytearray()
    for s in profile.stacks:
        values = (round(s.alloc_count), round(s.alloc_size), round(s.count), round(s.size))
        if not any(values):
            continue
        ids = []
        for f in s.traceback:       # innermost first, as pprof wants
            lkey = (f.name, f.filename, f.lineno)
            lid = locations.get(lkey)
            if lid is None:
                fkey = (f.name, f.filename)
                fid = functions.get(fkey)
                if fid is None:
                    fid = functions[fkey] = len(functions) + 1
                    m = bytearray()
                    _int_field(1, fid, m)
                    _int_field(2, strings(f.name), m)
                    _int_field(3, strings(f.name), m)
                    _int_field(4, strings(f.filename), m)
                    _bytes_field(5, m, func_msgs)
                lid = locations[lkey] = len(locations) + 1
                line = bytearray()
                _int_field(1, fid, line)
                _int_field(2, f.lineno, line)
                m = bytearray()
                _int_field(1, lid, m)
                _bytes_field(4, line, m)
                _bytes_field(4, m, loc_msgs)
            ids.append(lid)
        sample = bytearray()
        _packed(1, ids, sample)
        _packed(2, values, sample)
        _bytes_field(2, sample, out)
    out += loc_msgs
    out += func_msgs
    time_nanos = int(profile.timestamp.timestamp() * 1e9)
    period_type = _value_type(strings, "space", "bytes")
    default_type = strings("inuse_space")
    for s in strings.table:
        _bytes_field(6, s.encode("utf-8", "surrogateescape"), out)
    _int_field(9, time_nanos, out)
    _bytes_field(11, period_type, out)
    _int_field(12, int(profile.interval), out)
    _int_field(14, default_type, out)
    data = bytes(out)
    # mtime=0: the same profile gives the same bytes
    return gzip.compress(data, mtime=0) if compress else data


_VALUES = {"inuse_space": "size", "inuse_objects": "count",
           "alloc_space": "alloc_size", "alloc_objects": "alloc_count"}


def collapsed_lines(profile: "HeapProfile", value: str = "inuse_space") -> Iterator[str]:
    """``outer;...;inner N`` per stack (Brendan Gregg's folded format)."""
    attr = _VALUES.get(value)
    if attr is None:
        raise ValueError(f"value must be one of {', '.join(map(repr, _VALUES))}, not {value!r}")
    merged: dict = {}
    for s in profile.stacks:
        n = getattr(s, attr)
        if n <= 0:
            continue
        names = ";".join(f"{f.name} ({f.filename}:{f.lineno})".replace(";", ":")
                         for f in reversed(s.traceback))
        merged[names] = merged.get(names, 0.0) + n
    for names, n in sorted(merged.items(), key=lambda kv: -kv[1]):
        if round(n) > 0:
            yield f"{names} {round(n)}"


def flame_svg(folded: list, width: int = 960, row: int = 17) -> str:
    """An icicle flame graph (root on top) of ``[["outer;...;inner", value], ...]``
    as inline SVG: no script, a <title> tooltip on every frame."""
    import html
    from memwatch.formatting import format_size
    root: dict = {"n": 0.0, "kids": {}}
    for names, value in folded:
        if value <= 0:
            continue
        node = root
        node["n"] += value
        for name in names.split(";"):
            node = node["kids"].setdefault(name, {"n": 0.0, "kids": {}})
            node["n"] += value
    if root["n"] <= 0:
        return ""
    rects = []
    depth_max = 0
    # iterative walk (no recursion in proportion to stack depth)
    todo = [(root, "all", 0.0, 0)]
    while todo:
        node, name, x, depth = todo.pop()
        w = node["n"] / root["n"] * width
        if w < 0.5:
            continue
        depth_max = max(depth_max, depth)
        y = depth * row
        label = html.escape(name)
        tip = html.escape(f"{name}: {format_size(node['n'])} ({node['n'] / root['n'] * 100:.1f}%)")
        hue = 20 + (hash(name) % 40)
        text = ""
        if w > 40:
            chars = int(w / 7)
            shown = label if len(name) <= chars else html.escape(name[:max(chars - 2, 1)]) + ".."
            text = f'<text x="{x + 3:.1f}" y="{y + row - 5}" font-size="11">{shown}</text>'
        rects.append(f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
                     f'height="{row - 1}" fill="hsl({hue},85%,60%)"/>{text}</g>')
        cx = x
        for kname, kid in sorted(node["kids"].items(), key=lambda kv: -kv[1]["n"]):
            todo.append((kid, kname, cx, depth + 1))
            cx += kid["n"] / root["n"] * width
    height = (depth_max + 1) * row
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" class=flame>' + "".join(rects) + "</svg>")
