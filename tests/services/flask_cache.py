"""Flask under gunicorn: the classic module-level cache filled per request.

``/page/<item>?v=<nonce>`` renders a page and memoises it by the full URL.
Leaky (``SERVICE_LEAK=1``): the cache is a plain module-level dict, and since
every client adds its own query string, every request adds an entry that is
never read again.  Clean twin: the same memo, bounded (the last 256 URLs).
"""
from __future__ import annotations

import collections
import os

from flask import Flask, request

import _mw

_mw.install()

LEAK = os.environ.get("SERVICE_LEAK") == "1"
app = Flask(__name__)


class RenderedPage:
    """What the memo keeps: the body and the headers of one rendered page."""

    __slots__ = ("url", "body", "headers")

    def __init__(self, url: str, body: str, headers: dict) -> None:
        self.url = url
        self.body = body
        self.headers = headers


class BoundedMemo(collections.OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if len(self) > self.limit:
            self.popitem(last=False)


_PAGES: dict[str, RenderedPage] = {} if LEAK else BoundedMemo(256)


def render(item: int) -> str:
    rows = "".join(f"<li>{item}-{i}: {'x' * 40}</li>" for i in range(96))
    return f"<html><body><h1>item {item}</h1><ul>{rows}</ul></body></html>"


@app.get("/page/<int:item>")
def page(item: int):
    url = request.full_path
    cached = _PAGES.get(url)
    if cached is None:
        cached = RenderedPage(url, render(item), {"Content-Type": "text/html",
                                                  "X-Item": str(item)})
        _PAGES[url] = cached
    return cached.body, 200, cached.headers
