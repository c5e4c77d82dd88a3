//! The request as it goes out: the head, then the body in the client's framing, each byte
//! counted against the length the head declared.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::conn::Wr;
use super::upload::{discard, UploadState};
use super::Head;
use crate::body::ReqBody;
use crate::error::Error;

/// The error a request body reports when it grew past `max_body_size` (the proxy's cap puts
/// it inside the `io::Error`, so it surfaces here as a 413 rather than a broken body).
#[derive(Debug)]
pub struct BodyTooLarge(pub u64);

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body larger than {} bytes", self.0)
    }
}

impl std::error::Error for BodyTooLarge {}

/// How the request body is delimited on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReqFraming {
    /// Chunked (the client's framing was not a length).
    Chunked,
    /// Exactly this many bytes (the Content-Length sent).
    Length(u64),
}

impl ReqFraming {
    /// Bytes the body is declared to have (`u64::MAX`: not known).
    pub(super) fn declared(self) -> u64 {
        match self {
            ReqFraming::Length(n) => n,
            ReqFraming::Chunked => u64::MAX,
        }
    }
}

/// Why a request body was not sent whole.
pub(super) enum PumpError {
    /// The client's body was bad (too large, mis-framed, too slow).
    Client(Error),
    /// The upstream stopped taking it; the rest was read from the client and dropped. Why
    /// writing failed, if it did, is in the upload's state.
    Upstream,
}

pub(super) type Pump = Pin<Box<dyn Future<Output = Result<Wr, PumpError>> + Send>>;

/// Writes the head and then the body as the client sends it, in the client's framing.
/// Frames already at hand (a body buffered for an HMAC check, a small one) join the bytes
/// waiting to go out, so head and body often leave in one write. With a length, the body
/// must be exactly that long: a byte over is not sent, and the exchange fails either way.
///
/// When the upstream stops taking the body (a write fails, or the upload is abandoned), the
/// rest is still read from the client and dropped (see `upload.rs`) before this returns, so
/// the client connection is left at a message boundary.
pub(super) async fn send_body(
    mut wr: Wr,
    wire: Vec<u8>,
    mut body: ReqBody,
    framing: ReqFraming,
    deadline: Instant,
    state: Arc<UploadState>,
) -> Result<Wr, PumpError> {
    match upload(&mut wr, wire, &mut body, framing, deadline, &state).await {
        Ok(()) => return Ok(wr),
        Err(Stop::Client(e)) => return Err(PumpError::Client(e)),
        Err(Stop::Upstream(e)) => state.fail(&e),
        Err(Stop::Abandoned) => {}
    }
    drop(wr);
    discard(body, deadline, &state).await;
    Err(PumpError::Upstream)
}

/// Why [`upload`] stopped short.
enum Stop {
    Client(Error),
    Upstream(std::io::Error),
    Abandoned,
}

/// Writes `wire` unless the upload is abandoned first (the upstream may have stopped
/// reading without closing, and a write to it would wait forever).
async fn write(wr: &mut Wr, wire: &[u8], state: &UploadState) -> Result<(), Stop> {
    tokio::select! {
        biased;
        () = state.abandoned() => Err(Stop::Abandoned),
        res = wr.write_all(wire) => res.map_err(Stop::Upstream),
    }
}

async fn upload(
    wr: &mut Wr,
    mut wire: Vec<u8>,
    body: &mut ReqBody,
    framing: ReqFraming,
    deadline: Instant,
    state: &UploadState,
) -> Result<(), Stop> {
    use http_body_util::BodyExt;
    /// Bytes gathered before they are written even if more frames are at hand.
    const GATHER: usize = 64 * 1024;
    let mut left = framing.declared();
    let mut ended = body.is_end_stream();
    while !ended {
        if state.is_abandoned() {
            return Err(Stop::Abandoned);
        }
        let ready = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx)));
        let frame = match ready.await {
            Poll::Ready(frame) if wire.len() < GATHER => frame,
            // Nothing at hand (or enough gathered): send what waits, then wait for more.
            waiting => {
                if !wire.is_empty() {
                    write(wr, &wire, state).await?;
                    wire.clear();
                }
                match waiting {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => tokio::time::timeout_at(deadline, body.frame())
                        .await
                        .map_err(|_| Stop::Client(Error::ReadTimeout))?,
                }
            }
        };
        match frame {
            None => ended = true,
            Some(Err(e)) => {
                if let Some(BodyTooLarge(limit)) = e.get_ref().and_then(|i| i.downcast_ref()) {
                    return Err(Stop::Client(Error::BodyTooLarge(*limit)));
                }
                let why = format!("reading body: {e}");
                return Err(Stop::Client(Error::BadRequest(why)));
            }
            Some(Ok(frame)) => {
                // Trailers are dropped: few upstreams read them.
                if let Some(data) = frame.into_data().ok().filter(|d| !d.is_empty()) {
                    let len = data.len() as u64;
                    left = left.checked_sub(len).ok_or_else(|| {
                        Stop::Client(Error::BadRequest(
                            "request body longer than its Content-Length".into(),
                        ))
                    })?;
                    if framing == ReqFraming::Chunked {
                        // Straight into the buffer: a `format!` here was an allocation
                        // per chunk. Writing to a Vec cannot fail.
                        let _ = write!(wire, "{:x}\r\n", data.len());
                        wire.extend_from_slice(&data);
                        wire.extend_from_slice(b"\r\n");
                    } else {
                        state.set_left(left);
                        wire.extend_from_slice(&data);
                    }
                }
                ended = body.is_end_stream();
            }
        }
    }
    match framing {
        ReqFraming::Chunked => wire.extend_from_slice(b"0\r\n\r\n"),
        ReqFraming::Length(_) if left != 0 => {
            return Err(Stop::Client(Error::BadRequest(
                "request body shorter than its Content-Length".into(),
            )))
        }
        ReqFraming::Length(_) => {}
    }
    state.set_left(0);
    if !wire.is_empty() {
        write(wr, &wire, state).await?;
    }
    Ok(())
}

/// The request head: `prefix` + the (already normalised) target, the headers as given.
pub(super) fn write_head(dst: &mut Vec<u8>, head: &Head<'_>, chunked: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;
    /// A request body sent with a Content-Length must be exactly that long: a longer one is
    /// cut before the extra bytes leave, a shorter one fails the exchange.
    #[test]
    fn request_bodies_are_counted_against_their_content_length() {
        use http_body_util::BodyExt;
        use std::io::Read;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for (body, declared, ok) in [
                (&b"hello"[..], 5, true),
                (b"hello!", 5, false),
                (b"hell", 5, false),
            ] {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let upstream = crate::config::Upstream::Tcp {
                    authority: listener.local_addr().unwrap().to_string(),
                    prefix: String::new(),
                };
                let mut conn = crate::mode::http::upstream::conn::connect(&upstream)
                    .await
                    .unwrap();
                let (mut peer, _) = listener.accept().unwrap();
                let wr = conn.wr.take().unwrap();
                let req = http_body_util::Full::new(bytes::Bytes::from_static(body))
                    .map_err(|e| match e {})
                    .boxed_unsync();
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                let state = UploadState::new(declared);
                let res = send_body(
                    wr,
                    b"HEAD\r\n".to_vec(),
                    req,
                    ReqFraming::Length(declared),
                    deadline,
                    state.clone(),
                )
                .await;
                match res {
                    Ok(wr) => {
                        assert!(ok, "{body:?} passed as {declared} bytes");
                        drop(wr);
                    }
                    Err(PumpError::Client(e)) => {
                        assert!(!ok, "{body:?}: {e}");
                        assert!(e.to_string().contains("Content-Length"), "{e}");
                    }
                    Err(PumpError::Upstream) => panic!("{:?}", state.failure()),
                }
                drop(conn);
                let mut sent = Vec::new();
                peer.read_to_end(&mut sent).unwrap();
                let sent_body = sent.strip_prefix(b"HEAD\r\n").unwrap_or_default();
                assert!(
                    sent_body.len() as u64 <= declared,
                    "{body:?}: upstream got {sent:?}"
                );
            }
        });
    }
}
