"""CloudEvents for handlers of the python3-cloudevents template (standard library only).

fwatchdog (cloudevents=true) has already decoded the event: its attributes arrive as
CE_<NAME> variables in the worker's request head, its data as the body. This module turns
them into an Event for handle(event), and the handler's return value into the reply.

    from fwatchdog_events import DropEvent

    def handle(event):
        if "order" not in event.data:
            raise DropEvent("no order in the event")   # 400: the broker does not retry
        return {"confirmed": event.data["order"]}, "com.example.order.confirmed"
"""

import json
import os
import unicodedata
import urllib.parse

__all__ = ["Event", "DropEvent", "NotAnEvent", "event_from_head", "reply_of"]

STANDARD = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema")


class DropEvent(Exception):
    """Raise it from handle(event) to drop an event for good: the answer is 400, which
    Knative does not retry (any other exception is a 500, which it retries)."""


class NotAnEvent(Exception):
    """The request was not a CloudEvent (the watchdog passes plain requests on)."""


class Event:
    """One CloudEvent: the attributes as properties, the rest in extensions, the data."""

    def __init__(self, attributes, data_bytes, raw_body=False):
        self.attributes = dict(attributes)
        self.specversion = self.attributes.get("specversion")
        self.id = self.attributes.get("id")
        self.source = self.attributes.get("source")
        self.type = self.attributes.get("type")
        self.subject = self.attributes.get("subject")
        self.time = self.attributes.get("time")
        self.datacontenttype = self.attributes.get("datacontenttype")
        self.dataschema = self.attributes.get("dataschema")
        self.extensions = {k: v for k, v in self.attributes.items() if k not in STANDARD}
        self.data_bytes = data_bytes
        self.data = data_bytes if raw_body else decode_data(data_bytes, self.datacontenttype)

    def __repr__(self):
        return "Event(type=%r, source=%r, id=%r)" % (self.type, self.source, self.id)


def media_essence(content_type):
    return (content_type or "").split(";")[0].strip().lower()


def is_json(content_type):
    essence = media_essence(content_type)
    return essence == "application/json" or ("/" in essence and essence.endswith("+json"))


def decode_data(raw, content_type):
    """JSON types parsed, text/* decoded as UTF-8, anything else bytes. Without a type, data
    that parses as JSON is taken as JSON (the JSON format's default), else as bytes. Data
    that does not match its own type is the sender's error: DropEvent (400)."""
    if content_type is None:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    if is_json(content_type):
        try:
            return json.loads(raw) if raw else None
        except ValueError as e:
            raise DropEvent("the data is not the JSON its datacontenttype says (%s)" % e)
    if media_essence(content_type).startswith("text/"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DropEvent("the data is not UTF-8 text (byte %d); set RAW_BODY=true for bytes" % e.start)
    return raw


def event_from_head(env, body, raw_body=False):
    """The Event of a worker request: CE_<NAME> variables of the head's env, and the body."""
    attributes = {k[3:].lower(): v for k, v in env.items() if k.startswith("CE_")}
    if "id" not in attributes:
        raise NotAnEvent("not a CloudEvent: send one in binary or structured mode")
    return Event(attributes, body, raw_body)


def reply_of(result, default_content_type=None):
    """(headers, body) of the reply for handle(event)'s return value: data, (data, type), or
    None (no reply: an empty answer, which the watchdog sends as 202)."""
    reply_type = None
    if isinstance(result, tuple):
        if len(result) != 2:
            raise TypeError("a tuple result must be (data, type)")
        result, reply_type = result
    headers = []
    if result is None:
        body = b""
    elif isinstance(result, (bytes, bytearray, memoryview)):
        body = bytes(result)
        headers.append(("Content-Type", default_content_type or "application/octet-stream"))
    elif isinstance(result, str):
        body = result.encode("utf-8")
        headers.append(("Content-Type", default_content_type or "text/plain; charset=utf-8"))
    else:
        body = json.dumps(result).encode("utf-8")
        headers.append(("Content-Type", "application/json"))
    if reply_type is not None:
        reply_type = str(reply_type)
        if not reply_type or any(unicodedata.category(c) == "Cc" for c in reply_type):
            raise ValueError("invalid reply type %r" % (reply_type,))
        headers.append(("Ce-Type", encode_header(reply_type)))
    return headers, body


# The HTTP binding (1.0.2, section 3.1.3.2): printable ASCII is sent as it is, except space,
# double quote and percent, which are percent-encoded with everything else.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')


def encode_header(value):
    """An attribute's value as a binary-mode header value."""
    return urllib.parse.quote(value, safe=_SAFE)


def raw_body_enabled():
    return str(os.environ.get("RAW_BODY") or "").strip().lower() in ("true", "1", "yes", "on")
