"""A job worker (Celery-like, plain Python) leaking one object per job.

Jobs arrive as JSON lines on a loopback TCP socket (the harness's load
generator is the producer); a feeder thread puts them on a queue and the main
thread's worker loop runs them one by one, like a broker consumer.
Leaky (``SERVICE_LEAK=1``): every job's ``JobRecord`` is appended to a
module-level "history" that nothing ever trims.  Clean twin: the history keeps
the last 500 jobs.

Usage: ``python worker_jobs.py PORT``.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import socket
import sys
import threading

import _mw

_mw.install()

LEAK = os.environ.get("SERVICE_LEAK") == "1"
HISTORY: list | collections.deque = [] if LEAK else collections.deque(maxlen=500)


class JobRecord:
    __slots__ = ("job_id", "kind", "args", "result")

    def __init__(self, job_id, kind, args, result) -> None:
        self.job_id = job_id
        self.kind = kind
        self.args = args
        self.result = result


def run_job(job: dict) -> JobRecord:
    args = job["args"]
    total = sum(args)
    result = {"sum": total, "digest": f"{total:08x}" * 64, "ok": True}
    return JobRecord(job["id"], job["kind"], tuple(args), result)


def feed(conn: socket.socket, jobs: queue.Queue) -> None:
    with conn, conn.makefile("rb") as lines:
        for line in lines:
            jobs.put(json.loads(line))   # blocks when the worker lags: backpressure


def accept(server: socket.socket, jobs: queue.Queue) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=feed, args=(conn, jobs), daemon=True).start()


def main() -> None:
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    jobs: queue.Queue = queue.Queue(maxsize=1000)
    threading.Thread(target=accept, args=(server, jobs), daemon=True, name="feeder").start()
    while True:
        job = jobs.get()
        HISTORY.append(run_job(job))


if __name__ == "__main__":
    main()
