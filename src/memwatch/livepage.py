"""The live page (``GET /ah/ui``): a self-contained HTML page for a running service.

One static file, ``livepage.html`` (package data): no CDN, no fonts, no
network beyond the API of the server that served it.  It polls
``GET /ah/history`` and ``GET /ah/memoryProfile/status`` and draws the chart of
``current_base``, ``estimated_base`` and RSS with the leak events marked; its
buttons call the same routes as curl would (census, HeapDiff, retainers,
snapshot download, ``GET /ah/profile`` when the sampling profiler answers).

The page itself holds no data, so it is served without the token; its script
reads the token from the URL fragment (``/ah/ui#token=...``: a fragment is
never sent to the server, so it stays out of access logs), keeps it in the
tab's ``sessionStorage``, removes it from the address bar and sends it as
``Authorization: Bearer``.  ``Referrer-Policy: no-referrer`` keeps the URL out
of any Referer, and the Content-Security-Policy allows only this page's own
script (by hash) and requests to its own origin.
"""
from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Any

__all__ = ["page_html", "page_answer", "ui_url"]

_cache: dict[str, Any] = {}


def page_html() -> bytes:
    """The page's bytes (read once from the package)."""
    html = _cache.get("html")
    if html is None:
        html = resources.files("memwatch").joinpath("livepage.html").read_bytes()
        _cache["html"] = html
    return html


def _csp(html: bytes) -> str:
    # Hash every inline script, so the policy needs no 'unsafe-inline' for scripts.
    hashes = []
    for m in re.finditer(rb"<script>(.*?)</script>", html, re.S):
        digest = base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
        hashes.append(f"'sha256-{digest}'")
    return ("default-src 'none'; script-src " + " ".join(hashes) + "; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def page_answer() -> Any:
    """The ``GET /ah/ui`` answer for :mod:`memwatch.httpapi`."""
    from memwatch.httpapi import RawAnswer
    html = page_html()
    csp = _cache.get("csp")
    if csp is None:
        csp = _cache["csp"] = _csp(html)
    return RawAnswer(html, "text/html; charset=utf-8",
                     [("Content-Security-Policy", csp), ("X-Frame-Options", "DENY")])


def ui_url(base_url: str) -> str:
    """The live page's address under a server's base URL (without the token)."""
    return base_url.rstrip("/") + "/ah/ui"
