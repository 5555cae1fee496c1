"""20 MB live at line A, 5 MB live at line B, 50 MB allocated and freed at
line C; prints the sampled estimates and tracemalloc's exact numbers as JSON.

argv: interval|default  order (sampling-first | tracemalloc-first) [seed]
"""
import json
import sys
import tracemalloc

import memwatch

from _rows import rows_by_line

MB = 1000 * 1000


def site_a(keep):
    for i in range(20 * MB // 1000):
        keep.append(bytearray(1000 - 57 + i % 3 - 1))   # LINE A


def site_b(keep):
    for i in range(5 * MB // 200):
        keep.append(str(i).rjust(200 - 49 - 8, "b") + "12345678")   # LINE B


def site_c():
    junk = []
    for i in range(50 * MB // 500):
        junk.append(bytes(500 - 33))   # LINE C
        if len(junk) > 100:
            junk.clear()


def main():
    interval = sys.argv[1]
    order = sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else None
    kwargs = {} if interval == "default" else {"interval": int(interval)}
    if order == "tracemalloc-first":
        tracemalloc.start(1)
        memwatch.start_sampling(seed=seed, **kwargs)
    else:
        memwatch.start_sampling(seed=seed, **kwargs)
        tracemalloc.start(1)
    keep_a, keep_b = [], []
    site_a(keep_a)
    site_b(keep_b)
    site_c()
    snap = tracemalloc.take_snapshot()
    prof = memwatch.take_heap_profile()
    exact = {}
    for st in snap.statistics("lineno"):
        fr = st.traceback[0]
        if fr.filename == __file__:
            exact[fr.lineno] = st.size
    est = rows_by_line(prof, __file__)
    src = open(__file__).read().splitlines()
    lines = {tag: src.index(next(l for l in src if l.endswith("# LINE " + tag))) + 1
             for tag in "ABC"}
    print(json.dumps({"lines": lines, "exact": exact, "est": est,
                      "info": prof.info, "interval": prof.interval}))
    if order == "tracemalloc-first":
        memwatch.stop_sampling()
        tracemalloc.stop()
    else:
        tracemalloc.stop()
        memwatch.stop_sampling()


main()
