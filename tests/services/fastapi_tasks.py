"""FastAPI under uvicorn: finished ``asyncio`` tasks kept in a set.

``POST``-free on purpose (``GET /report/<n>``): each request starts a
background task that "audits" the request and returns its summary.  The
asyncio docs say to keep a reference to such tasks so they are not collected
mid-flight; the leaky app (``SERVICE_LEAK=1``) keeps them in a module-level
set and never removes them, so every finished task (and the result it holds)
stays.  Clean twin: the docs' recipe, ``task.add_done_callback(TASKS.discard)``.
"""
from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI

import _mw

_mw.install()

LEAK = os.environ.get("SERVICE_LEAK") == "1"
app = FastAPI()
TASKS: set[asyncio.Task] = set()


async def audit(n: int) -> dict:
    await asyncio.sleep(0)
    return {"report": n, "lines": [f"line {i} of report {n}" for i in range(24)]}


@app.get("/report/{n}")
async def report(n: int):
    task = asyncio.create_task(audit(n))
    TASKS.add(task)
    if not LEAK:
        task.add_done_callback(TASKS.discard)
    return {"report": n, "queued": True}
