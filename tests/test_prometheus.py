"""The Prometheus collector: single process and prometheus_client's multiprocess mode."""
from __future__ import annotations

import datetime as dt
import json

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import memwatch  # noqa: E402
from memwatch.httpapi import MemwatchState  # noqa: E402
import memwatch.prometheus as mwp  # noqa: E402

HAVE_TRACKER = "on" in getattr(memwatch, "_LAZY", {})


def _stats(n=1, base=1100):
    return {"num_full_gc": n, "num_inc_gc": 3 * n, "heap_compactions": n, "estimated_base": base - 100,
            "current_base": base, "min": 900, "max": base, "usage_trend": 0.25,
            "timestamp": dt.datetime.now(dt.timezone.utc), "pause": 0.002, "collected": 2,
            "uncollectable": 0, "rss": 10_000_000, "measure": "census"}


def _samples(registry):
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_collector_exposes_stats_leaks_and_counts(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    st = MemwatchState()
    reg = CollectorRegistry()
    coll = mwp.register(reg, state=st)
    assert isinstance(coll, mwp.MemwatchCollector)
    s = _samples(reg)
    assert s[("memwatch_leaks_total", ())] == 0
    assert ("memwatch_current_base_bytes", ()) not in s  # nothing seen yet: no made-up zero
    st.on_stats(_stats(1))
    st.on_stats(_stats(2, base=2000))
    st.on_leak({"growth": 4096, "reason": "heap growth over 5 consecutive GCs (20s) - 1 mb/hr"})
    s = _samples(reg)
    assert s[("memwatch_current_base_bytes", ())] == 2000
    assert s[("memwatch_estimated_base_bytes", ())] == 1900
    assert s[("memwatch_usage_trend", ())] == 0.25
    assert s[("memwatch_rss_bytes", ())] == 10_000_000
    assert s[("memwatch_full_gc_total", ())] == 2
    assert s[("memwatch_inc_gc_total", ())] == 6
    assert s[("memwatch_stats_events_total", ())] == 2
    assert s[("memwatch_leaks_total", ())] == 1
    assert s[("memwatch_leak_growth_bytes", ())] == 4096
    assert s[("memwatch_last_stats_timestamp_seconds", ())] > 1.7e9


class Leaky:
    pass


def test_top_types_from_the_last_census_only(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    st = MemwatchState()
    reg = CollectorRegistry()
    coll = mwp.register(reg, state=st, top_types=500)
    assert not any(k[0] == "memwatch_type_objects" for k in _samples(reg))
    kept = [Leaky() for _ in range(5000)]
    coll.record_census(memwatch.census())
    s = _samples(reg)
    rows = {dict(k[1])["type"]: v for k, v in s.items() if k[0] == "memwatch_type_objects"}
    assert len(rows) <= 500
    assert next(v for t, v in rows.items() if t.endswith("Leaky")) >= 5000
    del kept


MP_SCRIPT = r"""
import datetime as dt, json, os, sys, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families
from memwatch.httpapi import MemwatchState
import memwatch.prometheus as mwp

st = MemwatchState()
sync = mwp.register(state=st, interval=0.05)
assert isinstance(sync, mwp.MultiprocessSync)
pids = []
for k in range(2):                        # two "gunicorn workers", forked after register()
    pid = os.fork()
    if pid == 0:
        base = 1_000_000 * (k + 1)
        st.on_stats({"num_full_gc": 5, "num_inc_gc": 7, "heap_compactions": 5,
                     "estimated_base": base, "current_base": base, "min": base, "max": base,
                     "usage_trend": 0, "timestamp": dt.datetime.now(dt.timezone.utc),
                     "pause": 0.001, "rss": 1, "measure": "x"})
        st.on_leak({"growth": 1, "reason": "r"})
        time.sleep(0.6)                    # the restarted sync thread copies the numbers
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
reg = CollectorRegistry()
MultiProcessCollector(reg)
def samples():
    out = []
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        out += [(s.name, s.labels, s.value) for s in fam.samples]
    return out
before = samples()
for pid in pids:
    mark_process_dead(pid)
after = samples()
print(json.dumps({"pids": pids, "parent": os.getpid(), "before": before, "after": after}))
"""


def test_multiprocess_mode_one_series_per_worker(tmp_path, run_script):
    mpdir = tmp_path / "mp"
    mpdir.mkdir()
    proc = run_script(MP_SCRIPT, str(mpdir))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    workers = {str(p) for p in out["pids"]}
    base = {s[1]["pid"]: s[2] for s in out["before"] if s[0] == "memwatch_current_base_bytes"}
    assert workers <= set(base), base
    assert sorted(base[p] for p in workers) == [1_000_000, 2_000_000]
    leaks = [s[2] for s in out["before"] if s[0] == "memwatch_leaks_total"]
    assert leaks == [2.0]                   # counters add up across workers
    full = [s[2] for s in out["before"] if s[0] == "memwatch_full_gc_total"]
    assert full == [10.0]
    # liveall: a dead worker's gauges go away once gunicorn marks it dead
    gone = {s[1].get("pid") for s in out["after"] if s[0] == "memwatch_current_base_bytes"}
    assert not (workers & gone)


@pytest.mark.skipif(not HAVE_TRACKER, reason="memwatch.on (the tracker, issue 3) is not in this tree yet")
def test_real_tracker_feeds_the_collector(run_script):
    proc = run_script("""
        import gc, json
        from prometheus_client import CollectorRegistry, generate_latest
        import memwatch, memwatch.prometheus as mwp
        reg = CollectorRegistry()
        mwp.register(reg)
        memwatch.gc()
        for _ in range(3):
            junk = [[] for _ in range(1000)]
            for j in junk: j.append(j)
            del junk
            gc.collect()
        print(json.dumps(generate_latest(reg).decode()))
    """, env={"PROMETHEUS_MULTIPROC_DIR": ""})
    text = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "memwatch_current_base_bytes " in text
    assert "memwatch_full_gc_total " in text


def test_register_twice_returns_the_same_collector(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reg = CollectorRegistry()
    st = MemwatchState()
    first = mwp.register(reg, state=st)
    assert mwp.register(reg, state=st) is first
    st.on_stats(_stats())
    text = generate_latest(reg).decode()
    assert text.count("\nmemwatch_current_base_bytes ") == 1
