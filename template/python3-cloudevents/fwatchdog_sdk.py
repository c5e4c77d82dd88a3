"""Helpers for Python functions run by fwatchdog (shipped with the python templates).

    from fwatchdog_sdk import get_secret
    api_key = get_secret("api-key")

Only the standard library is used.
"""

import json
import os
import sys
from http import HTTPStatus

__all__ = ["get_secret", "SecretNotFound", "is_true", "raw_body_enabled", "normalize_result"]

DEFAULT_SECRET_MOUNT_PATH = "/var/openfaas/secrets"
DOCKER_SECRETS_PATH = "/run/secrets"

_MISSING = object()


class SecretNotFound(FileNotFoundError):
    """Raised by get_secret() when no candidate file exists."""


def secret_paths(name):
    """The files get_secret(name) tries, in order."""
    base = os.environ.get("secret_mount_path") or DEFAULT_SECRET_MOUNT_PATH
    return [
        os.path.join(base, name),  # OpenFaaS / Kubernetes projected volume
        os.path.join(base, name, name),  # faas-cli generate for Knative (one dir per secret)
        os.path.join(DOCKER_SECRETS_PATH, name),  # Docker / Compose secrets
    ]


def get_secret(name, default=_MISSING):
    """Return the value of secret `name`, surrounding white space trimmed.

    Lookup order: $secret_mount_path/NAME (default /var/openfaas/secrets),
    $secret_mount_path/NAME/NAME, /run/secrets/NAME. The file is read on every call, so a
    rotated secret is picked up. Raises SecretNotFound unless `default` is given.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError("invalid secret name: %r" % (name,))
    tried = secret_paths(name)
    for path in tried:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read().decode("utf-8").strip()
    if default is not _MISSING:
        return default
    raise SecretNotFound("secret %r not found (tried %s)" % (name, ", ".join(tried)))


def is_true(value):
    """The watchdog's boolean: true/1/yes/on, any case."""
    return str(value or "").strip().lower() in ("true", "1", "yes", "on")


def raw_body_enabled():
    """True when RAW_BODY asks for the request body as bytes."""
    return is_true(os.environ.get("RAW_BODY"))


def _header_items(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _has_header(items, name):
    name = name.lower()
    return any(k.lower() == name for k, _ in items)


def _is_stream(value):
    if isinstance(value, (str, bytes, bytearray, memoryview, dict, list, tuple)):
        return False
    return hasattr(value, "__iter__") or hasattr(value, "__next__")


def normalize_result(result, default_content_type=None, allow_stream=False):
    """Turn a handler's return value into (status, [(header, value)], body).

    body is bytes, or an iterator of str/bytes chunks when allow_stream is true.

    Accepted return values:
      None                      -> 200, empty body
      str                       -> 200 text/plain; charset=utf-8
      bytes                     -> 200 application/octet-stream
      list, or dict without the keys below -> 200 application/json
      dict with statusCode / body / headers -> that status, body and headers
      (body, status) or (body, status, headers)  (Flask style)
      an iterator or generator  -> streamed (python3-http only)
    """
    status = 200
    headers = []
    body = result
    if isinstance(result, tuple):
        if not 1 <= len(result) <= 3:
            raise TypeError("a tuple result must be (body, status) or (body, status, headers)")
        body = result[0]
        if len(result) > 1:
            status = int(result[1])
        if len(result) > 2:
            headers = _header_items(result[2])
    elif isinstance(result, dict) and ({"statusCode", "body", "headers"} & set(result)):
        status = int(result.get("statusCode", 200))
        headers = _header_items(result.get("headers"))
        body = result.get("body")

    content_type = None
    if body is None:
        payload = b""
    elif isinstance(body, str):
        payload = body.encode("utf-8")
        content_type = default_content_type or "text/plain; charset=utf-8"
    elif isinstance(body, (bytes, bytearray, memoryview)):
        payload = bytes(body)
        content_type = default_content_type or "application/octet-stream"
    elif isinstance(body, (dict, list, int, float, bool)):
        payload = json.dumps(body).encode("utf-8")
        content_type = "application/json"
    elif allow_stream and _is_stream(body):
        payload = iter(body)
        content_type = default_content_type or "application/octet-stream"
    else:
        payload = str(body).encode("utf-8")
        content_type = default_content_type or "text/plain; charset=utf-8"

    if content_type and payload != b"" and not _has_header(headers, "content-type"):
        headers.append(("Content-Type", content_type))
    if not 100 <= status <= 999:
        raise ValueError("invalid status code %d" % status)
    return status, headers, payload


def reason_phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status %d" % status


def write_cgi_response(status, headers, body, out=None):
    """Write an RFC 3875 response (read by fwatchdog with cgi_response=true) to stdout."""
    out = out or sys.stdout.buffer
    lines = ["Status: %d %s" % (status, reason_phrase(status))]
    for k, v in headers:
        if "\n" in k or "\r" in k or "\n" in v or "\r" in v:
            raise ValueError("header %r contains a line break" % k)
        lines.append("%s: %s" % (k, v))
    out.write(("\n".join(lines) + "\n\n").encode("latin-1"))
    out.write(body)
    out.flush()


def text_error(status, message):
    """A one-line plain-text error response."""
    return status, [("Content-Type", "text/plain; charset=utf-8")], (message + "\n").encode("utf-8")
