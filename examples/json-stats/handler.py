"""json-stats: POST a JSON list of numbers, get back its count, sum and average.

fwatchdog (file mode) writes the body to a file; the handler reads that file.
"""

import json
import math


def _error(status, message):
    return {"error": message}, status


def handle(input_file):
    with open(input_file, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return _error(400, "the body must be a JSON list of numbers: %s" % e)
    if not isinstance(data, list):
        return _error(400, "the body must be a JSON list of numbers, got %s" % type(data).__name__)
    for i, x in enumerate(data):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return _error(400, "item %d is not a finite number: %s" % (i, json.dumps(x)))
    total = sum(data)
    return {"count": len(data), "sum": total, "average": total / len(data) if data else None}
