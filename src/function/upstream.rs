//! A lean HTTP/1.1 client for the function process.
//!
//! hyper-util's pooled client runs every upstream connection as a task of its own and hands
//! each request, response and body chunk across channels between tasks. On the proxy path
//! that hand-off was the largest part of the watchdog's own cost (31 % of direct throughput
//! with it, 56 % for a client that writes and reads on the request's own task). So here the
//! request's task writes the head itself, reads the response head with `httparse`, and
//! streams the body straight out of the connection's buffer; idle connections wait in a
//! small LIFO pool. HTTP/2 upstreams (`upstream_h2c`) still go through hyper's client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};
use tokio::time::Instant;

use crate::body::{BoxError, ReqBody};
use crate::config::Upstream;
use crate::error::Error;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Largest response head accepted from the upstream.
const MAX_HEAD: usize = 128 * 1024;
/// Most response headers accepted from the upstream.
const MAX_HEADERS: usize = 128;

/// The function's HTTP/1.1 endpoint and its idle connections.
pub struct Pool {
    upstream: Upstream,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

/// A request head, already rewritten for the upstream (hop-by-hop headers gone, Host and
/// `X-Forwarded-*` set).
pub struct Head<'a> {
    /// The method.
    pub method: &'a Method,
    /// Path prefix from `upstream_url` (may be empty).
    pub prefix: &'a str,
    /// The client's path and query, as received.
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

impl Pool {
    /// A pool for `upstream`; connections are made on demand.
    pub fn new(upstream: Upstream) -> Pool {
        Pool {
            upstream,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one request and waits for the response head. The client's body must have
    /// arrived by `read_deadline` (408 before the answer; after it, the upload is cut). A
    /// request without a body that fails on a reused connection before any answer (the
    /// upstream closed it while it sat idle) is sent once more on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        head: &Head<'_>,
        body: ReqBody,
        upgrade: bool,
        read_deadline: Instant,
    ) -> Result<Reply, SendError> {
        let has_body = !body.is_end_stream();
        // The client's framing is kept: Content-Length as it came, anything else chunked.
        let chunked = has_body && !head.headers.contains_key(header::CONTENT_LENGTH);
        let mut wire = Vec::with_capacity(512);
        write_head(&mut wire, head, chunked);
        let conn = self.checkout().await?;
        if has_body {
            let body = Some((body, chunked, read_deadline));
            return self
                .exchange(conn, &wire, body, head.method, upgrade)
                .await
                .map_err(Failure::into_send_error);
        }
        let reused = conn.reused;
        match self.exchange(conn, &wire, None, head.method, upgrade).await {
            Err(Failure::BeforeAnswer(why)) if reused => {
                tracing::debug!(error = %why, "idle upstream connection was closed; retrying");
                let conn = connect(&self.upstream).await.map_err(connect_error)?;
                self.exchange(conn, &wire, None, head.method, upgrade)
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
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    frame.map_err(|e| SendError::Upstream(e.to_string()))?;
                }
                Ok(status)
            }
            Reply::Upgraded(resp, _) => Ok(resp.status()),
        }
    }

    async fn checkout(&self) -> Result<Conn, SendError> {
        loop {
            let next = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match next {
                Some((conn, since)) if since.elapsed() < IDLE_FOR && conn.looks_open() => {
                    return Ok(conn)
                }
                Some(_) => continue,
                None => break,
            }
        }
        connect(&self.upstream).await.map_err(connect_error)
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
        wire: &[u8],
        body: Option<(ReqBody, bool, Instant)>,
        method: &Method,
        upgrade: bool,
    ) -> Result<Reply, Failure> {
        let Some(mut wr) = conn.wr.take() else {
            return Err(Failure::Broken("connection has no write half".into()));
        };
        let mut pump: Option<Pump> = None;
        match body {
            None => {
                if let Err(e) = wr.write_all(wire).await {
                    return Err(Failure::BeforeAnswer(format!("writing request: {e}")));
                }
                conn.wr = Some(wr);
            }
            Some((body, chunked, deadline)) => {
                pump = Some(Box::pin(send_body(
                    wr,
                    wire.to_vec(),
                    body,
                    chunked,
                    deadline,
                )));
            }
        }
        // The upstream may answer before it has read the whole body (an early error, or an
        // echo that streams back as it reads), so the body is pumped while the head is awaited.
        let mut write_error = None;
        let parsed = std::future::poll_fn(|cx| {
            if let Some(p) = pump.as_mut() {
                if let Poll::Ready(res) = p.as_mut().poll(cx) {
                    pump = None;
                    match res {
                        Ok(w) => conn.wr = Some(w),
                        Err(PumpError::Client(e)) => return Poll::Ready(Err(Failure::Client(e))),
                        Err(PumpError::Upstream(e)) => write_error = Some(e),
                    }
                }
            }
            conn.poll_head(cx).map_err(|e| match (e, &write_error) {
                (Failure::BeforeAnswer(why) | Failure::Broken(why), Some(w)) => {
                    Failure::Broken(format!("{why} (writing the body failed: {w})"))
                }
                (e, _) => e,
            })
        })
        .await?;
        let ParsedHead {
            status,
            headers,
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
        let mut headers = headers;
        let framing = response_framing(method, status, &headers)
            .map_err(|why| Failure::Broken(why.to_string()))?;
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // Transfer-Encoding overrides Content-Length (RFC 9112 6.3); passed on, the
            // stale length would contradict the body the client gets.
            headers.remove(header::CONTENT_LENGTH);
        } else if let RespFraming::Length(n) = framing {
            if headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        let reusable = keep_alive && !matches!(framing, RespFraming::Close);
        let mut resp = http::Response::new(UpstreamBody {
            conn: Some(conn),
            pump,
            framing,
            reusable,
            pool: self.clone(),
        });
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(Reply::Response(resp))
    }
}

fn connect_error(e: io::Error) -> SendError {
    SendError::Upstream(format!("connecting to the function: {e}"))
}

/// How a failed exchange ended.
enum Failure {
    /// Nothing came back and nothing of the answer was read: safe to retry a bodiless request.
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

enum PumpError {
    Client(Error),
    Upstream(io::Error),
}

type Pump = Pin<Box<dyn Future<Output = Result<Wr, PumpError>> + Send>>;

/// Writes the head and then the body as the client sends it, in the client's framing.
/// Frames already at hand (a body buffered for an HMAC check, a small one) join the bytes
/// waiting to go out, so head and body often leave in one write.
async fn send_body(
    mut wr: Wr,
    mut wire: Vec<u8>,
    mut body: ReqBody,
    chunked: bool,
    deadline: Instant,
) -> Result<Wr, PumpError> {
    use http_body_util::BodyExt;
    /// Bytes gathered before they are written even if more frames are at hand.
    const GATHER: usize = 64 * 1024;
    let mut ended = body.is_end_stream();
    while !ended {
        let ready = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match ready.await {
            Poll::Ready(frame) if wire.len() < GATHER => frame,
            // Nothing at hand (or enough gathered): send what waits, then wait for more.
            waiting => {
                if !wire.is_empty() {
                    wr.write_all(&wire).await.map_err(PumpError::Upstream)?;
                    wire.clear();
                }
                match waiting {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => tokio::time::timeout_at(deadline, body.frame())
                        .await
                        .map_err(|_| PumpError::Client(Error::ReadTimeout))?,
                }
            }
        };
        match frame {
            None => ended = true,
            Some(Err(e)) => {
                let why = format!("reading body: {e}");
                return Err(PumpError::Client(Error::BadRequest(why)));
            }
            Some(Ok(frame)) => {
                // Trailers are dropped: few upstreams read them.
                if let Some(data) = frame.into_data().ok().filter(|d| !d.is_empty()) {
                    if chunked {
                        wire.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        wire.extend_from_slice(&data);
                        wire.extend_from_slice(b"\r\n");
                    } else {
                        wire.extend_from_slice(&data);
                    }
                }
                ended = body.is_end_stream();
            }
        }
    }
    if chunked {
        wire.extend_from_slice(b"0\r\n\r\n");
    }
    if !wire.is_empty() {
        wr.write_all(&wire).await.map_err(PumpError::Upstream)?;
    }
    Ok(wr)
}

fn write_head(dst: &mut Vec<u8>, head: &Head<'_>, chunked: bool) {
    dst.extend_from_slice(head.method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(head.prefix.as_bytes());
    dst.extend_from_slice(head.path_and_query.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if chunked {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

struct ParsedHead {
    status: StatusCode,
    headers: HeaderMap,
    keep_alive: bool,
}

/// How the response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespFraming {
    /// No body (HEAD, 1xx, 204, 304), or all of it sent.
    Done,
    /// This many bytes left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

fn response_framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<RespFraming, &'static str> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(RespFraming::Done);
    }
    if let Some(te) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = te.to_str().unwrap_or("").rsplit(',').next().unwrap_or("");
        return Ok(if last.trim().eq_ignore_ascii_case("chunked") {
            RespFraming::Chunked(Chunk::Size)
        } else {
            RespFraming::Close
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| "upstream sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("upstream sent conflicting Content-Length values");
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => RespFraming::Done,
        Some(n) => RespFraming::Length(n),
        None => RespFraming::Close,
    })
}

/// Whether the connection may carry another request after this response.
fn keeps_alive(version: u8, headers: &HeaderMap) -> bool {
    let mut close = version == 0;
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            let t = token.trim();
            if t.eq_ignore_ascii_case("close") {
                return false;
            }
            if t.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        }
    }
    !close
}

/// One connection to the upstream.
struct Conn {
    rd: Rd,
    wr: Option<Wr>,
    buf: BytesMut,
    reused: bool,
}

impl Conn {
    /// False when the upstream closed the connection (or sent something unasked) while it
    /// sat in the pool. Usually answered from the runtime's readiness state, no syscall.
    fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        let res = match &self.rd {
            Sock::Tcp(r) => r.try_read(&mut probe),
            Sock::Unix(r) => r.try_read(&mut probe),
        };
        matches!(res, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads until a complete response head (skipping 1xx other than 101) is buffered.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ParsedHead, Failure>> {
        let mut read_any = !self.buf.is_empty();
        loop {
            while let Some(head) = parse_head(&mut self.buf)? {
                let interim = head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS;
                if !interim {
                    return Poll::Ready(Ok(head));
                }
            }
            let why = match ready!(poll_fill(&mut self.rd, &mut self.buf, cx)) {
                Ok(0) if read_any => "upstream closed the connection mid-response".to_string(),
                Ok(0) => "upstream closed the connection without answering".to_string(),
                Ok(_) => {
                    read_any = true;
                    continue;
                }
                Err(e) => format!("reading response: {e}"),
            };
            // Only a connection that gave nothing back may take the request again.
            return Poll::Ready(Err(if read_any {
                Failure::Broken(why)
            } else {
                Failure::BeforeAnswer(why)
            }));
        }
    }
}

/// Takes a complete response head off the front of `buf`, or `None` while it is partial.
/// Header values become slices of the head's bytes instead of copies.
fn parse_head(buf: &mut BytesMut) -> Result<Option<ParsedHead>, Failure> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(Failure::Broken("upstream response head too large".into()))
        }
        Err(e) => {
            let why = format!("upstream sent an invalid response: {e}");
            return Err(Failure::Broken(why));
        }
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Failure::Broken(format!("upstream sent status {code}")))?;
    let version = resp.version.unwrap_or(1);
    // Where a slice httparse returned sits in the head (empty if it is empty or, which
    // httparse never does, elsewhere).
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| {
        let start = (part.as_ptr() as usize).wrapping_sub(base);
        match start.checked_add(part.len()) {
            Some(end) if !part.is_empty() && end <= len => (start, end),
            _ => (0, 0),
        }
    };
    let mut spans = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = resp.headers.len();
    for (slot, h) in spans.iter_mut().zip(resp.headers.iter()) {
        *slot = (span(h.name.as_bytes()), span(h.value));
    }
    let head = buf.split_to(len).freeze();
    // Room for the two headers the watchdog adds (X-Duration-Seconds, X-Call-Id) without
    // growing the map.
    let mut headers = HeaderMap::with_capacity(count + 2);
    for &((n0, n1), (v0, v1)) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[n0..n1]);
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1));
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(Failure::Broken("upstream sent an invalid header".into()));
        };
        headers.append(name, value);
    }
    let keep_alive = keeps_alive(version, &headers);
    Ok(Some(ParsedHead {
        status,
        headers,
        keep_alive,
    }))
}

/// Reads whatever is available into the spare capacity of `buf`.
fn poll_fill(rd: &mut Rd, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(16 * 1024);
    }
    let spare = buf.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    ready!(Pin::new(rd).poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity (ReadBuf
    // tracks that), so extending the length over them exposes only written bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// A response body read from the upstream connection as the client takes it. At its end the
/// connection goes back to the pool (when the exchange left it clean); dropped early, the
/// connection is closed.
pub struct UpstreamBody {
    conn: Option<Conn>,
    pump: Option<Pump>,
    framing: RespFraming,
    reusable: bool,
    pool: Arc<Pool>,
}

const CLOSED_MID_BODY: &str = "upstream closed the connection mid-body";

impl UpstreamBody {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match self.framing {
                RespFraming::Done => return Poll::Ready(None),
                RespFraming::Length(left) => {
                    if conn.buf.is_empty()
                        && ready!(poll_fill(&mut conn.rd, &mut conn.buf, cx))? == 0
                    {
                        return Poll::Ready(Some(Err(CLOSED_MID_BODY.into())));
                    }
                    let take = left.min(conn.buf.len() as u64);
                    self.framing = match left - take {
                        0 => RespFraming::Done,
                        rest => RespFraming::Length(rest),
                    };
                    return Poll::Ready(Some(Ok(conn.buf.split_to(take as usize).freeze())));
                }
                RespFraming::Close => {
                    if conn.buf.is_empty()
                        && ready!(poll_fill(&mut conn.rd, &mut conn.buf, cx))? == 0
                    {
                        self.framing = RespFraming::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                }
                RespFraming::Chunked(state) => {
                    let step = chunk_step(state, &mut conn.buf).map_err(BoxError::from)?;
                    match step {
                        ChunkStep::Next(next, data) => {
                            self.framing = next;
                            if let Some(data) = data {
                                return Poll::Ready(Some(Ok(data)));
                            }
                        }
                        ChunkStep::NeedMore => {
                            if ready!(poll_fill(&mut conn.rd, &mut conn.buf, cx))? == 0 {
                                return Poll::Ready(Some(Err(CLOSED_MID_BODY.into())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Moves the request body along, if it is still being sent.
    fn poll_pump(&mut self, cx: &mut Context<'_>) {
        let Some(p) = self.pump.as_mut() else {
            return;
        };
        if let Poll::Ready(res) = p.as_mut().poll(cx) {
            self.pump = None;
            match (res, self.conn.as_mut()) {
                (Ok(wr), Some(conn)) => conn.wr = Some(wr),
                _ => self.reusable = false,
            }
        }
    }

    /// The body ended: a connection with nothing left over goes back to the pool.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.reusable && self.pump.is_none() && conn.wr.is_some() && conn.buf.is_empty() {
            self.pool.put_back(conn);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body that was complete from the start (HEAD, 204, 304) is never polled.
        if self.framing == RespFraming::Done {
            self.finish();
        }
    }
}

enum ChunkStep {
    /// Moved to this state, maybe with data to hand on.
    Next(RespFraming, Option<Bytes>),
    /// The buffer does not hold enough to move on.
    NeedMore,
}

/// One step of the chunked-coding grammar over what is buffered.
fn chunk_step(state: Chunk, buf: &mut BytesMut) -> Result<ChunkStep, &'static str> {
    const MAX_LINE: usize = 8 * 1024;
    Ok(match state {
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                let next = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
                ChunkStep::Next(RespFraming::Chunked(next), None)
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_LINE => ChunkStep::NeedMore,
            _ => return Err("upstream sent an invalid chunk size"),
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(ChunkStep::NeedMore);
            }
            let take = left.min(buf.len() as u64);
            let next = match left - take {
                0 => Chunk::DataEnd,
                rest => Chunk::Data(rest),
            };
            let data = buf.split_to(take as usize).freeze();
            ChunkStep::Next(RespFraming::Chunked(next), Some(data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(ChunkStep::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err("upstream sent a chunk without its CRLF");
            }
            buf.advance(2);
            ChunkStep::Next(RespFraming::Chunked(Chunk::Size), None)
        }
        Chunk::Trailers => match buf.windows(2).position(|w| w == b"\r\n") {
            // An empty line ends the message; trailer fields are dropped.
            Some(0) => {
                buf.advance(2);
                ChunkStep::Next(RespFraming::Done, None)
            }
            Some(i) => {
                buf.advance(i + 2);
                ChunkStep::Next(RespFraming::Chunked(Chunk::Trailers), None)
            }
            None if buf.len() < MAX_LINE => ChunkStep::NeedMore,
            None => return Err("upstream sent an oversized trailer"),
        },
    })
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.poll_pump(cx);
        match this.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if this.framing == RespFraming::Done {
                    // The server may not poll again once the body says it has ended.
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == RespFraming::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            RespFraming::Done => SizeHint::with_exact(0),
            RespFraming::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// The upstream side of a `101 Switching Protocols` exchange: the raw connection, with any
/// bytes the upstream sent after its head.
pub struct Upgraded {
    conn: Conn,
}

impl Upgraded {
    /// Bytes already read past the response head, to be delivered first.
    pub fn take_leftover(&mut self) -> Bytes {
        self.conn.buf.split().freeze()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn.rd).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.conn.wr.as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.conn.wr.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.conn.wr.as_mut() {
            Some(w) => Pin::new(w).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Opens a new connection to the upstream (TCP with Nagle off, or a unix socket).
pub async fn connect_stream(upstream: &Upstream) -> io::Result<Stream> {
    match upstream {
        Upstream::Tcp { authority, .. } => {
            let s = TcpStream::connect(authority.as_str()).await?;
            let _ = s.set_nodelay(true);
            Ok(Sock::Tcp(s))
        }
        Upstream::Unix(path) => Ok(Sock::Unix(UnixStream::connect(path).await?)),
    }
}

/// A new connection, split so the body can be sent while the answer is read.
async fn connect(upstream: &Upstream) -> io::Result<Conn> {
    let (rd, wr) = match connect_stream(upstream).await? {
        Sock::Tcp(s) => {
            let (r, w) = s.into_split();
            (Sock::Tcp(r), Sock::Tcp(w))
        }
        Sock::Unix(s) => {
            let (r, w) = s.into_split();
            (Sock::Unix(r), Sock::Unix(w))
        }
    };
    Ok(Conn {
        rd,
        wr: Some(wr),
        buf: BytesMut::with_capacity(8 * 1024),
        reused: false,
    })
}

/// A connection to the upstream, or one half of it: over TCP or a unix socket.
pub enum Sock<T, U> {
    /// `http://host:port`.
    Tcp(T),
    /// `unix:/path`.
    Unix(U),
}

/// A whole connection to the upstream.
pub type Stream = Sock<TcpStream, UnixStream>;
type Rd = Sock<tcp::OwnedReadHalf, unix::OwnedReadHalf>;
type Wr = Sock<tcp::OwnedWriteHalf, unix::OwnedWriteHalf>;

impl<T: AsyncRead + Unpin, U: AsyncRead + Unpin> AsyncRead for Sock<T, U> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Sock::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin, U: AsyncWrite + Unpin> AsyncWrite for Sock<T, U> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Sock::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Sock::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Sock::Tcp(s) => s.is_write_vectored(),
            Sock::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_flush(cx),
            Sock::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Sock::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(wire: &[u8], cut: usize) -> Result<Vec<u8>, &'static str> {
        // Feeds the wire in pieces of `cut` bytes, as reads would deliver it.
        let mut buf = BytesMut::new();
        let mut state = RespFraming::Chunked(Chunk::Size);
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            let RespFraming::Chunked(c) = state else {
                assert_eq!(state, RespFraming::Done);
                assert!(buf.is_empty(), "nothing may be left after the message");
                return Ok(out);
            };
            match chunk_step(c, &mut buf)? {
                ChunkStep::Next(next, data) => {
                    state = next;
                    out.extend_from_slice(&data.unwrap_or_default());
                }
                ChunkStep::NeedMore => {
                    assert!(fed < wire.len(), "ran out of input");
                    let end = (fed + cut).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_at_any_read_size() {
        let wire =
            b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n";
        for cut in 1..wire.len() {
            assert_eq!(
                decode(wire, cut).unwrap(),
                b"hello 0123456789abcdef",
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        assert!(decode(b"zz\r\nhello\r\n0\r\n\r\n", 64).is_err());
        assert!(decode(b"5\r\nhelloXX0\r\n\r\n", 64).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let mut h = HeaderMap::new();
        let get = Method::GET;
        assert_eq!(
            response_framing(&get, StatusCode::OK, &h),
            Ok(RespFraming::Close)
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(
            response_framing(&get, StatusCode::OK, &h),
            Ok(RespFraming::Length(12))
        );
        assert_eq!(
            response_framing(&Method::HEAD, StatusCode::OK, &h),
            Ok(RespFraming::Done)
        );
        assert_eq!(
            response_framing(&get, StatusCode::NOT_MODIFIED, &h),
            Ok(RespFraming::Done)
        );
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("13"));
        assert!(response_framing(&get, StatusCode::OK, &h).is_err());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert_eq!(
            response_framing(&get, StatusCode::OK, &h),
            Ok(RespFraming::Chunked(Chunk::Size))
        );
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            response_framing(&get, StatusCode::OK, &h),
            Ok(RespFraming::Close)
        );
    }

    #[test]
    fn keep_alive_rules() {
        let mut h = HeaderMap::new();
        assert!(keeps_alive(1, &h));
        assert!(!keeps_alive(0, &h));
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        assert!(keeps_alive(0, &h));
        h.insert(header::CONNECTION, HeaderValue::from_static("foo, close"));
        assert!(!keeps_alive(1, &h));
    }
}
