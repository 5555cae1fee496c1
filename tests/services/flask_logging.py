"""Flask under waitress: a ``logging`` handler added per request.

Leaky (``SERVICE_LEAK=1``): the request's helper "configures" its audit
logger every time it is called, adding one more ``logging.StreamHandler``
(and logging keeps a weak reference to each in ``logging._handlerList``).
The handlers only take warnings, so the info line each request logs does not
multiply the output; the handlers pile up silently.  Clean twin: the handler
is added once, at import.
"""
from __future__ import annotations

import logging
import os

from flask import Flask

import _mw

_mw.install()

LEAK = os.environ.get("SERVICE_LEAK") == "1"
app = Flask(__name__)
_SINK = open(os.devnull, "w")   # noqa: SIM115 - lives as long as the server
audit = logging.getLogger("service.audit")
audit.setLevel(logging.INFO)
audit.propagate = False


def audit_logger() -> logging.Logger:
    if LEAK or not audit.handlers:
        handler = logging.StreamHandler(_SINK)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        audit.addHandler(handler)
    return audit


@app.get("/order/<int:n>")
def order(n: int):
    audit_logger().info("order %d served", n)
    return {"order": n, "status": "ok"}


if __name__ == "__main__":
    import waitress
    import sys
    waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=4,
                   _quiet=True)
