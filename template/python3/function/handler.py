def handle(req):
    """Called once per request, in a fresh process.

    req is the request body: a str, or bytes when RAW_BODY=true. Return a str, bytes,
    a JSON-able value, a dict with statusCode/body/headers, or (body, status, headers).
    Secrets: from fwatchdog_sdk import get_secret; get_secret("name").
    """
    return req
