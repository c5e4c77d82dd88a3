//! Bodies on their way through the proxy: the request's cap at `max_body_size`, the
//! response's idle limit, and the splice of an upgraded connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::body::{BoxError, ReqBody};
use crate::metrics::Metrics;
use crate::mode::http::upstream::{BodyTooLarge, Upgraded};

/// A request body of unknown length that fails once it would grow past `limit`: the frame
/// that crosses the limit is not handed on, so the upstream never gets more than `limit`.
pub(super) struct CappedBody {
    inner: ReqBody,
    left: u64,
    limit: u64,
}

impl CappedBody {
    pub(super) fn new(inner: ReqBody, limit: u64) -> CappedBody {
        CappedBody {
            inner,
            left: limit,
            limit,
        }
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let res = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &res {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            match this.left.checked_sub(len) {
                Some(left) => this.left = left,
                None => return Poll::Ready(Some(Err(io::Error::other(BodyTooLarge(this.limit))))),
            }
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The `max_body_size` a failed exchange's error chain carries, if that is why it failed.
pub(super) fn too_large(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(BodyTooLarge(limit)) = err.downcast_ref() {
            return Some(*limit);
        }
        if let Some(BodyTooLarge(limit)) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref())
        {
            return Some(*limit);
        }
        cur = err.source();
    }
    None
}

/// A response body that fails when the upstream sends nothing for `idle`: streams run as
/// long as data flows, and a stalled one is cut off.
pub(super) struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Where a cut stream is counted as a timeout.
    metrics: Arc<Metrics>,
    /// Started the first time the body has to wait: most small bodies never do, and a timer
    /// per response was a measurable cost.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleBody<B> {
    pub(super) fn new(inner: B, idle: Duration, metrics: Arc<Metrics>) -> IdleBody<B> {
        IdleBody {
            inner,
            idle,
            metrics,
            timer: None,
        }
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.metrics.timeout();
                    tracing::warn!(idle = ?this.idle, "upstream stream idle too long; response aborted");
                    return Poll::Ready(Some(Err("upstream idle timeout".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// Copies both ways between an upgraded client connection and the upstream, closing both
/// when either side ends or nothing moves for `idle`.
pub(super) async fn splice_upgraded(
    client: hyper::upgrade::OnUpgrade,
    mut upstream: Upgraded,
    idle: Option<Duration>,
) {
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed");
            return;
        }
    };
    let moved = Arc::new(AtomicU64::new(0));
    let mut client = Counted {
        inner: TokioIo::new(client),
        moved: moved.clone(),
    };
    // Whatever the upstream sent right behind its 101 head goes to the client first.
    let early = upstream.take_leftover();
    if !early.is_empty() {
        use tokio::io::AsyncWriteExt;
        if client.write_all(&early).await.is_err() {
            return;
        }
    }
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let Some(idle) = idle else {
        let _ = copy.await;
        return;
    };
    let watch = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(idle).await;
            let now = moved.load(Ordering::Relaxed);
            if now == last {
                return;
            }
            last = now;
        }
    };
    tokio::select! {
        _ = copy => {}
        _ = watch => tracing::info!(idle = ?idle, "upgraded connection idle; closed"),
    }
}

/// Counts bytes moved through a stream, so an idle watchdog can see progress.
struct Counted<T> {
    inner: T,
    moved: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.moved.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
