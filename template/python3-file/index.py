#!/usr/bin/env python3
"""python3-file template entry point (fwatchdog mode=file).

For each request fwatchdog writes the body to a private file under $TMPDIR
(input.json for JSON bodies, input.txt for text/*, input.bin otherwise) and runs
`python3 index.py <that path>`. The handler gets the path:

    def handle(input_file):
        with open(input_file) as f:
            ...
        return {"lines": n}

Without RAW_BODY a text or JSON body must be valid UTF-8 (else 400), so the handler may
open the file in text mode; with RAW_BODY=true the bytes are handed over unchecked. The
return value becomes the response (see fwatchdog_sdk.normalize_result). A handler that
returns None and writes os.environ["OUTPUT_FILE"] instead makes that file the response.
"""

import os
import sys
import traceback

from fwatchdog_sdk import normalize_result, raw_body_enabled, text_error, write_cgi_response

TEXT_SUFFIXES = (".json", ".txt")


def main():
    input_file = sys.argv[-1] if len(sys.argv) > 1 else os.environ.get("INPUT_FILE")
    if not input_file or not os.path.isfile(input_file):
        write_cgi_response(*text_error(500, "no input file given (expected as last argument or INPUT_FILE)"))
        return 0
    if not raw_body_enabled() and input_file.endswith(TEXT_SUFFIXES):
        with open(input_file, "rb") as f:
            data = f.read()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            write_cgi_response(*text_error(
                400,
                "request body is not valid UTF-8 (byte %d); send text, or set RAW_BODY=true "
                "to receive the body as bytes" % e.start))
            return 0
    try:
        from function import handler

        result = handler.handle(input_file)
        if result is None:
            return 0  # the response is OUTPUT_FILE if the handler wrote it, else empty
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
