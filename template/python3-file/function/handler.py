import os

CONTENT_TYPES = {".json": "application/json", ".txt": "text/plain; charset=utf-8"}


def handle(input_file):
    """Called once per request with the path of the file holding the request body.

    The file is input.json, input.txt or input.bin (by Content-Type) in a private
    directory that is removed after the request. Return a str, bytes, a JSON-able value,
    a dict with statusCode/body/headers, or (body, status, headers).
    Secrets: from fwatchdog_sdk import get_secret; get_secret("name").
    """
    name = os.path.basename(input_file)
    if os.path.getsize(input_file) == 0:
        return {"file": name, "bytes": 0}
    # Echo the file back unchanged, typed by its name.
    with open(input_file, "rb") as f:
        data = f.read()
    return data, 200, {"Content-Type": CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")}
