//! A request body the upstream stopped taking: what the exchange and the pump know about
//! it, and how the rest is read off the client connection.
//!
//! An upstream may answer before it has read the whole body (an early 413, a function that
//! ignores the body) and then close its connection. The client has sent, or is sending, the
//! rest. If the watchdog dropped it unread, hyper would close the client connection, and a
//! response sent without `Connection: close` would be followed by a reset (RFC 9112 9.6).
//! So the rest is read and thrown away instead; how long for depends on what the response
//! head told the client (see [`DISCARD_UP_TO`] and [`LINGER`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::Wr;
use super::send::{Pump, PumpError};
use crate::body::ReqBody;

/// At most this much of the declared body may be left when the answer's head goes out
/// with the upload already failed, for the client connection to stay open: the rest is
/// read and thrown away (nginx and Go drain small bodies the same way). More, or a chunked
/// body of unknown length, and the answer says `Connection: close`.
pub(super) const DISCARD_UP_TO: u64 = 64 * 1024;

/// After an answer that said `Connection: close`, the rest of the body is still read for at
/// most this long (and never past the request's read deadline), so the close that follows
/// is an orderly one and not a reset that could destroy the answer on its way (nginx's
/// lingering close; its `lingering_timeout` is 5 s too).
pub(super) const LINGER: Duration = Duration::from_secs(5);

/// What the pump and the exchange share about one request body.
#[derive(Default)]
pub(super) struct UploadState {
    /// The upstream no longer takes the body (its answer ended, or the exchange failed):
    /// the pump stops writing and discards the rest.
    abandoned: AtomicBool,
    wake: Notify,
    /// Why writing to the upstream failed, once it has.
    failed: Mutex<Option<String>>,
    /// Bytes of the declared length the client has not sent yet (`u64::MAX`: not known).
    left: AtomicU64,
    /// The client was told `Connection: close`: the discard is bounded by [`LINGER`].
    linger: AtomicBool,
}

impl UploadState {
    pub(super) fn new(left: u64) -> Arc<UploadState> {
        Arc::new(UploadState {
            left: AtomicU64::new(left),
            ..UploadState::default()
        })
    }

    pub(super) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    pub(super) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Resolves once [`UploadState::abandon`] has been called.
    pub(super) async fn abandoned(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_abandoned() {
                return;
            }
            woken.await;
        }
    }

    pub(super) fn fail(&self, why: &io::Error) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.get_or_insert_with(|| why.to_string());
    }

    /// Why writing the body to the upstream failed, if it has.
    pub(super) fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_left(&self, left: u64) {
        self.left.store(left, Ordering::Relaxed);
    }

    /// Decided when the answer's head is ready: true when the upload is known to be lost
    /// (writing it failed, or the upstream said it closes the connection) and more than
    /// [`DISCARD_UP_TO`] may be left, so the client is to be told `Connection: close`.
    pub(super) fn close_client(&self, upstream_closes: bool) -> bool {
        let lost = upstream_closes || self.failure().is_some();
        let close = lost && self.left.load(Ordering::Relaxed) > DISCARD_UP_TO;
        if close {
            self.linger.store(true, Ordering::Release);
        }
        close
    }
}

/// Reads the rest of the client's body and drops it: until its end, a bad frame, the read
/// deadline, or [`LINGER`] after the client was told the connection closes.
pub(super) async fn discard(mut body: ReqBody, deadline: Instant, state: &UploadState) {
    let started = Instant::now();
    let mut left = state.left.load(Ordering::Relaxed);
    loop {
        let until = if state.linger.load(Ordering::Acquire) {
            deadline.min(started + LINGER)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                left = left.saturating_sub(len);
                state.set_left(left);
            }
            Ok(None) => return,
            // The client connection is closed either way (hyper sees the body dropped).
            Ok(Some(Err(_))) | Err(_) => {
                tracing::debug!(left, "stopped discarding an unread request body");
                return;
            }
        }
    }
}

/// A request body still on its way to the upstream. Dropped unfinished (the answer ended
/// first, or the exchange failed), it is abandoned: the pump goes on in a task of its own,
/// only to read the rest off the client connection.
pub(super) struct Upload {
    fut: Option<Pump>,
    pub(super) state: Arc<UploadState>,
}

impl Upload {
    pub(super) fn new(fut: Pump, state: Arc<UploadState>) -> Upload {
        Upload {
            fut: Some(fut),
            state,
        }
    }

    /// Moves the body along; `Ready` once it was sent whole (or the pump gave up).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wr, PumpError>> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(Err(PumpError::Upstream));
        };
        let res = std::task::ready!(Pin::as_mut(fut).poll(cx));
        self.fut = None;
        Poll::Ready(res)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else {
            return;
        };
        self.state.abandon();
        // Outside a runtime (never on the request path) the body is simply dropped.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(fut);
        }
    }
}
