"""Django (``DEBUG = True``, sqlite) under gunicorn: a signal receiver connected per request.

Every request runs three queries.  With ``DEBUG = True`` Django logs every
query (``connection.queries``), the classic "DEBUG leaks memory" of old
Djangos; today that log is a deque bounded at 9000 queries per connection and
cleared when each request starts (``request_started`` -> ``reset_queries``),
so in both twins it stays small and must not be reported.  (Queries run
outside the request cycle, or on another thread's connection, are not
cleared: such a log fills to its bound, about 0.75 KB a query here;
benchmarks/bench_services.py does not cover that case.)

Leaky (``SERVICE_LEAK=1``): the view also subscribes an ``OrderWatcher`` to
the ``order_shipped`` signal for each order with ``weak=False`` and never
disconnects it: the signal's receiver list keeps every one.  Clean twin: one
watcher, connected once (``dispatch_uid``).
"""
from __future__ import annotations

import os

import django
from django.conf import settings

import _mw

settings.configure(
    DEBUG=True,
    SECRET_KEY="memwatch-service-scenario",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
)
django.setup()
_mw.install()

from django.db import connection          # noqa: E402
from django.dispatch import Signal         # noqa: E402
from django.http import JsonResponse       # noqa: E402
from django.urls import path               # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

LEAK = os.environ.get("SERVICE_LEAK") == "1"
order_shipped = Signal()

# What an ORM query of a real model looks like in the query log.
_COLUMNS = ", ".join(f'"shop_order"."field_{i}"' for i in range(12))
_VALUES = ", ".join(f'{i} AS "field_{i}"' for i in range(12))
_SQL = f'SELECT {_COLUMNS}, %s AS "order_id" FROM (SELECT {_VALUES}) AS "shop_order" LIMIT 21'


class OrderWatcher:
    """Would mail the customer when the order ships."""

    def __init__(self, order_id: int) -> None:
        self.order_id = order_id
        self.channel = {"kind": "email", "template": "order-shipped", "order": order_id}
        self.context = [f"line {i} of the mail about order {order_id}" for i in range(16)]

    def __call__(self, sender, **kwargs) -> None:
        pass


def load_order(order_id: int) -> list:
    with connection.cursor() as cursor:
        rows = []
        for _ in range(3):
            cursor.execute(_SQL, [order_id])
            rows.append(cursor.fetchone())
        return rows


def order(request, order_id: int):
    rows = load_order(order_id)
    if LEAK:
        order_shipped.connect(OrderWatcher(order_id), weak=False)
    elif not order_shipped.receivers:
        order_shipped.connect(OrderWatcher(0), weak=False, dispatch_uid="order-watcher")
    return JsonResponse({"order": order_id, "columns": len(rows[0])})


urlpatterns = [path("order/<int:order_id>", order)]
application = get_wsgi_application()
