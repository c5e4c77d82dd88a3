//! The response body type every handler returns, and small helpers around it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried by bodies: anything that ends a stream early.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every handler.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The request body handlers receive: the client's stream, or bytes the watchdog already
/// buffered (to check an HMAC) and hands on unchanged.
/// Its error is a concrete `io::Error` (a boxed trait object here trips rustc's
/// higher-ranked lifetime checks in the async handlers).
pub type ReqBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Boxes the client's body.
pub fn incoming(body: hyper::body::Incoming) -> ReqBody {
    body.map_err(std::io::Error::other).boxed_unsync()
}

/// An empty request body.
pub fn empty_req() -> ReqBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A request body the watchdog already holds whole (a decoded CloudEvent's data), with its
/// exact length, as a client's `Content-Length` body would have.
pub fn full_req(data: Bytes) -> ReqBody {
    Full::new(data).map_err(|e| match e {}).boxed_unsync()
}

/// A plain-text response with a fixed message (probes, 404s, 405s).
pub fn text_response(status: http::StatusCode, msg: &'static str) -> http::Response<Body> {
    let mut resp = http::Response::new(full(msg));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A body that keeps `guard` alive until the body has been sent or dropped, so that
/// in-flight accounting (and `max_inflight`) covers streamed responses to their end.
pub struct Guarded<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    /// Wraps `inner`; `guard` is dropped when the last frame has gone out.
    pub fn wrap(inner: Body, guard: G) -> Body {
        Guarded {
            inner,
            guard: Some(guard),
        }
        .boxed_unsync()
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = res {
            this.guard = None;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `remaining` bytes of an open file, read `chunk` bytes at a time as the client takes them
/// (memory stays flat for any size). A file that shrank meanwhile ends the body with an
/// error, so the client sees an aborted response, never a silently short one.
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    chunk: usize,
    buf: bytes::BytesMut,
}

impl FileBody {
    /// Streams the next `len` bytes of `file`.
    pub fn boxed(file: std::fs::File, len: u64, chunk: usize) -> Body {
        FileBody {
            file: tokio::fs::File::from_std(file),
            remaining: len,
            chunk,
            buf: bytes::BytesMut::new(),
        }
        .boxed_unsync()
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use tokio::io::AsyncRead;
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this
            .chunk
            .min(usize::try_from(this.remaining).unwrap_or(this.chunk));
        if this.buf.len() != want {
            this.buf.clear();
            this.buf.resize(want, 0);
        }
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf[..]);
        let res = std::task::ready!(Pin::new(&mut this.file).poll_read(cx, &mut rb));
        let n = rb.filled().len();
        match res {
            Err(e) => Poll::Ready(Some(Err(e.into()))),
            Ok(()) if n == 0 => {
                Poll::Ready(Some(Err("file shrank while it was being sent".into())))
            }
            Ok(()) => {
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The next data chunk of a request body, which must arrive by `deadline` (408 otherwise).
/// `total` counts the bytes so far against `limit` (0 = none; 413 beyond). `Ok(None)` at the
/// end of the body; trailers are skipped.
pub async fn next_data(
    body: &mut ReqBody,
    deadline: tokio::time::Instant,
    total: &mut u64,
    limit: u64,
) -> Result<Option<Bytes>, crate::error::Error> {
    use crate::error::Error;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(Error::ReadTimeout),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(Error::BadRequest(format!("reading body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        *total += data.len() as u64;
        if limit > 0 && *total > limit {
            return Err(Error::BodyTooLarge(limit));
        }
        return Ok(Some(data));
    }
}

/// The whole body, read by `deadline` (408) and at most `limit` bytes (413; a declared
/// Content-Length over it is refused before anything is read).
pub async fn read_body(
    body: ReqBody,
    limit: u64,
    deadline: tokio::time::Instant,
) -> Result<Bytes, crate::error::Error> {
    collect_body(body, limit, deadline, None, |_| {}).await
}

/// A bound on bytes held in memory across all requests of one kind (bodies buffered before
/// their signature is checked): one client may hold up to its per-request limit, but many
/// clients together hold no more than this.
pub struct Budget {
    held: std::sync::atomic::AtomicU64,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Budget {
        Budget {
            held: std::sync::atomic::AtomicU64::new(0),
            limit,
        }
    }
}

/// One request's share of a [`Budget`], given back when dropped.
struct Share<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Share<'_> {
    /// Grows the share to `total` bytes; false (and nothing taken) when that would exceed
    /// the budget.
    fn grow_to(&mut self, total: u64) -> bool {
        use std::sync::atomic::Ordering;
        let more = total.saturating_sub(self.bytes);
        if more == 0 {
            return true;
        }
        let b = self.budget;
        let taken = b
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&n| n <= b.limit)
            });
        if taken.is_ok() {
            self.bytes = total;
        }
        taken.is_ok()
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.budget
            .held
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Like [`read_body`], with every byte also counted against `budget` while it is held here:
/// beyond it the request is refused with 503 (ours, retry later) before more is read. The
/// declared length is claimed up front, so a large upload is refused before it starts.
/// `inspect` sees each chunk as it arrives (to hash it without a second pass).
pub async fn read_body_within(
    body: ReqBody,
    limit: u64,
    deadline: tokio::time::Instant,
    budget: &Budget,
    inspect: impl FnMut(&[u8]),
) -> Result<Bytes, crate::error::Error> {
    collect_body(body, limit, deadline, Some(budget), inspect).await
}

/// Both readers above. A body that arrives in one chunk is handed on as it is, uncopied.
async fn collect_body(
    mut body: ReqBody,
    limit: u64,
    deadline: tokio::time::Instant,
    budget: Option<&Budget>,
    mut inspect: impl FnMut(&[u8]),
) -> Result<Bytes, crate::error::Error> {
    use crate::error::Error;
    let declared = http_body::Body::size_hint(&body).lower();
    if declared > limit {
        return Err(Error::BodyTooLarge(limit));
    }
    let busy = || Error::Unavailable("too many unverified request bodies in memory; retry later");
    let mut share = budget.map(|budget| Share { budget, bytes: 0 });
    let mut claim = |total: u64| share.as_mut().is_none_or(|s| s.grow_to(total));
    if !claim(declared) {
        return Err(busy());
    }
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    let mut total = 0u64;
    while let Some(data) = next_data(&mut body, deadline, &mut total, limit).await? {
        if !claim(total) {
            return Err(busy());
        }
        inspect(&data);
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            Some(head) => {
                joined.reserve(head.len() + data.len());
                joined.extend_from_slice(&head);
                joined.extend_from_slice(&data);
            }
            None => joined.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}
