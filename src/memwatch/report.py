"""``memwatch report stats.jsonl -o report.html``: the seed article's chart.

current_base, estimated_base and RSS over time, with the leak events marked,
as one self-contained HTML file: inline SVG and CSS, no script, no network.
With the tracker's default measure (RSS) all three lines share one axis; when
current_base is a much smaller measure (``measure='python'``: heap bytes), RSS
gets its own axis on the right, in its own colour.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import sys
from typing import Any, Iterable

from memwatch.formatting import format_duration, format_size

__all__ = ["add_parser", "load_events", "render_html", "add_arguments", "main"]

HELP = "draw current_base, estimated_base and RSS over time from 'memwatch run --jsonl' output"

COLORS = {"current_base": "#d62728", "estimated_base": "#1f77b4", "rss": "#2ca02c", "leak": "#ff7f0e"}
W, H = 960, 440
ML, MR, MT, MB = 86, 86, 30, 66


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            stamp = _dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                stamp = _dt.datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT")
                stamp = stamp.replace(tzinfo=_dt.timezone.utc)
            except ValueError:
                return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=_dt.timezone.utc)
        return stamp.timestamp()
    return None


def load_events(lines: Iterable[str]) -> dict[str, list[dict]]:
    """JSON lines -> {"stats": [...], "leak": [...], "start": [...], "exit": [...]}.

    Lines that are not JSON objects, and events without a usable timestamp, are
    skipped (and counted under ``"skipped"``)."""
    out: dict[str, list[dict]] = {"stats": [], "leak": [], "start": [], "exit": [], "profile": []}
    skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(ev, dict):
            skipped += 1
            continue
        kind = ev.get("event") or ("leak" if "reason" in ev else "stats" if "current_base" in ev else None)
        if kind == "stats":
            ev["_t"] = _ts(ev.get("timestamp"))
        elif kind == "leak":
            ev["_t0"] = _ts(ev.get("start"))
            ev["_t"] = _ts(ev.get("end")) or _ts(ev.get("timestamp"))
            if ev["_t0"] is None:
                ev["_t0"] = ev["_t"]
        elif kind in ("start", "exit", "profile"):
            ev["_t"] = _ts(ev.get("timestamp"))
        else:
            skipped += 1
            continue
        if ev.get("_t") is None:
            skipped += 1
            continue
        out[kind].append(ev)
    out["stats"].sort(key=lambda e: e["_t"])
    out["skipped"] = [{"count": skipped}]
    return out


def _nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _axis(lo: float, hi: float) -> tuple[float, float, list[float]]:
    if hi <= lo:
        hi = lo + 1
    pad = (hi - lo) * 0.05
    lo2, hi2 = max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad
    unit = 1.0  # byte axes: a round step in kb/mb/gb reads better than one in bytes
    while (hi2 - lo2) / unit >= 1024:
        unit *= 1024
    step = _nice_step((hi2 - lo2) / unit) * unit
    start = math.floor(lo2 / step) * step
    end = math.ceil(hi2 / step) * step
    ticks = []
    v = start
    while v <= end + step / 2:
        ticks.append(v)
        v += step
    return start, end, ticks


def _time_ticks(span: float) -> list[float]:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600,
                 43200, 86400):
        if span / step <= 8:
            break
    return [i * step for i in range(int(span // step) + 1)]


def _pct(value: Any) -> str:
    return f"{value:+.1f}%" if isinstance(value, (int, float)) else "?"


def _measure(stats: list[dict]) -> str | None:
    return next((e.get("measure") for e in reversed(stats) if e.get("measure")), None)


def _clock(t: float, t0: float) -> str:
    """``05:02:05 UTC (+2m 5s)``: the clock time and the time since the start."""
    stamp = _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%H:%M:%S UTC")
    return f"{stamp} (+{format_duration(t - t0)})"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _polyline(points: list[tuple[float, float]], color: str, width: float = 2,
              dash: str | None = None, opacity: float | None = None) -> str:
    if not points:
        return ""
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    extra += f' stroke-opacity="{opacity}"' if opacity is not None else ""
    return (f'<polyline fill="none" stroke="{color}" stroke-width="{width}" '
            f'stroke-linejoin="round"{extra} points="{pts}"/>')


def render_svg(events: dict[str, list[dict]]) -> str:
    stats = events["stats"]
    leaks = events["leak"]
    times = [e["_t"] for e in stats] + [t for e in leaks for t in (e["_t0"], e["_t"])]
    times += [e["_t"] for e in events.get("start", []) + events.get("exit", [])]
    t0 = min(times) if times else 0.0
    t1 = max(times) if times else 1.0
    span = max(t1 - t0, 1.0)
    px0, px1, py0, py1 = ML, W - MR, MT, H - MB

    def X(t: float) -> float:
        return px0 + (t - t0) / span * (px1 - px0)

    heap_vals = [e[k] for e in stats for k in ("current_base", "estimated_base")
                 if isinstance(e.get(k), (int, float))]
    rss_vals = [e["rss"] for e in stats if isinstance(e.get("rss"), (int, float)) and e["rss"] > 0]
    measure = next((e.get("measure") for e in reversed(stats) if e.get("measure")), None)
    # One axis when current_base is in RSS's league (the tracker's default measure
    # is RSS itself): two scales for one quantity would mislead.  A second axis
    # only when the base is a much smaller measure (e.g. 'python': heap bytes).
    hmax, rmax = max(heap_vals, default=0), max(rss_vals, default=0)
    shared = bool(rss_vals) and (measure in ("rss", "uss") or (hmax > 0 and 0.5 <= rmax / hmax <= 2))
    if shared:
        both = heap_vals + rss_vals
        hlo, hhi, hticks = _axis(min(both), max(both))
        rlo, rhi, rticks = hlo, hhi, hticks
    else:
        hlo, hhi, hticks = _axis(min(heap_vals, default=0), max(heap_vals, default=1))
        rlo, rhi, rticks = _axis(min(rss_vals, default=0), max(rss_vals, default=1))
    base_label = "current_base, estimated_base" + (f" (measure: {measure})" if measure else "")
    if shared:
        base_label += ", RSS"

    def YH(v: float) -> float:
        return py1 - (v - hlo) / (hhi - hlo) * (py1 - py0)

    def YR(v: float) -> float:
        return py1 - (v - rlo) / (rhi - rlo) * (py1 - py0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             'role="img" aria-label="memwatch: heap and RSS over time" font-family="sans-serif" '
             'font-size="12">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>']
    # leak spans under everything else
    for i, lk in enumerate(leaks, 1):
        xa, xb = X(lk["_t0"]), X(lk["_t"])
        if xb - xa < 3:
            xa, xb = xb - 1.5, xb + 1.5
        tip = (f"leak {i}: {lk.get('reason', '')} (growth {format_size(lk.get('growth', 0))})")
        parts.append(f'<g><title>{_esc(tip)}</title>'
                     f'<rect x="{xa:.1f}" y="{py0}" width="{xb - xa:.1f}" height="{py1 - py0}" '
                     f'fill="{COLORS["leak"]}" fill-opacity="0.15"/>'
                     f'<line x1="{xb:.1f}" x2="{xb:.1f}" y1="{py0}" y2="{py1}" stroke="{COLORS["leak"]}" '
                     f'stroke-width="1.5" stroke-dasharray="4 3"/>'
                     f'<path d="M{xb - 6:.1f},{py0 - 12} L{xb + 6:.1f},{py0 - 12} L{xb:.1f},{py0 - 2} Z" '
                     f'fill="{COLORS["leak"]}"/>'
                     f'<text x="{xb:.1f}" y="{py0 - 15}" text-anchor="middle" fill="#b34d00" '
                     f'font-weight="bold">leak {i}</text></g>')
    # grid and axes
    for v in hticks:
        y = YH(v)
        parts.append(f'<line x1="{px0}" x2="{px1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{px0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333">'
                     f'{_esc(format_size(v))}</text>')
    if rss_vals and not shared:
        for v in rticks:
            y = YR(v)
            parts.append(f'<text x="{px1 + 6}" y="{y + 4:.1f}" fill="{COLORS["rss"]}">'
                         f'{_esc(format_size(v))}</text>')
    for tt in _time_ticks(span):
        x = X(t0 + tt)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py1}" y2="{py1 + 5}" stroke="#333"/>')
        parts.append(f'<text x="{x:.1f}" y="{py1 + 18}" text-anchor="middle" fill="#333">'
                     f'{_esc(format_duration(tt))}</text>')
    parts.append(f'<rect x="{px0}" y="{py0}" width="{px1 - px0}" height="{py1 - py0}" fill="none" '
                 'stroke="#333"/>')
    parts.append(f'<text x="{(px0 + px1) / 2}" y="{py1 + 34}" text-anchor="middle" fill="#333">'
                 'time since start</text>')
    parts.append(f'<text transform="translate(16,{(py0 + py1) / 2}) rotate(-90)" text-anchor="middle" '
                 f'fill="#333">{_esc(base_label)}</text>')
    if rss_vals and not shared:
        parts.append(f'<text transform="translate({W - 12},{(py0 + py1) / 2}) rotate(90)" '
                     f'text-anchor="middle" fill="{COLORS["rss"]}">RSS (whole process)</text>')
    # lines
    if rss_vals:
        # On a shared axis RSS often *is* current_base (measure 'rss'): draw it
        # wide and light underneath, so it shows as a halo instead of vanishing.
        parts.append(_polyline([(X(e["_t"]), YR(e["rss"])) for e in stats
                                if isinstance(e.get("rss"), (int, float)) and e["rss"] > 0],
                               COLORS["rss"], 6 if shared else 1.5,
                               opacity=0.45 if shared else None))
    parts.append(_polyline([(X(e["_t"]), YH(e["estimated_base"])) for e in stats
                            if isinstance(e.get("estimated_base"), (int, float))],
                           COLORS["estimated_base"], 2, "6 3"))
    parts.append(_polyline([(X(e["_t"]), YH(e["current_base"])) for e in stats
                            if isinstance(e.get("current_base"), (int, float))],
                           COLORS["current_base"], 2))
    if len(stats) == 1:  # a single point is no line: draw dots
        e = stats[0]
        for key, Y in (("current_base", YH), ("estimated_base", YH), ("rss", YR)):
            if isinstance(e.get(key), (int, float)):
                parts.append(f'<circle cx="{X(e["_t"]):.1f}" cy="{Y(e[key]):.1f}" r="3" '
                             f'fill="{COLORS[key]}"/>')
    # legend (top left, inside the plot)
    lx, ly = px0 + 12, py0 + 10
    legend = [("current_base", "current_base", None), ("estimated_base", "estimated_base", "6 3")]
    if rss_vals:
        legend.append(("rss", ("RSS (= current_base)" if measure == "rss" else "RSS") if shared
                       else "RSS (right axis)", None))
    if leaks:
        legend.append(("leak", "leak event", "4 3"))
    parts.append(f'<rect x="{lx - 6}" y="{ly - 4}" width="180" height="{len(legend) * 18 + 6}" '
                 'fill="#fff" fill-opacity="0.85" stroke="#ccc"/>')
    for i, (key, label, dash) in enumerate(legend):
        y = ly + 9 + i * 18
        d = f' stroke-dasharray="{dash}"' if dash else ""
        width = "2.5"
        if key == "rss" and shared:
            d += ' stroke-opacity="0.45"'
            width = "6"
        parts.append(f'<line x1="{lx}" x2="{lx + 28}" y1="{y}" y2="{y}" stroke="{COLORS[key]}" '
                     f'stroke-width="{width}"{d}/><text x="{lx + 36}" y="{y + 4}" fill="#222">{_esc(label)}</text>')
    # info line under the axis (the article's info box, kept off the data)
    if stats:
        last = stats[-1]
        info = (f"full GCs: {last.get('num_full_gc', '?')}   \u00b7   "
                f"incremental GCs: {last.get('num_inc_gc', '?')}   \u00b7   "
                f"heap compactions: {last.get('heap_compactions', '?')}   \u00b7   "
                f"usage trend: {_pct(last.get('usage_trend'))}   \u00b7   leak events: {len(leaks)}")
        parts.append(f'<text x="{px0}" y="{H - 8}" fill="#222" xml:space="preserve">{_esc(info)}</text>')
    else:
        parts.append(f'<text x="{(px0 + px1) / 2}" y="{(py0 + py1) / 2}" text-anchor="middle" '
                     'fill="#888" font-size="16">no stats events in this file</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px;margin:0 0 4px} p.sub{color:#555;margin:0 0 16px}
table{border-collapse:collapse;margin:12px 0 24px;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
h2{font-size:16px;margin:20px 0 4px}
"""


def render_html(events: dict[str, list[dict]], title: str = "memwatch report") -> str:
    stats, leaks = events["stats"], events["leak"]
    start = events["start"][0] if events.get("start") else None
    exit_ = events["exit"][-1] if events.get("exit") else None
    sub = []
    if start:
        sub.append(f"program: <code>{_esc(' '.join(map(str, start.get('argv', []))))}</code>")
        sub.append(f"pid {_esc(start.get('pid', '?'))}, Python {_esc(start.get('python', '?'))}")
        sub.append(f"started {_esc(start.get('timestamp', ''))}")
    if exit_:
        sub.append(f"exit code {_esc(exit_.get('code'))} after "
                   f"{_esc(format_duration(exit_.get('elapsed') or 0))}")
    rows = []
    if stats:
        first, last = stats[0], stats[-1]
        for key in ("current_base", "estimated_base", "min", "max", "rss"):
            if key in last:
                rows.append(f"<tr><th>{key}</th><td class=num>{_esc(format_size(first.get(key, 0)))}</td>"
                            f"<td class=num>{_esc(format_size(last.get(key, 0)))}</td>"
                            f"<td class=num>{_esc(format_size(last.get(key, 0) - first.get(key, 0)))}</td></tr>")
        for key in ("num_full_gc", "num_inc_gc", "heap_compactions", "usage_trend"):
            if key in last:
                rows.append(f"<tr><th>{key}</th><td class=num>{_esc(first.get(key))}</td>"
                            f"<td class=num>{_esc(last.get(key))}</td><td></td></tr>")
    summary = ("<table><tr><th></th><th>first stats event</th><th>last stats event</th>"
               "<th>change</th></tr>" + "".join(rows) + "</table>") if rows else ""
    leak_rows = []
    t_first = min([e["_t"] for e in stats + events.get("start", [])] or [0.0])
    for i, lk in enumerate(leaks, 1):
        top = ", ".join(f"{_esc(t.get('what'))} {t.get('count_change', 0):+d} "
                        f"({_esc(format_size(t.get('size_change', 0)))})"
                        for t in (lk.get("top_types") or [])[:5])
        leak_rows.append(f"<tr><td class=num>{i}</td><td>{_esc(_clock(lk['_t0'], t_first))}</td>"
                         f"<td>{_esc(_clock(lk['_t'], t_first))}</td>"
                         f"<td class=num>{_esc(format_size(lk.get('growth', 0)))}</td>"
                         f"<td>{_esc(lk.get('reason', ''))}</td><td>{top}</td></tr>")
    leak_table = ("<h2>Leak events</h2><table><tr><th>#</th><th>start</th><th>end</th><th>growth</th>"
                  "<th>reason</th><th>top types</th></tr>" + "".join(leak_rows) + "</table>"
                  if leak_rows else "<h2>Leak events</h2><p>none</p>")
    skipped = events.get("skipped", [{"count": 0}])[0]["count"]
    note = f"<p class=sub>{skipped} line(s) in the input were not events and were skipped.</p>" if skipped else ""
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p class=sub>{' &middot; '.join(sub) or '&nbsp;'}</p>"
            f"{render_svg(events)}"
            f"<p class=sub>{len(stats)} stats events, {len(leaks)} leak events. "
            f"current_base: the measure ({_esc(_measure(stats) or 'see the tracker')}) right after a "
            "full collection; estimated_base: its smoothed recent value; RSS: the resident memory of "
            "the whole process. A shaded band is the window a leak event judged; hover it for its "
            "reason.</p>"
            f"{summary}{leak_table}{_profile_section(events)}{note}</body></html>\n")


# --- sampling (issue 11): the heap profile `memwatch run --sample` records at exit
def _profile_section(events: dict[str, list[dict]]) -> str:
    profiles = events.get("profile") or []
    if not profiles:
        return ""
    from memwatch.pprof import flame_svg
    p = profiles[-1]
    rows = []
    for s in p.get("sites") or []:
        w = s.get("where") or {}
        rows.append(f"<tr><td class=num>{_esc(format_size(s.get('size', 0)))}</td>"
                    f"<td class=num>{_esc(s.get('count', 0))}</td>"
                    f"<td class=num>{_esc(format_size(s.get('alloc_size', 0)))}</td>"
                    f"<td><code>{_esc(w.get('filename'))}:{_esc(w.get('lineno'))}</code> "
                    f"{_esc(w.get('name'))}</td></tr>")
    return ("<h2>Where the live heap was allocated</h2>"
            f"<p class=sub>sampled every {_esc(format_size(p.get('interval', 0)))} on average; "
            f"{_esc(format_size(p.get('total_size', 0)))} live (estimated) at exit</p>"
            "<table><tr><th>live</th><th>blocks</th><th>allocated</th><th>site</th></tr>"
            + "".join(rows) + "</table>"
            "<h3>Flame graph of the live heap (outermost frame on top)</h3>"
            + flame_svg(p.get("folded") or []))
# --- end sampling


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jsonl", help="JSON lines written by 'memwatch run --jsonl FILE' ('-' for stdin)")
    parser.add_argument("-o", "--output", default="memwatch-report.html",
                        help="the HTML file to write (default memwatch-report.html)")
    parser.add_argument("--title", default=None, help="the page title")


def run(ns: argparse.Namespace) -> int:
    try:
        if ns.jsonl == "-":
            events = load_events(sys.stdin)
        else:
            with open(ns.jsonl, encoding="utf-8") as fh:
                events = load_events(fh)
    except OSError as exc:
        print(f"memwatch report: cannot read {ns.jsonl!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"memwatch report: {ns.jsonl!r} is not text (JSON lines): give the file written by "
              "'memwatch run --jsonl FILE -- ...'", file=sys.stderr)
        return 2
    skipped = events["skipped"][0]["count"]
    if not (events["stats"] or events["leak"]):
        # An empty report would look like "no leak": say what is wrong instead.
        if skipped:
            problem = (f"none of its {skipped} non-empty lines is a memwatch stats or leak event")
        else:
            problem = "it is empty (no events)"
        print(f"memwatch report: nothing to report from {ns.jsonl!r}: {problem}; give the file "
              "written by 'memwatch run --jsonl FILE -- ...' (or memwatch.on('stats') payloads "
              "as JSON lines)", file=sys.stderr)
        return 2
    if skipped:
        print(f"memwatch report: skipped {skipped} lines of {ns.jsonl!r} that are not memwatch events",
              file=sys.stderr)
    title = ns.title or f"memwatch report: {ns.jsonl}"
    with open(ns.output, "w", encoding="utf-8") as fh:
        fh.write(render_html(events, title))
    print(f"memwatch report: {len(events['stats'])} stats and {len(events['leak'])} leak events "
          f"-> {ns.output}", file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``memwatch report`` with the ``memwatch`` command's subparsers."""
    p = subparsers.add_parser("report", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memwatch report", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
