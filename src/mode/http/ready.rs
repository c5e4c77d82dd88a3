//! Readiness of the function process: the poll that opens the gate at start, and
//! `/_/ready`'s answer with `ready_path`. Both go through one probe at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::UpstreamClient;
use crate::config::Upstream;
use crate::health::Health;
use crate::mode::http::upstream;

/// How often readiness is polled while the function starts (Knative probes every 50 ms).
const READY_POLL: Duration = Duration::from_millis(5);
/// A probe that takes longer counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The function's readiness as its `ready_path` (or, without one, its listening socket)
/// reports it.
pub(super) struct Readiness {
    client: UpstreamClient,
    upstream: Upstream,
    ready_path: Option<String>,
    health: Health,
    exited: Arc<AtomicBool>,
    /// When the last probe started, and what it found.
    last: Mutex<Option<(Instant, StatusCode)>>,
    /// Held while a probe is in flight: callers take turns, and one that waited for a probe
    /// that started after it asked takes that probe's answer instead of making another.
    probing: tokio::sync::Mutex<()>,
    created: Instant,
}

impl Readiness {
    pub(super) fn new(
        client: UpstreamClient,
        upstream: Upstream,
        ready_path: Option<String>,
        health: Health,
        exited: Arc<AtomicBool>,
    ) -> Readiness {
        Readiness {
            client,
            upstream,
            ready_path,
            health,
            exited,
            last: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            created: Instant::now(),
        }
    }

    /// `/_/ready` with `ready_path`: the upstream's own answer, from a probe that started
    /// after this call did (so never older than the call), with at most one probe in flight.
    /// A success while the function is still starting opens the gate at once.
    pub(super) async fn status(&self) -> StatusCode {
        let Some(path) = &self.ready_path else {
            return StatusCode::OK;
        };
        if self.exited.load(Ordering::Acquire) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let asked = Instant::now();
        let _turn = self.probing.lock().await;
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, status)) = last.filter(|(started, _)| *started >= asked) {
            return status;
        }
        let started = Instant::now();
        let status = match tokio::time::timeout(PROBE_TIMEOUT, self.client.probe(path)).await {
            Ok(Ok(status)) => status,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((started, status));
        if status.is_success() {
            self.mark_ready();
        }
        status
    }

    fn mark_ready(&self) {
        if self.health.is_ready() {
            return;
        }
        match self.health.set_ready() {
            Ok(()) => tracing::info!(after = ?self.created.elapsed(), "function ready"),
            Err(e) => tracing::error!(error = %e, "cannot write lock file"),
        }
    }

    /// Polls until the function is ready (or has exited), then marks it ready.
    pub(super) async fn poll_until_ready(self: Arc<Self>) {
        loop {
            if self.exited.load(Ordering::Acquire) || self.health.is_ready() {
                break;
            }
            let ok = match &self.ready_path {
                Some(_) => self.status().await.is_success(),
                None => upstream::connect_stream(&self.upstream).await.is_ok(),
            };
            if ok {
                self.mark_ready();
                break;
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}
