def handle(req):
    """Called once per request, in a process that serves request after request (worker mode).

    req is the request body: a str, or bytes when RAW_BODY=true. Return a str, bytes,
    a JSON-able value, a dict with statusCode/body/headers, or (body, status, headers).
    Module-level code runs once per process: open clients and load models there. Request
    metadata is in os.environ (Http_Method, Http_Path, Http_Query, Http_<Header>); print()
    goes to the function's log. Secrets: from fwatchdog_sdk import get_secret.
    """
    return req
