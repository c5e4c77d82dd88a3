"""sse-clock: a Server-Sent Events stream of the time, one event per interval.

GET /?count=N&interval=S  (defaults 10 events, 1 s apart; at most 600 events, 0.1-60 s).
The handler returns a generator: the python3-http template sends each event as its own
chunk and fwatchdog (http mode) flushes it to the client at once.
"""

import datetime
import time


def _number(query, name, default, cast, low, high):
    try:
        value = cast(query.get(name, default))
    except ValueError:
        raise ValueError("%s must be a number" % name)
    if not low <= value <= high:
        raise ValueError("%s must be between %s and %s" % (name, low, high))
    return value


def handle(event, context):
    try:
        count = _number(event.query, "count", "10", int, 1, 600)
        interval = _number(event.query, "interval", "1", float, 0.1, 60)
    except ValueError as e:
        return {"statusCode": 400, "body": "%s\n" % e}

    def events():
        yield "retry: 3000\n\n"
        for i in range(1, count + 1):
            if i > 1:
                time.sleep(interval)
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
            yield "id: %d\nevent: tick\ndata: %s\n\n" % (i, now)

    return {
        "statusCode": 200,
        "headers": {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        "body": events(),
    }
