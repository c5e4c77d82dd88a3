//! The response body, read from the upstream connection as the client takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::conn::{poll_fill, Conn};
use super::framing::{chunk_step, length_step, ChunkStep, RespFraming};
use super::send::PumpError;
use super::upload::Upload;
use super::Pool;
use crate::body::BoxError;
use crate::error::Error;

/// A response body read from the upstream connection as the client takes it. At its end the
/// connection goes back to the pool (when the exchange left it clean); dropped early or
/// failed, the connection is closed. A request body not yet sent whole by then is abandoned:
/// its rest is read off the client connection and dropped.
pub struct UpstreamBody {
    pub(super) conn: Option<Conn>,
    pub(super) pump: Option<Upload>,
    /// See [`UpstreamBody::closes_client`].
    pub(super) close_client: bool,
    pub(super) framing: RespFraming,
    pub(super) reusable: bool,
    pub(super) pool: Arc<Pool>,
}

const CLOSED_MID_BODY: &str = "upstream closed the connection mid-body";

impl UpstreamBody {
    /// True when the upstream will not take the rest of the request body and too much of it
    /// is left to read and drop: the client's answer must say `Connection: close` (HTTP/1.x),
    /// since its connection is closed once the answer is out (RFC 9112 9.6).
    pub fn closes_client(&self) -> bool {
        self.close_client
    }

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
                        tracing::warn!(missing = left, "{CLOSED_MID_BODY}; response aborted");
                        return Poll::Ready(Some(Err(CLOSED_MID_BODY.into())));
                    }
                    let (data, next) = length_step(left, &mut conn.buf);
                    self.framing = next;
                    return Poll::Ready(Some(Ok(data)));
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
                    let step = chunk_step(state, &mut conn.buf).map_err(|why| {
                        tracing::warn!("{why}; response aborted");
                        BoxError::from(why)
                    })?;
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

    /// Moves the request body along, if it is still being sent. A client body that turned
    /// out too large or malformed ends the response too: the upstream did not get the
    /// request the client sent.
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Option<BoxError> {
        let p = self.pump.as_mut()?;
        let Poll::Ready(res) = p.poll(cx) else {
            return None;
        };
        self.pump = None;
        match (res, self.conn.as_mut()) {
            (Ok(wr), Some(conn)) => conn.wr = Some(wr),
            (Err(PumpError::Client(e @ (Error::BodyTooLarge(_) | Error::BadRequest(_)))), _) => {
                tracing::warn!("{e}; response aborted");
                return Some(e.to_string().into());
            }
            _ => self.reusable = false,
        }
        None
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

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.poll_pump(cx) {
            this.conn = None;
            return Poll::Ready(Some(Err(e)));
        }
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
