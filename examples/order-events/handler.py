"""order-events: consumes com.example.order.created CloudEvents and replies with a
com.example.order.confirmed event holding the order's total.

    {"order": "A-17", "items": [{"sku": "tea", "qty": 2, "price": 3.5}]}
    -> {"order": "A-17", "items": 1, "total": 7.0}

An order event without a well-formed list of items cannot get better by being delivered
again, so it is dropped (DropEvent: 400, which the broker does not retry). Other event types
are accepted without a reply (202).
"""

import math

from fwatchdog_events import DropEvent

CREATED = "com.example.order.created"
CONFIRMED = "com.example.order.confirmed"


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DropEvent("%s must be a number of at least 0, got %r" % (what, value))
    return value


def handle(event):
    if event.type != CREATED:
        return None
    order = event.data
    if not isinstance(order, dict) or not isinstance(order.get("items"), list):
        raise DropEvent("the data must be an object with a list of items")
    total = 0
    for i, item in enumerate(order["items"]):
        if not isinstance(item, dict):
            raise DropEvent("item %d is not an object" % i)
        total += _number(item.get("qty"), "item %d qty" % i) * _number(item.get("price"), "item %d price" % i)
    reply = {"order": order.get("order", event.subject), "items": len(order["items"]), "total": round(total, 2)}
    return reply, CONFIRMED
