//! A lean HTTP/1.1 client for the function process.
//!
//! hyper-util's pooled client runs every upstream connection as a task of its own and hands
//! each request, response and body chunk across channels between tasks. On the proxy path
//! that hand-off was the largest part of the watchdog's own cost (31 % of direct throughput
//! with it, 56 % for a client that writes and reads on the request's own task). So here the
//! request's task writes the head itself, reads the response head with `httparse`, and
//! streams the body straight out of the connection's buffer; idle connections wait in a
//! small LIFO pool. HTTP/2 upstreams (`upstream_h2c`) still go through hyper's client.
//!
//! # Invariants
//!
//! 1. A connection goes back to the pool only at a message boundary with nothing left
//!    over: the response body was read to its framed end (Content-Length counted down to
//!    zero, the last chunk and the trailers consumed, or a HEAD/1xx/204/304 answer), no byte
//!    past it is buffered, the request body was sent whole before the answer's head came,
//!    and the upstream did not ask to close. A failed or abandoned exchange drops its
//!    connection; a request body it did not take whole is read off the client and dropped
//!    (`upload.rs`), so the client connection is left at a message boundary.
//! 2. Every body byte is counted both ways: a response body ends exactly at its
//!    Content-Length (short = the client's response is aborted, long = the extra bytes stay
//!    in the buffer and the connection is dropped); a request body sent with a
//!    Content-Length is exactly that long, or the exchange fails.
//! 3. A connection idle for [`PROBE_AFTER`] or more is checked with a read on the socket
//!    itself before reuse (EOF, an error or any byte: dropped); one reused sooner relies on
//!    the runtime's readiness state (no syscall on the hot path). No connection is reused
//!    after [`IDLE_FOR`], or after a bit less than the upstream's `Keep-Alive: timeout`.
//! 4. A request is sent a second time only when it is idempotent (RFC 9110 9.2.2) and has
//!    no body, went out on a reused connection, and not a byte of the answer came back; the
//!    retry uses a new connection and is never retried itself. A request that may not be
//!    retried only reuses a connection idle for less than [`UNSAFE_IDLE_FOR`].
//! 5. Framing from the upstream is strict (see `head.rs`): Content-Length is 1*DIGIT
//!    (identical repeats allowed), Transfer-Encoding ends in `chunked`; anything else is a
//!    502 before the client sees a byte. Bad chunks abort the response.

mod body;
mod conn;
mod framing;
mod head;
mod send;
#[cfg(test)]
mod tests;
mod upload;

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::body::ReqBody;
use crate::config::Upstream;
use crate::error::Error;

pub use body::UpstreamBody;
pub use conn::{connect_stream, Sock, Stream, Upgraded};
pub use send::BodyTooLarge;

use conn::{connect, Conn};
use framing::RespFraming;
use head::{response_framing, ParsedHead};
use send::{send_body, write_head, PumpError, ReqFraming};
use upload::{Upload, UploadState};

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused. Below the shortest
/// idle timeout common servers default to (gunicorn's 2 s; Node, uvicorn and Apache keep
/// 5 s), so the pool gives a connection up before the upstream does instead of racing it;
/// a new loopback connection costs far less than a 502.
pub(super) const IDLE_FOR: Duration = Duration::from_millis(1500);
/// A pooled connection idle this long is checked with a syscall before reuse; sooner, the
/// connection was just used and the runtime's readiness state is current enough.
const PROBE_AFTER: Duration = Duration::from_millis(1);
/// A request that may not be retried (a body, or a method that is not idempotent) takes only
/// a connection idle for less than this. The liveness check cannot see a close that is
/// still on its way (the upstream's idle timer fired but it has not closed yet); that race
/// is only run by connections about as old as the upstream's idle timeout, which no common
/// server sets this short. Under load connections idle far less, so they are still reused.
const UNSAFE_IDLE_FOR: Duration = Duration::from_millis(250);

/// The function's HTTP/1.1 endpoint and its idle connections.
pub struct Pool {
    upstream: Upstream,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

/// A request head, already rewritten for the upstream (hop-by-hop headers gone, one Host
/// and `X-Forwarded-*` set, the target normalised).
pub struct Head<'a> {
    /// The method.
    pub method: &'a Method,
    /// Path prefix from `upstream_url` (may be empty).
    pub prefix: &'a str,
    /// The client's path and query, without dot segments.
    pub path_and_query: &'a str,
    /// The headers to send.
    pub headers: &'a HeaderMap,
}

/// What the upstream answered.
pub enum Reply {
    /// A response whose body streams from the connection.
    Response(http::Response<UpstreamBody>),
    /// `101 Switching Protocols`: the headers, and the connection to splice to the client.
    Upgraded(http::Response<()>, Upgraded),
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// Reading the client's body failed (the request cannot be completed).
    Client(Error),
    /// The upstream could not be reached or broke the exchange.
    Upstream(String),
}

/// Methods a request of which may be repeated without a different effect (RFC 9110 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Pool {
    /// A pool for `upstream`; connections are made on demand.
    pub fn new(upstream: Upstream) -> Pool {
        Pool {
            upstream,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one request and waits for the response head. The client's body must have
    /// arrived by `read_deadline` (408 before the answer; after it, the upload is cut). An
    /// idempotent request without a body that fails on a reused connection before any
    /// answer (the upstream closed it while it sat idle) is sent once more on a new one.
    pub async fn send(
        self: &Arc<Self>,
        head: &Head<'_>,
        body: ReqBody,
        upgrade: bool,
        read_deadline: Instant,
    ) -> Result<Reply, SendError> {
        let has_body = !body.is_end_stream();
        // The client's framing is kept: Content-Length as it came, anything else chunked.
        let framing = if has_body {
            match head::content_length(head.headers) {
                Ok(Some(n)) => Some(ReqFraming::Length(n)),
                Ok(None) => Some(ReqFraming::Chunked),
                Err(_) => {
                    let why = "request has an invalid Content-Length".to_string();
                    return Err(SendError::Client(Error::BadRequest(why)));
                }
            }
        } else {
            None
        };
        let retryable = framing.is_none() && idempotent(head.method);
        let mut conn = self.checkout(retryable).await?;
        // The head goes into the connection's own buffer, kept from request to request: a
        // fresh one each time made musl's allocator map and unmap a page every few requests.
        conn.wire.clear();
        write_head(&mut conn.wire, head, framing == Some(ReqFraming::Chunked));
        if let Some(framing) = framing {
            let out = Outgoing::WithBody(body, framing, read_deadline);
            return self
                .exchange(conn, out, head.method, upgrade)
                .await
                .map_err(Failure::into_send_error);
        }
        let retry = conn.reused && retryable;
        match self
            .exchange(conn, Outgoing::Head, head.method, upgrade)
            .await
        {
            Err(Failure::BeforeAnswer(why)) if retry => {
                tracing::debug!(error = %why, "reused upstream connection failed; retrying once");
                let mut conn = connect(&self.upstream).await.map_err(connect_error)?;
                write_head(&mut conn.wire, head, false);
                self.exchange(conn, Outgoing::Head, head.method, upgrade)
                    .await
                    .map_err(Failure::into_send_error)
            }
            other => other.map_err(Failure::into_send_error),
        }
    }

    /// `GET path` for readiness: the status, with the body read and dropped.
    pub async fn probe(self: &Arc<Self>, path: &str) -> Result<StatusCode, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("fwatchdog-ready"),
        );
        // ready_path names a path on the function itself, without upstream_url's prefix.
        let head = Head {
            method: &Method::GET,
            prefix: "",
            path_and_query: path,
            headers: &headers,
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        match self
            .send(&head, crate::body::empty_req(), false, deadline)
            .await?
        {
            Reply::Response(resp) => {
                let status = resp.status();
                let mut body = resp.into_body();
                while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                    frame.map_err(|e| SendError::Upstream(e.to_string()))?;
                }
                Ok(status)
            }
            Reply::Upgraded(resp, _) => Ok(resp.status()),
        }
    }

    /// The most recently used idle connection that is still good, or a new one. A request
    /// that cannot be retried leaves connections idle for [`UNSAFE_IDLE_FOR`] or more in
    /// the pool (the LIFO top is the youngest, so it stops at the first).
    async fn checkout(&self, retryable: bool) -> Result<Conn, SendError> {
        loop {
            let next = {
                let mut pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                match pool.last().map(|(_, since)| since.elapsed()) {
                    Some(idle) if retryable || idle < UNSAFE_IDLE_FOR => {
                        pool.pop().map(|(conn, _)| (conn, idle))
                    }
                    _ => None,
                }
            };
            let Some((conn, idle)) = next else {
                break;
            };
            if idle >= conn.keep {
                continue;
            }
            let open = if idle >= PROBE_AFTER {
                conn.still_open()
            } else {
                conn.looks_open()
            };
            if open {
                return Ok(conn);
            }
        }
        connect(&self.upstream).await.map_err(connect_error)
    }

    /// Closes idle connections past their time. Checkout only ever looks at the youngest,
    /// so without this the older ones (and their buffers and descriptors) would stay until
    /// the pool filled: after a burst at 16 connections, 16 sockets held for good.
    pub fn prune(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(conn, since)| since.elapsed() < conn.keep);
    }

    /// Prunes the pool every [`IDLE_FOR`] for as long as it exists (the task holds only a
    /// weak reference).
    pub fn spawn_janitor(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_FOR).await;
                match pool.upgrade() {
                    Some(p) => p.prune(),
                    None => return,
                }
            }
        });
    }

    fn put_back(&self, mut conn: Conn) {
        conn.reused = true;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Writes the head (and the body, concurrently with reading the answer), then reads
    /// the response head.
    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        out: Outgoing,
        method: &Method,
        upgrade: bool,
    ) -> Result<Reply, Failure> {
        let Some(mut wr) = conn.wr.take() else {
            return Err(Failure::Broken("connection has no write half".into()));
        };
        let mut pump: Option<Upload> = None;
        match out {
            Outgoing::Head => {
                if let Err(e) = wr.write_all(&conn.wire).await {
                    return Err(Failure::BeforeAnswer(format!("writing request: {e}")));
                }
                conn.wr = Some(wr);
            }
            Outgoing::WithBody(body, framing, deadline) => {
                // The upload owns the head from here (it may gather the first body bytes
                // into it); the connection starts a new buffer next time.
                let wire = std::mem::take(&mut conn.wire);
                let state = UploadState::new(framing.declared());
                let fut = send_body(wr, wire, body, framing, deadline, state.clone());
                pump = Some(Upload::new(Box::pin(fut), state));
            }
        }
        // The upstream may answer before it has read the whole body (an early error, or an
        // echo that streams back as it reads), so the body is pumped while the head is awaited.
        // An upload still unfinished when this fails is abandoned as `pump` drops: the rest
        // of the client's body is read and dropped, and the connection stays usable.
        let state = pump.as_ref().map(|p| p.state.clone());
        let parsed = std::future::poll_fn(|cx| {
            if let Some(p) = pump.as_mut() {
                if let Poll::Ready(res) = p.poll(cx) {
                    pump = None;
                    match res {
                        Ok(w) => conn.wr = Some(w),
                        Err(PumpError::Client(e)) => return Poll::Ready(Err(Failure::Client(e))),
                        // Recorded in the upload's state, for the message below.
                        Err(PumpError::Upstream) => {}
                    }
                }
            }
            let write_error = || state.as_ref().and_then(|s| s.failure());
            conn.poll_head(cx).map_err(|e| match (e, write_error()) {
                (Failure::BeforeAnswer(why) | Failure::Broken(why), Some(w)) => {
                    Failure::Broken(format!("{why} (writing the body failed: {w})"))
                }
                (e, _) => e,
            })
        })
        .await?;
        let ParsedHead {
            status,
            mut headers,
            keep_alive,
        } = parsed;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if !upgrade {
                return Err(Failure::Broken(
                    "upstream switched protocols without an upgrade request".into(),
                ));
            }
            let mut resp = http::Response::new(());
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            return Ok(Reply::Upgraded(resp, Upgraded { conn }));
        }
        let framing = response_framing(method, status, &headers)
            .map_err(|why| Failure::Broken(why.to_string()))?;
        let upstream_closes = !keep_alive || matches!(framing, RespFraming::Close);
        // An upstream that answered before it had the whole body may close the connection
        // right after (with the rest unread, a reset) or take the rest for its next request;
        // a request sent there next could not be retried, so such a connection is not kept.
        let mut reusable = !upstream_closes && pump.is_none();
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // Transfer-Encoding overrides Content-Length (RFC 9112 6.3); passed on, the
            // stale length would contradict the body the client gets. Such a message may be
            // an attempt at response splitting: its connection is not reused.
            if headers.remove(header::CONTENT_LENGTH).is_some() {
                reusable = false;
            }
        } else if let RespFraming::Length(n) = framing {
            if headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .nth(1)
                .is_some()
            {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        if reusable {
            if let Some(keep) = head::keep_alive_timeout(&headers) {
                conn.keep = conn.keep.min(keep);
                reusable = !conn.keep.is_zero();
            }
        }
        // Decided before the head goes out: a client whose body the upstream will not take,
        // and of which too much is left to read and drop, is told the connection closes.
        let close_client = pump
            .as_ref()
            .is_some_and(|p| p.state.close_client(upstream_closes));
        let mut resp = http::Response::new(UpstreamBody {
            conn: Some(conn),
            pump,
            close_client,
            framing,
            reusable,
            pool: self.clone(),
        });
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(Reply::Response(resp))
    }
}

/// What an exchange sends: a bodiless request's head (borrowed, as a retry sends it again),
/// or a head and the body to pump after it, with the body's framing and read deadline.
enum Outgoing {
    /// The head in the connection's `wire` buffer, nothing after it.
    Head,
    /// The head in `wire`, then this body, framed so, read by this deadline.
    WithBody(ReqBody, ReqFraming, Instant),
}

fn connect_error(e: io::Error) -> SendError {
    SendError::Upstream(format!("connecting to the function: {e}"))
}

/// How a failed exchange ended.
enum Failure {
    /// Nothing came back and nothing of the answer was read: safe to retry an idempotent,
    /// bodiless request.
    BeforeAnswer(String),
    /// The exchange broke after it could have had effects.
    Broken(String),
    /// The client's body could not be read.
    Client(Error),
}

impl Failure {
    fn into_send_error(self) -> SendError {
        match self {
            Failure::BeforeAnswer(s) | Failure::Broken(s) => SendError::Upstream(s),
            Failure::Client(e) => SendError::Client(e),
        }
    }
}
