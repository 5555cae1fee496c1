"""Sampling scenarios run in a fresh interpreter (the allocator hooks are
process-wide); each prints one JSON line.  argv[1] names the scenario."""
import asyncio
import json
import os
import sys
import threading
import tracemalloc

import memwatch
from memwatch import _sampler

from _rows import rows_by_line

MB = 1000 * 1000


def rows_here(prof):
    """{lineno: [live size, alloc size, samples]} for this file's sites."""
    return rows_by_line(prof, __file__)


def exact_here(snap):
    return {st.traceback[0].lineno: st.size for st in snap.statistics("lineno")
            if st.traceback[0].filename == __file__}


def line_of(tag):
    src = open(__file__).read().splitlines()
    return next(i for i, l in enumerate(src, 1) if l.endswith("# " + tag))


def worker(keep, n):
    for i in range(n):
        keep.append(bytearray(2000))   # THREAD SITE


def threads():
    tracemalloc.start(1)
    memwatch.start_sampling()
    keeps = [[] for _ in range(4)]
    ts = [threading.Thread(target=worker, args=(k, 2500)) for k in keeps]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    snap = tracemalloc.take_snapshot()
    prof = memwatch.take_heap_profile()
    line = line_of("THREAD SITE")
    out = {"exact": exact_here(snap).get(line), "est": rows_here(prof).get(line)}
    memwatch.stop_sampling()
    tracemalloc.stop()
    return out


async def coro_alloc(keep):
    for i in range(5000):
        keep.append(bytearray(2000))   # ASYNC SITE
        if i % 100 == 0:
            await asyncio.sleep(0)


async def amain():
    keep1, keep2 = [], []
    await asyncio.gather(coro_alloc(keep1), coro_alloc(keep2))
    return keep1, keep2


def asyncio_scenario():
    tracemalloc.start(1)
    memwatch.start_sampling()
    keeps = asyncio.run(amain())
    snap = tracemalloc.take_snapshot()
    prof = memwatch.take_heap_profile()
    line = line_of("ASYNC SITE")
    tb = [row.key for row in prof.statistics("traceback")
          if row.key[0].lineno == line and row.key[0].filename == __file__]
    out = {"exact": exact_here(snap).get(line), "est": rows_here(prof).get(line),
           "names": sorted({f.name for key in tb for f in key[:1]})}
    memwatch.stop_sampling()
    tracemalloc.stop()
    del keeps
    return out


def fork_scenario():
    # A small interval: the parent holds ~80 samples at the fork, so "the child
    # starts clean" is told apart from the one or two samples the child itself
    # may take between the fork and its first profile.
    memwatch.start_sampling(interval=64 * 1024)
    keep = [bytearray(1000) for _ in range(20000)]   # PARENT SITE
    parent_samples = _sampler.stats()["samples"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = memwatch.take_heap_profile()
        child_keep = [bytearray(1000) for _ in range(20000)]   # CHILD SITE
        after = memwatch.take_heap_profile()
        res = {"before_total": before.total_size, "before_samples": before.info["samples"],
               "child_site": rows_here(after).get(line_of("CHILD SITE")),
               "parent_site_in_child": rows_here(after).get(line_of("PARENT SITE")),
               "sampling": memwatch.is_sampling()}
        os.write(w, json.dumps(res).encode())
        os.close(w)
        del child_keep
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    child = json.loads(data)
    parent = rows_here(memwatch.take_heap_profile()).get(line_of("PARENT SITE"))
    memwatch.stop_sampling()
    del keep
    return {"child": child, "parent_site": parent, "parent_samples_at_fork": parent_samples}


def restart():
    memwatch.start_sampling()
    keep = [bytearray(1000) for _ in range(20000)]   # FIRST SESSION
    first = rows_here(memwatch.take_heap_profile()).get(line_of("FIRST SESSION"))
    memwatch.stop_sampling()
    memwatch.start_sampling()
    keep2 = [bytearray(1000) for _ in range(20000)]   # SECOND SESSION
    prof = memwatch.take_heap_profile()
    out = {"first": first, "first_after_restart": rows_here(prof).get(line_of("FIRST SESSION")),
           "second": rows_here(prof).get(line_of("SECOND SESSION"))}
    memwatch.stop_sampling()
    del keep, keep2
    return out


def chained():
    """tracemalloc hooked on top of memwatch, then memwatch stopped first."""
    original = _sampler.allocators()
    memwatch.start_sampling()
    hooked = _sampler.allocators()
    tracemalloc.start(1)
    memwatch.stop_sampling()
    state_after_stop = _sampler.hook_state()
    keep = [bytearray(1000) for _ in range(1000)]   # TRACED WHILE CHAINED
    traced = exact_here(tracemalloc.take_snapshot()).get(line_of("TRACED WHILE CHAINED"))
    memwatch.start_sampling()   # re-activates the chained hooks
    keep2 = [bytearray(1000) for _ in range(5000)]   # SAMPLED WHILE CHAINED
    sampled = rows_here(memwatch.take_heap_profile()).get(line_of("SAMPLED WHILE CHAINED"))
    is_on = memwatch.is_sampling()
    memwatch.stop_sampling()
    tracemalloc.stop()          # restores memwatch's (pass-through) hooks
    restored_to_hooks = _sampler.allocators() == hooked
    memwatch.start_sampling()
    memwatch.stop_sampling()    # now on top again: restores the original
    del keep, keep2
    return {"state_after_stop": state_after_stop, "traced": traced, "sampled": sampled,
            "is_on": is_on, "restored_to_hooks": restored_to_hooks,
            "final_is_original": _sampler.allocators() == original}


def removed():
    """tracemalloc started before memwatch and stopped while memwatch is on
    top: tracemalloc restores the allocator it saved, dropping memwatch."""
    original = _sampler.allocators()
    tracemalloc.start(1)
    memwatch.start_sampling()
    tracemalloc.stop()
    prof = memwatch.take_heap_profile()
    out = {"is_sampling": memwatch.is_sampling(), "warning": "warning" in prof.info,
           "state": _sampler.hook_state()}
    memwatch.stop_sampling()
    out["final_is_original"] = _sampler.allocators() == original
    memwatch.start_sampling()
    keep = [bytearray(1000) for _ in range(5000)]   # AFTER REINSTALL
    out["after_reinstall"] = rows_here(memwatch.take_heap_profile()).get(line_of("AFTER REINSTALL"))
    memwatch.stop_sampling()
    out["final2_is_original"] = _sampler.allocators() == original
    del keep
    return out


def leak_for_pprof(path):
    memwatch.start_sampling()
    keep = []

    def leaky_function():
        for _ in range(20000):
            keep.append(bytearray(1000))

    def churn_function():
        for _ in range(20000):
            bytearray(1000)

    leaky_function()
    churn_function()
    prof = memwatch.take_heap_profile()
    prof.write_pprof(path)
    memwatch.stop_sampling()
    return {"total": prof.total_size}


if __name__ == "__main__":
    name = sys.argv[1]
    fn = {"threads": threads, "asyncio": asyncio_scenario, "fork": fork_scenario,
          "restart": restart, "chained": chained, "removed": removed,
          "pprof": lambda: leak_for_pprof(sys.argv[2])}[name]
    print(json.dumps(fn()))
