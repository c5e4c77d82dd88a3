#!/usr/bin/env python3
"""python3 template entry point (fwatchdog mode=serializing, one process per request).

fwatchdog runs `python3 index.py` for each request with the body on stdin. The classic
OpenFaaS handler signature is kept:

    def handle(req):
        return "Hello " + req

req is a str (the body decoded as UTF-8), or bytes when RAW_BODY=true. A body that is not
valid UTF-8 without RAW_BODY gets a 400. The return value becomes the response (see
fwatchdog_sdk.normalize_result: str, bytes, dict/list as JSON, a dict with
statusCode/body/headers, or a (body, status[, headers]) tuple). The response is written
with CGI headers (cgi_response=true), so handlers choose the status and headers.
Request metadata is in the environment: Http_Method, Http_Path, Http_Query, Http_<Header>.
"""

import os
import sys
import traceback

from fwatchdog_sdk import normalize_result, raw_body_enabled, text_error, write_cgi_response


def main():
    raw = sys.stdin.buffer.read()
    if raw_body_enabled():
        req = raw
    else:
        try:
            req = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            write_cgi_response(*text_error(
                400,
                "request body is not valid UTF-8 (byte %d); send text, or set RAW_BODY=true "
                "to receive the body as bytes" % e.start))
            return 0
    try:
        from function import handler

        result = handler.handle(req)
        response = normalize_result(result, default_content_type=os.environ.get("content_type"))
    except Exception as e:
        traceback.print_exc()
        write_cgi_response(*text_error(
            500, "function handler failed: %s (see the function's logs)" % type(e).__name__))
        return 0  # the status is in the CGI header; fwatchdog would send a failed run's output raw
    write_cgi_response(*response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
