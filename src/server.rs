//! The HTTP side: accept loop (HTTP/1.1 and h2c on one port), per-connection timeouts,
//! routing of `/_/health` and `/_/ready`, and the path every function request takes.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::admission;
use crate::body::{self, Body, Guarded};
use crate::config::Config;
use crate::error::Error;
use crate::function::Function;
use crate::health::{Health, Status};

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

/// Largest request header block accepted (431 beyond).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

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
        .header_read_timeout(app.config.read_timeout)
        // Hyper answers a bare 431 beyond its buffer; below that, admission applies the
        // 64 KiB limit itself so the client gets the watchdog's one-line reason.
        .max_buf_size(2 * MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(2 * MAX_HEADER_BYTES as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(StallTimeout::new(stream, app.config.write_timeout));
        let app = app.clone();
        // Every request on this connection comes from the same peer.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string()).ok();
        let svc = hyper::service::service_fn(move |req| {
            let app = app.clone();
            let peer_ip = peer_ip.clone();
            async move { Ok::<_, Infallible>(route(&app, req, peer_ip).await) }
        });
        let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

async fn route(app: &App, req: Request<Incoming>, peer_ip: Option<HeaderValue>) -> Response<Body> {
    let path = req.uri().path();
    if path != "/_/health" && path != "/_/ready" {
        return call_function(app, req, peer_ip).await;
    }
    if let Some(resp) = method_not_allowed(&req) {
        return resp;
    }
    probe(app, path == "/_/ready").await
}

/// `/_/health`: 200 while accepting work, 503 while draining or (http mode) before the
/// upstream answers. `/_/ready` adds 429 at `max_inflight` and, with `ready_path`, the
/// upstream's own answer, as of-watchdog gives it.
async fn probe(app: &App, ready: bool) -> Response<Body> {
    if app.health.status() != Status::Ok {
        return body::text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    if ready {
        if app.health.saturated() {
            return body::text_response(StatusCode::TOO_MANY_REQUESTS, "max_inflight reached\n");
        }
        if let Function::Proxy(proxy) = &app.function {
            let status = proxy.ready_status().await;
            if status != StatusCode::OK {
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = status;
                return resp;
            }
        }
    }
    body::text_response(StatusCode::OK, "OK\n")
}

fn method_not_allowed(req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let mut resp = body::text_response(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(resp)
}

/// Admission (in-flight slot, call id, X-Timeout), then the mode's handler; the slot is held
/// until the response body has been sent.
async fn call_function(
    app: &App,
    req: Request<Incoming>,
    peer_ip: Option<HeaderValue>,
) -> Response<Body> {
    let received = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut timer = app.metrics.start(&method);
    let Some(slot) = app.health.try_acquire() else {
        let resp = Error::TooManyRequests(app.health.max_inflight()).into_response();
        log_request(app, &method, &path, resp.status(), received.elapsed(), None);
        timer.set_status(resp.status().as_u16());
        return resp;
    };
    let (parts, body) = req.into_parts();
    let call_id = admission::call_id(&parts);
    let result = async {
        let ctx = admission::context(
            &parts,
            &app.config,
            &call_id,
            received,
            peer_ip,
            &app.metrics,
        )?;
        let body = app
            .auth
            .verify(&parts, body::incoming(body), ctx.read_deadline)
            .await?;
        let req = Request::from_parts(parts, body);
        app.function.handle(req, &ctx).await
    }
    .await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            match &e {
                Error::FunctionFailed(why) => tracing::warn!(call_id = %call_id, "{why}"),
                Error::Timeout(_) => app.metrics.timeout(),
                _ => {}
            }
            e.into_response()
        }
    };
    let elapsed = received.elapsed();
    crate::busy_poll::request_took(elapsed);
    let h = resp.headers_mut();
    // Integer formatting: `{:.6}` of an f64 cost more than the rest of this function.
    let secs = format!("{}.{:06}", elapsed.as_secs(), elapsed.subsec_micros());
    if let Ok(v) = HeaderValue::try_from(secs) {
        h.insert("x-duration-seconds", v);
    }
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        h.insert("x-call-id", v);
    }
    log_request(app, &method, &path, resp.status(), elapsed, Some(&call_id));
    timer.set_status(resp.status().as_u16());
    resp.map(|b| Guarded::wrap(b, (slot, timer)))
}

/// The access-log line, written straight into the log buffer. It matches what the
/// tracing subscriber prints for other events, but going through tracing's field visitors
/// cost about 7 % of the proxy's throughput.
fn log_request(
    app: &App,
    method: &Method,
    path: &str,
    status: StatusCode,
    elapsed: Duration,
    call_id: Option<&str>,
) {
    use std::fmt::Write;
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    let duration = elapsed.as_secs_f64();
    let call_id = call_id.unwrap_or("-");
    let status = status.as_u16();
    let mut line = String::with_capacity(160);
    let _ = match app.config.log_format {
        crate::config::LogFormat::Text => writeln!(
            line,
            "{now}  INFO request method={method} path={path:?} status={status} \
             duration={duration:?} call_id={call_id:?}"
        ),
        crate::config::LogFormat::Json => writeln!(
            line,
            "{{\"timestamp\":\"{now}\",\"level\":\"INFO\",\"message\":\"request\",\
             \"method\":{},\"path\":{},\"status\":{status},\"duration\":{duration},\
             \"call_id\":{}}}",
            json_str(method.as_str()),
            json_str(path),
            json_str(call_id),
        ),
    };
    crate::logbuf::write(line.as_bytes());
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Wraps a connection so that a write to the client that makes no progress for
/// `write_timeout` fails: a client that stops reading cannot hold a response (and its
/// function) forever.
pub struct StallTimeout {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallTimeout {
    /// Wraps `inner`.
    pub fn new(inner: TcpStream, limit: Duration) -> StallTimeout {
        StallTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    fn check_stall(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write_timeout: client not reading",
            ));
        }
        Ok(())
    }

    fn track<T>(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match res {
            Poll::Pending => {
                if let Err(e) = self.check_stall(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

use std::future::Future;

impl AsyncRead for StallTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
