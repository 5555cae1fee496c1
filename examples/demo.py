"""memwatch demo: a small service leaks, and memwatch names what leaks.

A request handler keeps every session it creates in a module-level cache that
is never pruned (the leak), while doing ordinary work that allocates and frees
plenty (the noise).  A HeapDiff around a batch of requests shows the leaking
class at the top, with +N allocated and 0 freed.
"""
from __future__ import annotations

import json
import random

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


def main() -> None:
    for i in range(1_000):                             # warm up: imports, caches
        handle_request(-i - 1)
    print("memwatch demo: 5,000 requests, each leaking one Session\n")
    hd = memwatch.HeapDiff()
    for i in range(5_000):
        handle_request(i)
    diff = hd.end()
    print(format_heapdiff(diff, limit=8))
    # Builtin rows (str, list, ...) are what the leaked objects hold; the
    # application type that was only ever allocated is the leak itself.
    suspects = [d for d in diff["change"]["details"]
                if "." in d["what"] and not d["what"].startswith("memwatch.") and d["-"] == 0]
    suspect = max(suspects, key=lambda d: d["+"])
    print(f"\nLeak found: {suspect['what']} +{suspect['+']} allocated, -{suspect['-']} freed "
          f"({suspect['size']}), one per request, never released; the str and list rows "
          f"above are what those sessions hold.")
    census = memwatch.census()
    print(f"\nWhole heap now: {census.total_count} objects, "
          f"{memwatch.format_size(census.total_size)} (census took {census.elapsed * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
