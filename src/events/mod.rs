//! CloudEvents for any function (`cloudevents=true`, docs/cloudevents.md): Knative
//! Eventing's data-plane contract done by the watchdog, so a shell script or a worker gets
//! an event's attributes as `CE_*` variables and its data as the body, and a broker gets
//! the status codes and the reply event it expects.
//!
//! [`handle`] wraps every mode's handler. Without `cloudevents` it only adds the request's
//! W3C trace context (`TRACEPARENT`, `TRACESTATE`). With it, in the modes that run a
//! function per request or a worker, a CloudEvent is decoded before the function runs
//! ([`decode`]), the run is waited for whole (so its status can acknowledge the event),
//! and its answer becomes a reply or a 202 ([`reply`]). In http mode the upstream gets the
//! request untouched (it may use an SDK); only the reply rules apply to its answer.

pub mod decode;
pub mod reply;
pub mod trace;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response};

use crate::body::{self, Body, ReqBody};
use crate::config::{CloudEvents, Config, Mode};
use crate::error::Error;
use crate::mode::{Ctx, Function};

use decode::Event;
use reply::Incoming;
use trace::TraceContext;

/// One function request through the mode's handler, with the CloudEvents rules around it
/// when `cloudevents` is on.
pub async fn handle(
    function: &Function,
    config: &Config,
    req: Request<ReqBody>,
    mut ctx: Ctx,
) -> Result<Response<Body>, Error> {
    let trace = TraceContext::of(req.headers());
    if let Some(t) = &trace {
        ctx.env.extend(t.env());
    }
    match &config.cloudevents {
        None => function.handle(req, &ctx).await,
        // Boxed: inline, the event handling's state would make every request's future (which
        // is moved, so copied, on its way into the connection) twice the size.
        Some(settings) => Box::pin(with_events(function, config, settings, req, ctx, trace)).await,
    }
}

/// [`handle`] with `cloudevents` on.
async fn with_events(
    function: &Function,
    config: &Config,
    settings: &CloudEvents,
    req: Request<ReqBody>,
    mut ctx: Ctx,
    trace: Option<TraceContext>,
) -> Result<Response<Body>, Error> {
    if config.mode == Mode::Http {
        return pass_through(function, config, settings, req, ctx, trace).await;
    }
    if req.method() == Method::OPTIONS {
        return Ok(reply::probe(req.headers()));
    }
    let structured = match decode::mode(req.headers()) {
        decode::Mode::None => return function.handle(req, &ctx).await,
        decode::Mode::Batch => {
            return Err(Error::UnsupportedMediaType(format!(
                "a CloudEvents batch ({}) is not taken; send one event per request",
                decode::BATCH
            )))
        }
        decode::Mode::OtherFormat(t) => {
            return Err(Error::UnsupportedMediaType(format!(
                "the CloudEvents format {t} is not taken; use binary mode or {}",
                decode::STRUCTURED
            )))
        }
        _ if req.method() != Method::POST => {
            return Err(Error::MethodNotAllowed {
                allow: "POST",
                why: "a CloudEvent is delivered with POST",
            })
        }
        decode::Mode::Binary => false,
        decode::Mode::Structured => true,
    };
    let (mut parts, body) = req.into_parts();
    let (event, body) = if structured {
        let bytes = body::read_body(body, config.buffered_body_limit(), ctx.read_deadline).await?;
        let mut event = decode::structured(&bytes, config.max_header_bytes)?;
        let data = event.data.take().unwrap_or_default();
        data_headers(
            &mut parts.headers,
            event.content_type.as_deref(),
            data.len(),
        );
        (event, body::full_req(data))
    } else {
        (decode::binary(&parts.headers)?, body)
    };
    ctx.env.extend(event.env());
    ctx.whole = true;
    let incoming = incoming(settings, &event, &parts.headers, trace);
    let resp = function
        .handle(Request::from_parts(parts, body), &ctx)
        .await?;
    reply::answer(resp, &incoming, &settings.source).await
}

/// http mode: the upstream gets the request byte for byte (a structured event is read
/// whole to learn its type, then sent on as it came). An event the upstream answers is
/// answered by the reply rules; anything that does not decode is the upstream's to judge.
async fn pass_through(
    function: &Function,
    config: &Config,
    settings: &CloudEvents,
    req: Request<ReqBody>,
    ctx: Ctx,
    trace: Option<TraceContext>,
) -> Result<Response<Body>, Error> {
    let (req, event) = match decode::mode(req.headers()) {
        decode::Mode::Binary => {
            let event = decode::binary(req.headers()).ok();
            (req, event)
        }
        decode::Mode::Structured => {
            let (parts, body) = req.into_parts();
            let bytes =
                body::read_body(body, config.buffered_body_limit(), ctx.read_deadline).await?;
            let event = decode::structured(&bytes, config.max_header_bytes).ok();
            (Request::from_parts(parts, body::full_req(bytes)), event)
        }
        _ => (req, None),
    };
    let Some(event) = event else {
        return function.handle(req, &ctx).await;
    };
    let incoming = incoming(settings, &event, req.headers(), trace);
    let resp = function.handle(req, &ctx).await?;
    reply::answer(resp, &incoming, &settings.source).await
}

/// The body's headers once the data replaces a structured event: its media type and exact
/// length (the function's `Http_Content_Type` and `Http_Content_Length` say what it reads).
fn data_headers(headers: &mut HeaderMap, content_type: Option<&str>, len: usize) {
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // Control characters were refused when decoding; anything else is a valid value.
    if let Some(v) = content_type.and_then(|ct| HeaderValue::from_bytes(ct.as_bytes()).ok()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
}

/// What the reply rules need: the reply's type, whether a reply was asked for, and the
/// trace context to pass on (the event's own extensions first, then the request's).
fn incoming(
    settings: &CloudEvents,
    event: &Event,
    headers: &HeaderMap,
    trace: Option<TraceContext>,
) -> Incoming {
    let (parent, state) = trace.map_or((None, None), |t| (Some(t.traceparent), t.tracestate));
    let (own_parent, own_state) = (event.get("traceparent"), event.get("tracestate"));
    Incoming {
        reply_type: settings
            .reply_type
            .clone()
            .unwrap_or_else(|| format!("{}.reply", event.get("type").unwrap_or_default())),
        wants_reply: reply::wants_reply(headers),
        tracestate: match own_parent {
            Some(_) => own_state.map(str::to_string),
            None => state,
        },
        traceparent: own_parent.map(str::to_string).or(parent),
    }
}
