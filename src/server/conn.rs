//! Connection limits: what a client may hold open, and for how long.
//!
//! hyper bounds a slow request head on HTTP/1.1 only once a request has begun, and bounds
//! nothing else: a socket that sends nothing, half an HTTP/2 preface, an idle keep-alive or
//! h2c connection, or an HTTP/2 client that keeps its flow-control window at zero could each
//! hold a descriptor forever. Each connection therefore runs under a [`Watch`] that closes it
//!
//! - before its first request has arrived, after `read_header_timeout`;
//! - while no request is in flight, after `idle_timeout` (gracefully: GOAWAY on HTTP/2);
//! - while a response holds data the client does not take, after `write_timeout` (whatever
//!   the protocol; [`StallTimeout`] covers a socket that stops draining as well).
//!
//! and at most `max_connections` are open at once. Time is measured in ticks of half the
//! relevant limit with counters bumped on the request path, so the hot path reads no clock:
//! a connection is closed after between one and one and a half times its limit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::body::{Body, BoxError};

/// The limits one connection lives under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for the first request's head to arrive.
    pub read_header_timeout: Duration,
    /// Time a connection may stay open with nothing in flight.
    pub idle_timeout: Duration,
    /// Time a response may hold data the client does not take.
    pub write_timeout: Duration,
}

/// What the request path reports about one connection. Shared by the connection's task,
/// its requests and their response bodies; only counters, so it costs no clock reads.
#[derive(Default)]
pub struct State {
    /// Requests that reached the service.
    started: AtomicU64,
    /// Requests whose response has ended (or was dropped).
    finished: AtomicU64,
    /// Response bodies holding a frame the client has not taken yet.
    waiting_on_client: AtomicUsize,
    /// Bumped each time the client takes a frame.
    taken: AtomicU64,
}

/// One request's share of its connection's [`State`]: counted as in flight until dropped.
pub struct Track {
    state: Arc<State>,
}

impl State {
    /// Counts a request in; it stays in flight until the returned [`Track`] is dropped.
    pub fn begin(self: &Arc<Self>) -> Track {
        self.started.fetch_add(1, Ordering::Relaxed);
        Track {
            state: self.clone(),
        }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        self.state.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the counters, compared tick to tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    started: u64,
    finished: u64,
    taken: u64,
}

/// What the connection's task should do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep serving; look again after this long.
    Keep(Duration),
    /// No first request within `read_header_timeout`: drop the connection.
    HeaderTimeout,
    /// Nothing in flight for `idle_timeout`: close gracefully.
    Idle,
    /// A response stalled on the client for `write_timeout`: drop the connection.
    WriteStall,
}

/// Decides, tick by tick, whether a connection has outstayed its limits.
pub struct Watch {
    state: Arc<State>,
    limits: Limits,
    last: Option<Seen>,
    /// Consecutive ticks with no change while the limit applied.
    streak: u32,
}

impl Watch {
    /// A watch over `state`.
    pub fn new(state: Arc<State>, limits: Limits) -> Watch {
        Watch {
            state,
            limits,
            last: None,
            streak: 0,
        }
    }

    /// The first tick: half of the tightest limit that can apply to a new connection.
    pub fn first_tick(&self) -> Duration {
        half(self.limits.read_header_timeout)
    }

    /// Called at each tick. Two ticks of half the limit with nothing changed mean the
    /// connection sat at least the whole limit in the same state.
    pub fn tick(&mut self) -> Verdict {
        let s = &self.state;
        let now = Seen {
            started: s.started.load(Ordering::Relaxed),
            finished: s.finished.load(Ordering::Relaxed),
            taken: s.taken.load(Ordering::Relaxed),
        };
        let in_flight = now.started > now.finished;
        let stalled = in_flight && s.waiting_on_client.load(Ordering::Relaxed) > 0;
        let (limit, verdict) = if now.started == 0 {
            (self.limits.read_header_timeout, Verdict::HeaderTimeout)
        } else if !in_flight {
            (self.limits.idle_timeout, Verdict::Idle)
        } else if stalled {
            (self.limits.write_timeout, Verdict::WriteStall)
        } else {
            // A function still working is bounded by exec_timeout, an upload by
            // read_timeout; nothing to watch here.
            self.last = Some(now);
            self.streak = 0;
            return Verdict::Keep(half(self.limits.write_timeout));
        };
        if self.last == Some(now) {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        self.last = Some(now);
        if self.streak >= 2 {
            return verdict;
        }
        Verdict::Keep(half(limit))
    }
}

fn half(d: Duration) -> Duration {
    (d / 2).max(Duration::from_millis(5))
}

/// A response body that tells its connection's [`State`] when it holds a frame the client
/// has not taken, and keeps `guard` (in-flight slot, metrics timer, the request's
/// [`Track`]) alive until the last frame has gone out.
pub struct Tracked<G> {
    inner: Body,
    /// True while a frame handed out has not been followed by the client asking for the next.
    waiting: bool,
    /// Until the body ends; the track also leads to the connection's state.
    guard: Option<(G, Track)>,
}

impl<G: Send + Unpin + 'static> Tracked<G> {
    /// Wraps `inner`. Until the client asks for the first frame, the body counts as waiting
    /// on it (an HTTP/2 client with a zero window never asks).
    pub fn wrap(inner: Body, track: Track, guard: G) -> Body {
        track
            .state
            .waiting_on_client
            .fetch_add(1, Ordering::Relaxed);
        Tracked {
            inner,
            waiting: true,
            guard: Some((guard, track)),
        }
        .boxed_unsync()
    }
}

impl<G> Tracked<G> {
    /// Counts the body as waiting on the client (or not) in its connection's state; once
    /// the body has ended there is nothing left to count.
    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        if let Some((_, track)) = &self.guard {
            let s = &track.state;
            if waiting {
                s.waiting_on_client.fetch_add(1, Ordering::Relaxed);
            } else {
                s.waiting_on_client.fetch_sub(1, Ordering::Relaxed);
                s.taken.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<G> Drop for Tracked<G> {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl<G: Unpin> http_body::Body for Tracked<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.set_waiting(false);
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => this.set_waiting(true),
            Poll::Ready(Some(Ok(_))) | Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.guard = None;
            }
            Poll::Pending => {}
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

/// Open connections, bounded by `max_connections`. Also how the server waits for every
/// connection to finish when it stops.
#[derive(Clone)]
pub struct Cap {
    permits: Arc<tokio::sync::Semaphore>,
    max: u32,
    last_warned: Arc<AtomicU64>,
}

impl Cap {
    /// A cap of `max` connections.
    pub fn new(max: usize) -> Cap {
        let max = u32::try_from(max)
            .unwrap_or(u32::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS as u32);
        Cap {
            permits: Arc::new(tokio::sync::Semaphore::new(max as usize)),
            max,
            last_warned: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A permit for one more connection, or `None` at the cap (logged at most once a
    /// second, so a flood does not flood the log too).
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if self.last_warned.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    max_connections = self.max,
                    "connection cap reached; closing new connections until some end"
                );
            }
        }
        permit
    }

    /// Waits until every connection has ended.
    pub async fn all_closed(&self) {
        let _ = self.permits.acquire_many(self.max).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_silent_connection_is_closed_after_two_unchanged_ticks() {
        let state = Arc::new(State::default());
        let mut w = Watch::new(state, limits());
        assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(5)));
        assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(5)));
        assert_eq!(w.tick(), Verdict::HeaderTimeout);
    }

    #[test]
    fn requests_keep_a_connection_open_and_idleness_closes_it() {
        let state = Arc::new(State::default());
        let mut w = Watch::new(state.clone(), limits());
        w.tick();
        let track = state.begin();
        // In flight, nothing waiting on the client: never closed, whatever the ticks.
        for _ in 0..10 {
            assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(15)));
        }
        drop(track);
        assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(30)));
        assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(30)));
        let again = state.begin();
        drop(again);
        assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(30)));
        assert_eq!(w.tick(), Verdict::Keep(Duration::from_secs(30)));
        assert_eq!(w.tick(), Verdict::Idle);
    }

    #[test]
    fn a_body_the_client_does_not_take_is_a_write_stall() {
        let state = Arc::new(State::default());
        let mut w = Watch::new(state.clone(), limits());
        let track = state.begin();
        let body = Tracked::wrap(crate::body::full("x"), track, ());
        w.tick();
        w.tick();
        assert_eq!(w.tick(), Verdict::WriteStall);
        drop(body);
        assert_eq!(state.waiting_on_client.load(Ordering::Relaxed), 0);
        assert_eq!(
            state.finished.load(Ordering::Relaxed),
            state.started.load(Ordering::Relaxed)
        );
    }
}
