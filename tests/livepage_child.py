"""A leaking service for the live page's browser test (tests/test_livepage_browser.py).

Serves memwatch's HTTP API with a token, prints ``READY <url> <token>``, then
keeps ``LeakyRecord`` objects in ``STORE.records`` (its holder) while doing
ordinary churn and full collections, so the tracker sends ``stats`` events
(the chart's points) and, soon, a ``leak`` event.  Exits when stdin closes
or after ``--seconds``.  With ``--sample`` it samples its allocations
(``memwatch.start_sampling()``), so ``GET /ah/profile`` answers and the page's
allocation-sites panel shows the leaking line.
"""
from __future__ import annotations

import argparse
import gc
import secrets
import sys
import threading
import time

import memwatch


class LeakyRecord:
    # 40 slots: 336 bytes an instance, so the leaking class is the diff's largest row.
    __slots__ = tuple(f"f{i}" for i in range(40))

    def __init__(self, n: int) -> None:
        self.f0 = n


class RecordStore:
    def __init__(self) -> None:
        self.records: list[LeakyRecord] = []


STORE = RecordStore()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--rate", type=int, default=300, help="records leaked every 0.1 s")
    ap.add_argument("--sample", action="store_true", help="sample allocations (the profile panel)")
    args = ap.parse_args()
    if args.sample:
        # One sample per 16 kb on average: ~60 a second from the ~1 mb/s leak.
        memwatch.start_sampling(interval=16 * 1024, seed=1)
    # Durations scaled down twenty times: the leak verdict sees 20 s in 1 s.
    memwatch.configure(time_scale=0.05, measure="python")
    token = secrets.token_urlsafe(16)
    server = memwatch.serve(port=0, token=token)
    print(f"READY {server.url} {token}", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    deadline = time.monotonic() + args.seconds
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        STORE.records.extend(LeakyRecord(n + i) for i in range(args.rate))  # the leaking line
        n += args.rate
        garbage = [{"k": i} for i in range(200)]   # churn that is freed again
        del garbage
        gc.collect()
        stop.wait(0.1)
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
