"""memwatch demo: a small service leaks, and memwatch finds what and who.

A request handler keeps every session it creates in a module-level cache that
is never pruned (the leak), while doing ordinary work that allocates and frees
plenty (the noise).  The demo then does what you would do with a real service:

1. the tracker watches the base heap after full collections and fires a
   ``leak`` event once the growth is sustained (time scales shortened here so
   that the demo takes seconds, not minutes);
2. a HeapDiff around a batch of requests names the leaking class (+N, -0);
3. ``memwatch.retainers()`` shows who holds one of the leaked objects.
"""
from __future__ import annotations

import json
import random
import sys
import time

import memwatch
from memwatch.formatting import format_heapdiff

SESSIONS: dict[int, "Session"] = {}      # the leak: nothing ever removes entries


class Session:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.token = f"token-{user_id:08d}-{random.random():.12f}"
        self.history: list[str] = []


def handle_request(request_id: int) -> str:
    session = Session(request_id)
    SESSIONS[request_id] = session                     # leaked
    payload = {"id": request_id, "items": [random.random() for _ in range(20)]}
    body = json.dumps(payload)                         # freed when we return
    session.history.append(body[:16])
    return body


def wait_for_leak_event(next_id: int, timeout: float = 60.0) -> tuple[dict | None, int]:
    """Serve requests until the tracker reports a leak (or the timeout)."""
    events: list[dict] = []
    memwatch.on("leak", events.append)
    memwatch.on("stats", lambda s: print(
        f"  stats: current_base {memwatch.format_size(s['current_base'])}, "
        f"estimated_base {memwatch.format_size(s['estimated_base'])}, "
        f"usage_trend {s['usage_trend']:+.1f}%"))
    deadline = time.monotonic() + timeout
    while not events and time.monotonic() < deadline:
        for _ in range(1_000):
            handle_request(next_id)
            next_id += 1
        time.sleep(0.05)                               # the service idles a little
    memwatch.stop()
    return (events[0] if events else None), next_id


def main() -> int:
    for i in range(1_000):                             # warm up: imports, caches
        handle_request(-i - 1)

    print("1. Watching the heap after each full collection (time scales x0.1 for the demo)")
    memwatch.start(time_scale=0.1)
    leak, next_id = wait_for_leak_event(0)
    if leak is None:
        print("   no leak event within the timeout (is the machine very busy?)")
    else:
        print(f"\n   leak event: {leak['reason']}")
        print(f"   growth {memwatch.format_size(leak['growth'])} from {leak['start']:%H:%M:%S} "
              f"to {leak['end']:%H:%M:%S} UTC")
        for row in leak.get("top_types", [])[:3]:
            print(f"   grew most: {row['what']} {row['count_change']:+d} objects, "
                  f"{memwatch.format_size(row['size_change'])}")

    print("\n2. A HeapDiff around 5,000 requests names the leaking class")
    hd = memwatch.HeapDiff()
    for _ in range(5_000):
        handle_request(next_id)
        next_id += 1
    diff = hd.end()
    print(format_heapdiff(diff, limit=6))
    # Builtin rows (str, list, ...) are what the leaked objects hold; the
    # application type that was only ever allocated is the leak itself.
    suspects = [d for d in diff["change"]["details"]
                if "." in d["what"] and not d["what"].startswith("memwatch.") and d["-"] == 0]
    suspect = max(suspects, key=lambda d: d["+"])
    print(f"\n   Leak found: {suspect['what']} +{suspect['+']} allocated, -{suspect['-']} freed "
          f"({suspect['size']}): one per request, never released.")

    print("\n3. Who holds it: the shortest path from a root to one leaked Session")
    newest = SESSIONS[next_id - 1]
    for path in memwatch.retainers(newest, limit=1):
        print(f"   {path}")
    del newest

    census = memwatch.census()
    print(f"\nWhole heap now: {census.total_count} objects, "
          f"{memwatch.format_size(census.total_size)} (census took {census.elapsed * 1000:.1f} ms)")
    return 0 if leak is not None else 1


if __name__ == "__main__":
    sys.exit(main())
