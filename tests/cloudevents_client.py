#!/usr/bin/env python3
"""CloudEvents checks against a running fwatchdog, with the CloudEvents Python SDK (PyPI
`cloudevents`) as the client: it builds every event (binary and structured mode, binary
data as data_base64) and parses every reply. Driven by tests/cloudevents.rs, which starts
the watchdog with tests/cloudevents_fn.py behind it.

Usage: cloudevents_client.py --port N --mode MODE --source SOURCE --log RUN_LOG [--quick]

MODE is streaming, serializing, file, worker or http (http: tests/upstream.py's /echo
behind the watchdog). Exit 0 when every check passed, 1 otherwise, 2 when the cloudevents
package is missing.
"""

import argparse
import base64
import http.client
import json
import os
import sys
import threading
import time
import traceback
import uuid
import warnings

try:
    try:  # cloudevents 2.x keeps the classic API under v1
        from cloudevents.v1.conversion import to_binary, to_structured
        from cloudevents.v1.http import CloudEvent, from_http
    except ImportError:  # cloudevents 1.x
        from cloudevents.conversion import to_binary, to_structured
        from cloudevents.http import CloudEvent, from_http
except ImportError as e:
    print("cloudevents_client: the cloudevents package is missing (%s); pip install cloudevents" % e)
    sys.exit(2)
try:  # 2.x's core API percent-encodes header values, as the binding's 1.0.2 asks
    from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
    from cloudevents.core.v1.event import CloudEvent as CoreEvent
except ImportError:
    CoreEvent = None

warnings.simplefilter("ignore", DeprecationWarning)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RESULTS = []


def check(fn):
    try:
        fn()
    except AssertionError as e:
        RESULTS.append((fn.__name__, False))
        print("FAIL %s: %s" % (fn.__name__, e), flush=True)
    except Exception as e:
        RESULTS.append((fn.__name__, False))
        print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, e), flush=True)
        traceback.print_exc(limit=3)
    else:
        RESULTS.append((fn.__name__, True))
        print("PASS %s" % fn.__name__, flush=True)


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:300])


def send(headers, body=b"", method="POST", path=None):
    conn = http.client.HTTPConnection("127.0.0.1", ARGS.port, timeout=60)
    try:
        conn.request(method, path or PATH, body=body, headers=headers)
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def event(kind, data=None, **attrs):
    attrs.setdefault("source", "/client/test")
    attrs["type"] = kind
    return CloudEvent(attrs, data)


def reply_of(r):
    """The reply event, parsed by the SDK; its attributes checked against the rules."""
    assert r.status == 200, "expected a 200 reply, got %r" % r
    ev = from_http(r.headers, r.body)
    assert ev["specversion"] == "1.0", "specversion %r" % ev["specversion"]
    assert ev["id"], "reply without an id"
    return ev


def report_of(ev):
    """tests/cloudevents_fn.py's report, as the reply's data."""
    data = ev.data
    if isinstance(data, (bytes, str)):
        data = json.loads(data)
    assert isinstance(data, dict) and "env" in data, "not the function's report: %r" % (data,)
    return data


def ran(ce_id):
    try:
        with open(ARGS.log) as f:
            return ce_id in f.read().split()
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------ the checks


def options_probe():
    r = send({}, method="OPTIONS")
    assert r.status == 200 and r.headers.get("allow") == "POST", "OPTIONS -> %r" % r
    assert r.body == b"", "OPTIONS body %r" % r.body


def binary_event_reaches_the_function_and_the_reply_parses():
    ev = event("test.echo", {"n": 1, "s": "é"}, subject="order 7", myext="ext-value",
               traceparent=TRACEPARENT)
    headers, body = to_binary(ev)
    r = send(dict(headers, Prefer="reply"), body)
    reply = reply_of(r)
    assert reply["type"] == "test.echo.reply", "reply type %r" % reply["type"]
    assert reply["source"] == ARGS.source, "reply source %r" % reply["source"]
    assert reply["id"] != ev["id"], "the reply reuses the event's id"
    assert reply.get("traceparent") == TRACEPARENT, "traceparent not passed on: %r" % reply.get("traceparent")
    assert r.headers.get("content-type", "").startswith("application/json"), "Content-Type %r" % r.headers
    rep = report_of(reply)
    env = rep["env"]
    want = {"CE_SPECVERSION": "1.0", "CE_ID": ev["id"], "CE_SOURCE": "/client/test", "CE_TYPE": "test.echo",
            "CE_SUBJECT": "order 7", "CE_MYEXT": "ext-value", "CE_TRACEPARENT": TRACEPARENT,
            "CE_TIME": headers["ce-time"]}
    for k, v in want.items():
        assert env.get(k) == v, "%s=%r, expected %r (env %r)" % (k, env.get(k), v, env)
    assert "CE_DATACONTENTTYPE" not in env, "no datacontenttype was sent: %r" % env
    assert base64.b64decode(rep["data_b64"]) == body, "data %r, sent %r" % (rep["data_b64"], body)
    if ARGS.mode == "file":
        assert rep["input"] == "input.bin", "input file %r" % rep["input"]


def binary_event_without_prefer_reply_is_202_after_the_run():
    ev = event("test.echo", {"x": 1})
    headers, body = to_binary(ev)
    r = send(headers, body)
    assert r.status == 202 and r.body == b"", "expected 202 without a body, got %r" % r
    assert not any(k.startswith("ce-") for k in r.headers), "202 with ce- headers: %r" % r.headers
    assert ran(ev["id"]), "answered 202 but the function did not run"


def structured_event_with_binary_data_arrives_byte_exact():
    data = os.urandom(65536) + bytes(range(256)) * 4
    ev = event("test.echo", data, datacontenttype="application/octet-stream", dataschema="https://example.com/s")
    headers, body = to_structured(ev)
    assert b'"data_base64"' in body, "the SDK did not use data_base64"
    r = send(dict(headers, Prefer="reply"), body)
    rep = report_of(reply_of(r))
    got = base64.b64decode(rep["data_b64"])
    assert got == data, "data differs: %d bytes, sent %d" % (len(got), len(data))
    env = rep["env"]
    assert env.get("CE_DATACONTENTTYPE") == "application/octet-stream", env
    assert env.get("CE_DATASCHEMA") == "https://example.com/s", env
    if ARGS.mode != "worker" or "Http_Content_Type" in env:
        assert env.get("Http_Content_Type") == "application/octet-stream", "Content-Type %r" % env
        assert env.get("Http_Content_Length") == str(len(data)), "Content-Length %r" % env.get("Http_Content_Length")
    if ARGS.mode == "file":
        assert rep["input"] == "input.bin", "input file %r" % rep["input"]


def structured_event_with_json_data_arrives_as_that_json():
    data = {"order": 7, "items": [{"sku": "é-1", "qty": 2}], "note": None}
    ev = event("test.echo", data)
    headers, body = to_structured(ev)
    rep = report_of(reply_of(send(dict(headers, Prefer="reply"), body)))
    got = base64.b64decode(rep["data_b64"])
    assert json.loads(got) == data, "data %r" % got
    assert rep["env"].get("Http_Content_Type", "application/json") == "application/json", rep["env"]
    if ARGS.mode == "file":
        assert rep["input"] == "input.json", "input file %r" % rep["input"]


def structured_event_with_text_data_arrives_as_that_text():
    text = "héllo wörld ✓\nline two\n"
    ev = event("test.echo", text, datacontenttype="text/plain; charset=utf-8")
    headers, body = to_structured(ev)
    rep = report_of(reply_of(send(dict(headers, Prefer="reply"), body)))
    assert base64.b64decode(rep["data_b64"]) == text.encode(), "text data %r" % rep["data_b64"]
    if ARGS.mode == "file":
        assert rep["input"] == "input.txt", "input file %r" % rep["input"]


def percent_encoded_attributes_are_decoded():
    if CoreEvent is None:
        print("NOTE percent_encoded_attributes_are_decoded: this cloudevents has no core API (2.x); skipped")
        return
    subject = 'café 100% "quoted" ✓'
    ev = CoreEvent(attributes={"type": "test.echo", "source": "/client/ü", "id": str(uuid.uuid4()),
                               "specversion": "1.0", "subject": subject}, data=b"raw")
    msg = to_binary_event(ev)
    assert "%" in msg.headers["ce-subject"], "the SDK did not percent-encode: %r" % msg.headers
    r = send(dict(msg.headers, Prefer="reply"), msg.body)
    assert r.status == 200, "got %r" % r
    reply = from_http_event(HTTPMessage(headers=r.headers, body=r.body))
    data = reply.get_data()
    env = (json.loads(data) if isinstance(data, (bytes, str)) else data)["env"]
    assert env.get("CE_SUBJECT") == subject and env.get("CE_SOURCE") == "/client/ü", env
    assert reply.get_type() == "test.echo.reply", reply.get_type()


def a_traceparent_header_reaches_the_function_and_the_reply():
    ev = event("test.echo", {"t": 1})
    headers, body = to_binary(ev)
    headers = dict(headers, Prefer="reply", traceparent=TRACEPARENT, tracestate="vendor=abc")
    reply = reply_of(send(headers, body))
    env = report_of(reply)["env"]
    assert env.get("TRACEPARENT") == TRACEPARENT and env.get("TRACESTATE") == "vendor=abc", env
    assert reply.get("traceparent") == TRACEPARENT and reply.get("tracestate") == "vendor=abc", \
        "reply trace context %r" % reply


def a_plain_request_is_a_plain_request():
    r = send({"Content-Type": "text/plain", "traceparent": TRACEPARENT}, b"hello")
    assert r.status == 200, "plain POST -> %r" % r
    assert not any(k.startswith("ce-") for k in r.headers), "plain answer with ce- headers: %r" % r.headers
    rep = json.loads(r.body)
    assert base64.b64decode(rep["data_b64"]) == b"hello", rep
    assert rep["env"].get("TRACEPARENT") == TRACEPARENT, rep["env"]
    assert not any(k.startswith("CE_") for k in rep["env"]), "CE_ variables for a plain request: %r" % rep["env"]


def empty_output_is_202_even_with_prefer_reply():
    headers, body = to_binary(event("test.silent", {"q": 1}))
    r = send(dict(headers, Prefer="reply"), body)
    assert r.status == 202 and r.body == b"", "silent function -> %r" % r


def the_function_may_set_the_reply_attributes():
    headers, body = to_binary(event("test.typed", {"q": 1}))
    reply = reply_of(send(dict(headers, Prefer="reply"), body))
    assert reply["type"] == "com.example.custom" and reply["source"] == "/custom/source", reply


def a_failing_function_is_500_and_a_poison_event_400():
    headers, body = to_binary(event("test.fail", {"q": 1}))
    r = send(dict(headers, Prefer="reply"), body)
    assert r.status == 500, "failing function -> %r" % r
    assert "ce-id" not in r.headers, "an error answered as a reply: %r" % r.headers
    headers, body = to_binary(event("test.poison", {"q": 1}))
    r = send(dict(headers, Prefer="reply"), body)
    assert r.status == 400 and b"poison" in r.body, "poison event -> %r" % r


def invalid_events_are_refused_and_never_run():
    def refused(want, headers, body, method="POST", needle=None):
        r = send(headers, body, method=method)
        assert r.status == want, "expected %d, got %r (request %r %r)" % (want, r, headers, body[:80])
        line = r.body.decode()
        assert line.endswith("\n") and line.count("\n") == 1, "not a one-line reason: %r" % line
        if needle:
            assert needle in line, "reason %r lacks %r" % (line, needle)
        return r

    structured = {"Content-Type": "application/cloudevents+json"}
    ids = []
    refused(400, structured, b'{"specversion": "1.0", "id": "x1", not json', needle="not a valid CloudEvent")
    ids.append("x1")
    refused(400, structured, b'{"specversion":"1.0","source":"/s","type":"test.echo"}', needle="id is missing")
    refused(400, structured, b'{"specversion":"0.3","id":"x2","source":"/s","type":"test.echo"}', needle="not 1.0")
    ids.append("x2")
    headers, body = to_binary(event("test.echo", {"a": 1}))
    ids.append(headers["ce-id"])
    no_source = {k: v for k, v in headers.items() if k != "ce-source"}
    refused(400, no_source, body, needle="source is missing")
    refused(400, dict(headers, **{"ce-specversion": "0.3"}), body, needle="not 1.0")
    batch = json.dumps([json.loads(to_structured(event("test.echo", {"a": 1}))[1])]).encode()
    refused(415, {"Content-Type": "application/cloudevents-batch+json"}, batch, needle="batch")
    r = refused(405, headers, b"", method="GET")
    assert r.headers.get("allow") == "POST", "405 without Allow: POST: %r" % r.headers
    _, sbody = to_structured(event("test.echo", {"a": 1}, id="x3"))
    ids.append("x3")
    refused(405, structured, sbody, method="PUT")
    for i in ids:
        assert not ran(i), "the function ran for the refused event %s" % i


def timeouts_are_504_and_overload_429():
    results = {}

    def slow(n):
        headers, body = to_binary(event("test.slow", {"n": n}))
        results[n] = send(headers, body)

    threads = [threading.Thread(target=slow, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    headers, body = to_binary(event("test.echo", {"n": 3}))
    r = send(headers, body)
    assert r.status == 429, "over max_inflight -> %r" % r
    for t in threads:
        t.join()
    for n, r in results.items():
        assert r.status == 504, "slow function %d -> %r" % (n, r)


# ---------------------------------------------------------------- http mode (an upstream)


def http_mode_passes_events_through_and_shapes_the_reply():
    ev = event("test.echo", {"k": "v"}, myext="e")
    headers, body = to_binary(ev)
    r = send(dict(headers, Prefer="reply"), body)
    reply = reply_of(r)
    assert reply["type"] == "test.echo.reply" and reply["source"] == ARGS.source, reply
    seen = report_of_upstream(reply)
    assert seen["body"].encode("latin-1") == body, "the upstream got %r" % seen["body"]
    assert seen_header(seen, "ce-myext") == "e", "ce- headers not passed on: %r" % seen["headers"]
    r = send(headers, body)
    assert r.status == 202 and r.body == b"", "no Prefer: reply -> %r" % r

    headers, body = to_structured(event("test.echo", {"k": "w"}))
    reply = reply_of(send(dict(headers, Prefer="reply"), body))
    seen = report_of_upstream(reply)
    assert seen["body"].encode("latin-1") == body, "structured event changed on its way: %r" % seen["body"]
    assert reply["type"] == "test.echo.reply", reply

    r = send({"Content-Type": "application/cloudevents+json", "Prefer": "reply"}, b"{not json")
    assert r.status == 200 and "ce-id" not in r.headers, "an undecodable event is the upstream's: %r" % r


def report_of_upstream(reply):
    data = reply.data
    if isinstance(data, (bytes, str)):
        data = json.loads(data)
    return data


def seen_header(report, name):
    return report["headers"].get(name)


def main():
    global ARGS, PATH
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--log", default="/nonexistent")
    ARGS = p.parse_args()
    PATH = "/echo" if ARGS.mode == "http" else "/"
    if ARGS.mode == "http":
        checks = [http_mode_passes_events_through_and_shapes_the_reply]
    else:
        checks = [options_probe, binary_event_reaches_the_function_and_the_reply_parses,
                  binary_event_without_prefer_reply_is_202_after_the_run,
                  structured_event_with_binary_data_arrives_byte_exact,
                  structured_event_with_json_data_arrives_as_that_json,
                  structured_event_with_text_data_arrives_as_that_text,
                  percent_encoded_attributes_are_decoded,
                  a_traceparent_header_reaches_the_function_and_the_reply,
                  a_plain_request_is_a_plain_request, empty_output_is_202_even_with_prefer_reply,
                  the_function_may_set_the_reply_attributes, a_failing_function_is_500_and_a_poison_event_400,
                  invalid_events_are_refused_and_never_run,
                  # Last: it uses up the in-flight slots and, in worker mode, the workers.
                  timeouts_are_504_and_overload_429]
    for c in checks:
        check(c)
    failed = sum(1 for _, ok in RESULTS if not ok)
    print("%s: %d passed, %d failed" % (ARGS.mode, len(RESULTS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
