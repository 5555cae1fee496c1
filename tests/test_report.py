"""memwatch report: a self-contained HTML chart from JSON lines."""
from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET

from memwatch.report import load_events, main, render_html, render_svg

T0 = dt.datetime(2026, 11, 21, 5, 0, tzinfo=dt.timezone.utc)


def _lines(n=30, leaks=(12, 24)):
    out = [json.dumps({"event": "start", "timestamp": T0.isoformat(), "pid": 7,
                       "argv": ["app.py", "<script>"], "python": "3.11"})]
    base = 2_000_000
    for i in range(n):
        t = T0 + dt.timedelta(seconds=5 * i)
        base += 40_000 if i > 10 else 0
        out.append(json.dumps({"event": "stats", "num_full_gc": i + 1, "num_inc_gc": 4 * i,
                               "heap_compactions": i + 1, "estimated_base": base - 10_000,
                               "current_base": base, "min": 2_000_000, "max": base,
                               "usage_trend": 0.1 * (i > 10), "timestamp": t.isoformat(),
                               "pause": 0.001, "rss": 30_000_000 + 50_000 * i, "measure": "census"}))
        if i in leaks:
            out.append(json.dumps({"event": "leak", "start": (t - dt.timedelta(seconds=20)).isoformat(),
                                   "end": t.isoformat(), "growth": 200_000,
                                   "reason": "heap growth over 5 consecutive GCs (20s) - 34.33 mb/hr",
                                   "top_types": [{"what": "app.<Leaky>", "count_change": 100,
                                                  "size_change": 5600}]}))
    out.append(json.dumps({"event": "exit", "timestamp": (T0 + dt.timedelta(seconds=5 * n)).isoformat(),
                           "code": 0, "elapsed": 5.0 * n}))
    return out


def test_load_events_sorts_and_skips_junk():
    ev = load_events(_lines() + ["not json", "[1, 2]", json.dumps({"event": "stats"})])
    assert len(ev["stats"]) == 30 and len(ev["leak"]) == 2
    assert ev["skipped"][0]["count"] == 3
    # node's own date format in a leak event is understood too
    ev2 = load_events([json.dumps({"start": "Fri, 29 Jun 2012 14:12:13 GMT",
                                   "end": "Fri, 29 Jun 2012 14:12:33 GMT", "growth": 67984,
                                   "reason": "heap growth over 5 consecutive GCs (20s) - 11.67 mb/hr"})])
    assert ev2["leak"][0]["_t"] - ev2["leak"][0]["_t0"] == 20


def test_svg_is_well_formed_with_three_lines_and_leak_marks():
    svg = render_svg(load_events(_lines()))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f".//{ns}polyline")
    assert {ln.get("stroke") for ln in lines} == {"#d62728", "#1f77b4", "#2ca02c"}
    assert all(len(ln.get("points").split()) == 30 for ln in lines)
    titles = [t.text for t in root.iter(f"{ns}title")]
    assert len(titles) == 2 and all("heap growth over 5 consecutive GCs" in t for t in titles)
    assert svg.count(">leak 1<") == 1 and svg.count(">leak 2<") == 1
    # heap axis in memwatch's size format, time axis in its duration format
    assert re.search(r">\d+(\.\d+)? mb<", svg) and ">1m 0s<" in svg


def test_html_is_self_contained_and_escaped(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(_lines()) + "\n")
    out = tmp_path / "r.html"
    assert main([str(src), "-o", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)   # nothing fetched
    assert "app.&lt;Leaky&gt;" in page and "&lt;script&gt;" in page    # names escaped
    assert "Leak events" in page and "05:01:00 UTC (+1m 0s)" in page


def test_empty_and_single_point_inputs_still_render(tmp_path):
    empty = render_html(load_events([]))
    assert "no stats events in this file" in empty
    one = render_html(load_events(_lines(n=1, leaks=())))
    assert one.count("<circle") == 3
    src = tmp_path / "missing.jsonl"
    assert main([str(src), "-o", str(tmp_path / "x.html")]) == 2


def test_rss_measure_shares_one_axis():
    lines = []
    for i in range(5):
        t = T0 + dt.timedelta(seconds=i)
        rss = 50_000_000 + 1_000_000 * i
        lines.append(json.dumps({"event": "stats", "num_full_gc": i + 1, "estimated_base": rss,
                                 "current_base": rss, "usage_trend": 1.5, "timestamp": t.isoformat(),
                                 "rss": rss, "measure": "rss"}))
    svg = render_svg(load_events(lines))
    assert "RSS (= current_base)" in svg and "RSS (right axis)" not in svg
    assert "(measure: rss), RSS" in svg and "usage trend: +1.5%" in svg
    ET.fromstring(svg)


def test_empty_or_garbage_input_is_an_error_not_an_empty_report(tmp_path, capsys):
    out = tmp_path / "r.html"
    cases = {"empty.jsonl": b"", "blank.jsonl": b"\n\n  \n",
             "garbage.jsonl": b"hello\nnot json {\n[1, 2]\n{\"event\": \"other\"}\n",
             "binary.jsonl": bytes(range(256)) * 4}
    for name, data in cases.items():
        src = tmp_path / name
        src.write_bytes(data)
        assert main([str(src), "-o", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert name in err and "memwatch run --jsonl" in err, err
        assert not out.exists(), name
    # real events with some junk: a report, and a note about the junk
    src = tmp_path / "mixed.jsonl"
    src.write_text("junk\n" + "\n".join(_lines()) + "\n")
    assert main([str(src), "-o", str(out)]) == 0
    assert "skipped 1 lines" in capsys.readouterr().err and out.exists()
