def handle(event, context):
    """Called once per request.

    event.body is a str (bytes when RAW_BODY=true); also event.headers, event.method,
    event.query, event.path. Return a dict (statusCode, body, headers), a str, bytes,
    a JSON-able value, or a generator to stream the body.
    Secrets: from fwatchdog_sdk import get_secret; get_secret("name").
    """
    if event.method in ("GET", "HEAD") and not event.body:
        return {
            "statusCode": 200,
            "body": "Hello from fwatchdog python3-http\n",
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
        }
    # Echo the request body back, with the request's Content-Type.
    return {
        "statusCode": 200,
        "body": event.body,
        "headers": {"Content-Type": event.headers.get("Content-Type", "application/octet-stream")},
    }
