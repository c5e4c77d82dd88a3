//! One room per mode, all with the same lifecycle: [`Function::start`] (spawn what the
//! mode needs and say when it is ready), [`Function::ready`] (what `/_/ready` adds),
//! [`Function::handle`] (one request), [`Function::exited`] (a long-lived process ended on
//! its own), [`Function::signal`] (a stray signal) and [`Function::shutdown`] (after the
//! drain, stop the mode's processes with the process-group grace). The match on the mode
//! lives here and nowhere else: the server and `run` only see a `Function`.

pub mod file;
pub mod fork;
pub mod http;
pub mod static_files;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, Response, StatusCode};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::body::{Body, ReqBody};
use crate::config::{Config, ConfigError, Mode, ModeConfig};
use crate::error::Error;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::process::LogOptions;

/// Per-request facts every mode needs, settled by admission before the function runs.
#[derive(Clone)]
pub struct Ctx {
    /// The request's `X-Call-Id`, received or made.
    pub call_id: String,
    /// The same as a header value, made once for the response and the upstream.
    pub call_id_value: Option<::http::HeaderValue>,
    /// When the request arrived.
    pub received: Instant,
    /// Effective exec timeout (`exec_timeout`, shortened by `X-Timeout`).
    pub exec_timeout: Option<Duration>,
    /// `received + exec_timeout`.
    pub deadline: Option<Instant>,
    /// `received + read_timeout`: the body must have arrived by then.
    pub read_deadline: Instant,
    /// The client's IP address as a header value, for `X-Forwarded-For` (made once per
    /// connection).
    pub peer_ip: Option<::http::HeaderValue>,
    /// Variables for this request besides the `Http_*` ones: `TRACEPARENT` and `TRACESTATE`
    /// from the request, a CloudEvent's `CE_*` attributes. Fork and file modes put them in
    /// the function's environment, worker mode in the request head's `env`.
    pub env: Vec<(String, String)>,
    /// The answer waits for the whole run, so its status says how the function ended
    /// (streaming mode runs as serializing): a CloudEvent's status acknowledges it.
    pub whole: bool,
}

impl Ctx {
    /// The effective timeout, for error messages (zero when unlimited).
    pub fn timeout(&self) -> Duration {
        self.exec_timeout.unwrap_or_default()
    }
}

/// What every mode is built with besides the configuration.
#[derive(Clone)]
pub struct Shared {
    /// Readiness, draining and in-flight state; a mode says when it is ready.
    pub health: Health,
    /// How function output is forwarded to the log.
    pub log: LogOptions,
    /// Where a mode counts what only it can see (a timeout after the response started).
    pub metrics: Arc<Metrics>,
}

/// The configured mode.
pub enum Function {
    /// `streaming` and `serializing`.
    Fork(fork::Fork),
    /// `file`.
    File(file::FileMode),
    /// `http`.
    Proxy(Box<http::Proxy>),
    /// `static`.
    Static(static_files::StaticFiles),
    /// `worker`.
    Worker(worker::Workers),
}

impl Function {
    /// Builds the mode for `config.mode`; nothing is started yet.
    pub fn new(config: Arc<Config>, shared: &Shared) -> Result<Function, ConfigError> {
        Ok(match (&config.function, config.mode) {
            (ModeConfig::Fork(f), Mode::File) => {
                Function::File(file::FileMode::new(config.clone(), f.clone(), shared)?)
            }
            (ModeConfig::Fork(f), _) => {
                Function::Fork(fork::Fork::new(config.clone(), f.clone(), shared))
            }
            (ModeConfig::Http(h), _) => Function::Proxy(Box::new(http::Proxy::new(
                config.clone(),
                h.clone(),
                shared,
            ))),
            (ModeConfig::Static(s), _) => Function::Static(static_files::StaticFiles::new(s)?),
            (ModeConfig::Worker(w), _) => {
                Function::Worker(worker::Workers::new(config.clone(), w.clone(), shared))
            }
        })
    }

    /// Starts what the mode needs. Modes that run a process per request (or none) are
    /// ready at once; http mode starts its function and becomes ready when it answers.
    pub fn start(&self, health: &Health) -> Result<(), ConfigError> {
        match self {
            Function::Proxy(p) => p.start(),
            Function::Worker(w) => w.start(),
            _ => health.set_ready().map_err(|e| health.lock_error(e)),
        }
    }

    /// What `/_/ready` reports for the function itself, beyond the watchdog's own state:
    /// http mode's `ready_path` answer, 200 elsewhere.
    pub async fn ready(&self) -> StatusCode {
        match self {
            Function::Proxy(p) => p.ready_status().await,
            Function::Worker(w) => w.ready(),
            _ => StatusCode::OK,
        }
    }

    /// Handles one function request.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        match self {
            Function::Fork(f) => f.handle(req, ctx).await,
            Function::File(f) => f.handle(req, ctx).await,
            Function::Proxy(f) => f.handle(req, ctx).await,
            Function::Static(f) => f.handle(req).await,
            // Boxed: a worker request's state is twice any other mode's, and inline it would
            // set the size of every request's future, which is copied on its way in.
            Function::Worker(f) => Box::pin(f.handle(req, ctx)).await,
        }
    }

    /// Resolves, with how it ended, when the mode's long-lived process exits on its own;
    /// never for modes without one.
    pub async fn exited(&self) -> String {
        match self {
            Function::Proxy(p) => p.exited().await,
            _ => std::future::pending().await,
        }
    }

    /// A stray SIGHUP, SIGUSR1, SIGUSR2 or SIGQUIT: passed to a long-lived function's
    /// process groups (as tini and dumb-init do), otherwise logged and ignored: a process
    /// that lives for one request has nothing to reload.
    pub fn signal(&self, sig: Signal) {
        match self {
            Function::Proxy(p) => p.signal(sig),
            Function::Worker(w) => w.signal(sig),
            _ => tracing::info!(signal = %sig, "ignored (no long-lived function to forward it to)"),
        }
    }

    /// Stops the mode's processes once the drain is over: SIGTERM to the group, then
    /// SIGKILL after the grace. Per-request processes are already gone by then.
    pub async fn shutdown(&self) {
        match self {
            Function::Proxy(p) => p.shutdown().await,
            Function::Worker(w) => w.shutdown().await,
            _ => {}
        }
    }
}

/// `fut`'s output, or `None` if `deadline` passes first (no deadline: it always finishes).
pub(crate) async fn within<F: std::future::Future>(
    deadline: Option<Instant>,
    fut: F,
) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}
