//! The answer to a CloudEvent, in the terms of Knative Eventing's data plane: the status
//! is the acknowledgement (200: handled, the reply event in it; 202: handled, no reply;
//! 4xx: dropped; 5xx and 429: retried), and a reply is a binary-mode event built around
//! the function's output.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};
use crate::error::Error;

/// What the reply needs to know of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// `ce-type` of a reply: `ce_reply_type`, or the incoming type with `.reply` appended.
    pub reply_type: String,
    /// The sender asked for a reply (`Prefer: reply`); without it a 200 would be an error.
    pub wants_reply: bool,
    /// Trace context for the reply: the event's own `traceparent`/`tracestate`
    /// extensions, else the request's headers.
    pub traceparent: Option<String>,
    /// See `traceparent`.
    pub tracestate: Option<String>,
}

/// True when a `Prefer` header (RFC 7240) holds the `reply` preference.
pub fn wants_reply(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|pref| {
            let token = pref.split([';', '=']).next().unwrap_or_default();
            token.trim().eq_ignore_ascii_case("reply")
        })
}

/// The data plane's probe: `OPTIONS` says that events are delivered with POST. A
/// CloudEvents webhook validation (`WebHook-Request-Origin`) is allowed for any origin.
pub fn probe(headers: &HeaderMap) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("POST"));
    if headers.contains_key("webhook-request-origin") {
        h.insert("webhook-allowed-origin", HeaderValue::from_static("*"));
    }
    resp
}

/// 202, no body: handled, and nothing the broker may take for a reply.
pub fn accepted() -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Applies the reply rules to the function's answer. An error status goes back as it is
/// (the function's `Status: 400` drops a poison event; 5xx is retried). A success becomes
/// 202 without `Prefer: reply`, for an empty output, or when the function itself answered
/// 202 or 204; otherwise 200 with the output as the reply event's data, its `ce-`
/// attributes filled in where the function set none. A function that answered a
/// structured event (`application/cloudevents+json`) is passed on as that reply.
pub async fn answer(
    resp: Response<Body>,
    incoming: &Incoming,
    source: &str,
) -> Result<Response<Body>, Error> {
    let status = resp.status();
    if !status.is_success() {
        return Ok(resp);
    }
    if !incoming.wants_reply || status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
        return Ok(accepted());
    }
    let (mut parts, body) = resp.into_parts();
    let Some(body) = non_empty(body).await? else {
        return Ok(accepted());
    };
    parts.status = StatusCode::OK;
    let structured = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| super::decode::media_essence(v) == super::decode::STRUCTURED);
    if !structured {
        let h = &mut parts.headers;
        let id = crate::admission::new_call_id();
        let attrs = [
            ("ce-specversion", Some("1.0")),
            ("ce-id", Some(id.as_str())),
            ("ce-source", Some(source)),
            ("ce-type", Some(incoming.reply_type.as_str())),
            ("ce-traceparent", incoming.traceparent.as_deref()),
            ("ce-tracestate", incoming.tracestate.as_deref()),
        ];
        for (name, value) in attrs {
            if let Some(v) = value.filter(|_| !h.contains_key(name)) {
                h.insert(HeaderName::from_static(name), encode(v));
            }
        }
    }
    Ok(Response::from_parts(parts, body))
}

/// The body back if it has a byte to send, `None` if it is empty. A body of unknown length
/// (http mode, chunked) is read up to its first data; that chunk goes out first.
async fn non_empty(mut body: Body) -> Result<Option<Body>, Error> {
    match body.size_hint().exact() {
        Some(0) => return Ok(None),
        Some(_) => return Ok(Some(body)),
        None if body.is_end_stream() => return Ok(None),
        None => {}
    }
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(Error::FunctionFailed(format!(
                    "reading the function's answer: {e}"
                )))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(first) if !first.is_empty() => {
                    return Ok(Some(
                        Prefixed {
                            first: Some(first),
                            rest: body,
                        }
                        .boxed_unsync(),
                    ))
                }
                // Empty chunks and trailers before any data say nothing yet.
                _ => continue,
            },
        }
    }
}

/// A body whose first chunk was read already.
struct Prefixed {
    first: Option<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let first = self.first.as_ref().map_or(0, |f| f.len() as u64);
        hint.set_lower(hint.lower().saturating_add(first));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

/// An attribute as a header value: percent-encoded where the binding asks (space, `"`,
/// `%`, and everything outside printable ASCII), so any text is a valid value.
pub fn encode(value: &str) -> HeaderValue {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Only printable ASCII is left, which every header value may hold.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn incoming(wants_reply: bool) -> Incoming {
        Incoming {
            reply_type: "com.example.ping.reply".into(),
            wants_reply,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: None,
        }
    }

    fn response(status: u16, body: &'static [u8], headers: &[(&str, &str)]) -> Response<Body> {
        let mut r = Response::new(body::full(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    fn run(resp: Response<Body>, inc: &Incoming) -> (Response<Body>, Bytes) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = answer(resp, inc, "/src").await.unwrap();
            let (parts, body) = r.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            (Response::from_parts(parts, body::empty()), bytes)
        })
    }

    #[test]
    fn prefer_reply() {
        let mut h = HeaderMap::new();
        assert!(!wants_reply(&h));
        h.append("prefer", "respond-async, wait=10".parse().unwrap());
        assert!(!wants_reply(&h));
        h.append("prefer", "REPLY; x=1".parse().unwrap());
        assert!(wants_reply(&h));
    }

    #[test]
    fn a_reply_is_a_binary_event_around_the_output() {
        let (r, body) = run(
            response(
                201,
                b"pong",
                &[("content-type", "text/plain"), ("ce-id", "mine")],
            ),
            &incoming(true),
        );
        assert_eq!(r.status(), 200);
        assert_eq!(body, "pong");
        let h = r.headers();
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], "mine", "the function's own attribute wins");
        assert_eq!(h["ce-source"], "/src");
        assert_eq!(h["ce-type"], "com.example.ping.reply");
        assert!(h["ce-traceparent"].to_str().unwrap().starts_with("00-4bf9"));
        assert!(!h.contains_key("ce-tracestate"));
        assert_eq!(h["content-type"], "text/plain");
    }

    #[test]
    fn no_reply_without_prefer_or_output_and_errors_unchanged() {
        for (resp, inc, want) in [
            (response(200, b"pong", &[]), incoming(false), 202),
            (response(200, b"", &[]), incoming(true), 202),
            (response(204, b"", &[]), incoming(true), 202),
            (response(202, b"later", &[]), incoming(true), 202),
            (response(400, b"poison", &[]), incoming(true), 400),
            (response(500, b"oops", &[]), incoming(true), 500),
        ] {
            let (r, body) = run(resp, &inc);
            assert_eq!(r.status(), want);
            if want == 202 {
                assert!(body.is_empty() && !r.headers().contains_key("ce-id"));
            } else {
                assert!(!body.is_empty());
            }
        }
    }

    #[test]
    fn a_structured_reply_is_left_alone() {
        let (r, _) = run(
            response(
                200,
                b"{}",
                &[("content-type", "application/cloudevents+json")],
            ),
            &incoming(true),
        );
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("ce-id"));
    }

    #[test]
    fn the_probe() {
        let mut h = HeaderMap::new();
        let r = probe(&h);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["allow"], "POST");
        assert!(!r.headers().contains_key("webhook-allowed-origin"));
        h.insert(
            "webhook-request-origin",
            "eventemitter.example.com".parse().unwrap(),
        );
        assert_eq!(probe(&h).headers()["webhook-allowed-origin"], "*");
    }

    proptest! {
        /// Any text encodes to a valid header value that decodes back to it.
        #[test]
        fn encoded_values_decode_back(v in "\\PC{0,40}|[ -~]{0,40}") {
            let h = encode(&v);
            let back = super::super::decode::percent_decode(h.as_bytes());
            prop_assert_eq!(String::from_utf8(back).unwrap(), v);
        }
    }
}
