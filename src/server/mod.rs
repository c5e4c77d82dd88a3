//! The HTTP side: accept loop (HTTP/1.1 and h2c on one port), per-connection timeouts,
//! routing of `/_/health` and `/_/ready`, and the path every function request takes.

pub mod conn;
pub mod listeners;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::admission;
use crate::body::{self, Body};
use crate::config::Config;
use crate::error::Error;
use crate::health::{Health, Status};
use crate::mode::Function;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Readiness, draining and in-flight state.
    pub health: Health,
    /// The mode's handler.
    pub function: Function,
    /// API-key and HMAC checks.
    pub auth: crate::secrets::Auth,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// hyper's own buffer is twice the limit: below it, admission applies the limit itself so
/// the client gets the watchdog's one-line reason; beyond it hyper answers a bare 431.
fn hyper_buffer(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(2).max(8192)
}

/// Serves `listener` until `stop` resolves, then lets open connections finish for up to
/// `grace` (HTTP/1.1 keep-alive is turned off, HTTP/2 gets GOAWAY).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.read_header_timeout)
        .max_buf_size(hyper_buffer(app.config.max_header_bytes));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(hyper_buffer(app.config.max_header_bytes)).unwrap_or(u32::MAX),
        );
    let limits = conn::Limits {
        read_header_timeout: app.config.read_header_timeout,
        idle_timeout: app.config.idle_timeout,
        write_timeout: app.config.write_timeout,
    };
    let cap = conn::Cap::new(app.config.max_connections);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Some(permit) = cap.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(conn::StallTimeout::new(stream, app.config.write_timeout));
        let app = app.clone();
        let state = Arc::new(conn::State::default());
        // Every request on this connection comes from the same peer.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string()).ok();
        let svc_state = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let app = app.clone();
            let peer_ip = peer_ip.clone();
            let track = svc_state.begin();
            async move { Ok::<_, Infallible>(route(&app, req, peer_ip, track).await) }
        });
        let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
        let watch = conn::Watch::new(state, limits);
        tokio::spawn(serve_connection(conn, watch, stop_rx.clone(), permit));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(grace, cap.all_closed()).await;
}

/// Drives one connection under its [`conn::Watch`] until it ends, is closed for outstaying
/// a limit, or the server stops (then gracefully: no new requests, in-flight ones finish).
async fn serve_connection<C>(
    conn: C,
    mut watch: conn::Watch,
    mut stop: tokio::sync::watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    C: hyper_util::server::graceful::GracefulConnection + Send + 'static,
{
    let _permit = permit;
    tokio::pin!(conn);
    let tick = tokio::time::sleep(watch.first_tick());
    tokio::pin!(tick);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            res = stop.changed(), if !closing => {
                if res.is_ok() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = &mut tick => match watch.tick() {
                conn::Verdict::Keep(next) => tick.as_mut().reset(Instant::now() + next),
                conn::Verdict::HeaderTimeout => return,
                conn::Verdict::WriteStall => {
                    tracing::warn!("write_timeout: the client stopped taking a response; connection closed");
                    return;
                }
                conn::Verdict::Idle if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    // An idle HTTP/1.1 connection closes at once, HTTP/2 after GOAWAY;
                    // give either a moment, then drop it.
                    tick.as_mut().reset(Instant::now() + Duration::from_secs(1));
                }
                conn::Verdict::Idle => return,
            },
        }
    }
}

async fn route(
    app: &App,
    req: Request<Incoming>,
    peer_ip: Option<HeaderValue>,
    track: conn::Track,
) -> Response<Body> {
    let path = req.uri().path();
    // knative func's deploy probes /health/readiness and /health/liveness; they answer
    // like the watchdog's own and never reach the function.
    let ready = match path {
        "/_/ready" | "/health/readiness" => true,
        "/_/health" | "/health/liveness" => false,
        _ => return call_function(app, req, peer_ip, track).await,
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Error::MethodNotAllowed {
            allow: "GET, HEAD",
            why: "use GET or HEAD",
        }
        .into_response();
    }
    probe(app, ready).await
}

/// `/_/health`: 200 while accepting work, 503 while draining or before the mode is ready.
/// `/_/ready` adds 429 at `max_inflight` and what the mode reports (http mode's
/// `ready_path` answer), as of-watchdog gives it.
async fn probe(app: &App, ready: bool) -> Response<Body> {
    // One probe of the function per request: with `ready_path` it also opens the gate while
    // the function starts, so it comes before the health check.
    let upstream = if ready && !app.health.is_draining() {
        app.function.ready().await
    } else {
        StatusCode::OK
    };
    if app.health.status() != Status::Ok {
        return body::text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    if ready && app.health.saturated() {
        return body::text_response(StatusCode::TOO_MANY_REQUESTS, "max_inflight reached\n");
    }
    if upstream != StatusCode::OK {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = upstream;
        return resp;
    }
    body::text_response(StatusCode::OK, "OK\n")
}

/// Admission (call id, request checks, authentication, in-flight slot), then the mode's
/// handler; the slot is held until the response body has been sent. Authentication comes
/// before the slot, so a client with a made-up signature cannot hold `max_inflight` slots
/// while its body is buffered (what it may buffer is bounded in `secrets`).
async fn call_function(
    app: &App,
    req: Request<Incoming>,
    peer_ip: Option<HeaderValue>,
    track: conn::Track,
) -> Response<Body> {
    let received = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut timer = app.metrics.start(&method);
    let (parts, body) = req.into_parts();
    let call_id = admission::call_id(&parts);
    let call_id_value = HeaderValue::from_str(&call_id).ok();
    let mut slot = None;
    let result = async {
        let ctx = admission::context(
            &parts,
            &app.config,
            &call_id,
            call_id_value.as_ref(),
            received,
            peer_ip,
        )?;
        let body = app
            .auth
            .verify(&parts, body::incoming(body), ctx.read_deadline)
            .await?;
        slot = Some(
            app.health
                .try_acquire()
                .ok_or(Error::TooManyRequests(app.health.max_inflight()))?,
        );
        let req = Request::from_parts(parts, body);
        crate::events::handle(&app.function, &app.config, req, ctx).await
    }
    .await;
    let mut resp = match result {
        Ok(mut resp) => {
            // Only the watchdog's own answers carry the marker; a function cannot pass for one.
            resp.headers_mut().remove(crate::error::INTERNAL_HEADER);
            resp
        }
        Err(e) => {
            match &e {
                Error::FunctionFailed(why) => tracing::warn!(call_id = %call_id, "{why}"),
                Error::Unavailable(why) => tracing::warn!(call_id = %call_id, "{why}"),
                Error::Timeout(_) => app.metrics.timeout(),
                _ => {}
            }
            e.into_response()
        }
    };
    let elapsed = received.elapsed();
    crate::busy_poll::request_took(elapsed);
    let h = resp.headers_mut();
    h.insert("x-duration-seconds", seconds_value(elapsed));
    if let Some(v) = call_id_value {
        h.insert("x-call-id", v);
    }
    log_request(app, &method, &path, resp.status(), elapsed, Some(&call_id));
    timer.set_status(resp.status().as_u16());
    resp.map(|b| conn::Tracked::wrap(b, track, (slot, timer)))
}

/// The access-log line, written straight into the log buffer (see [`crate::log`] for why
/// it does not go through tracing).
fn log_request(
    app: &App,
    method: &Method,
    path: &str,
    status: StatusCode,
    elapsed: Duration,
    call_id: Option<&str>,
) {
    let format = app.config.log_format;
    let call_id = call_id.unwrap_or("-");
    crate::log::request(
        format,
        method.as_str(),
        path,
        status.as_u16(),
        elapsed,
        call_id,
    )
    .write();
}

/// `d` in seconds with six decimals ("0.000250"), as X-Duration-Seconds carries it. Written
/// digit by digit: `format!` (an f64's `{:.6}` at first, then two integers) was the costliest
/// part of finishing a response.
fn seconds_value(d: Duration) -> HeaderValue {
    // u64::MAX has 20 digits; a dot and six decimals follow.
    let mut buf = *b"00000000000000000000.000000";
    crate::log::put_decimal(&mut buf[..20], d.as_secs());
    crate::log::put_decimal(&mut buf[21..], d.subsec_micros().into());
    // The seconds without their leading zeros, but at least one digit.
    let start = buf[..19].iter().take_while(|&&c| c == b'0').count();
    // Digits and a dot are always a valid header value.
    HeaderValue::from_bytes(&buf[start..]).unwrap_or_else(|_| HeaderValue::from_static("0.000000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seconds_value_is_seconds_with_six_decimals(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let want = format!("{}.{:06}", d.as_secs(), d.subsec_micros());
            let got = seconds_value(d);
            prop_assert_eq!(got.to_str().unwrap(), want);
        }
    }

    #[test]
    fn seconds_value_at_the_edges() {
        assert_eq!(seconds_value(Duration::ZERO), "0.000000");
        assert_eq!(seconds_value(Duration::from_micros(250)), "0.000250");
        assert_eq!(seconds_value(Duration::new(12, 999_999_999)), "12.999999");
        assert_eq!(
            seconds_value(Duration::new(u64::MAX, 999_999_999)),
            "18446744073709551615.999999"
        );
    }
}
