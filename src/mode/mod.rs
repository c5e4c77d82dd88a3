//! One room per mode, all with the same shape: `handle(request, ctx) -> response`.

pub mod file;
pub mod fork;
pub mod http;
pub mod static_files;

use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, Response};
use tokio::time::Instant;

use crate::body::{Body, ReqBody};
use crate::config::{Config, ConfigError, Mode};
use crate::error::Error;
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
    /// Where timeouts found after the response started are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Ctx {
    /// The effective timeout, for error messages (zero when unlimited).
    pub fn timeout(&self) -> Duration {
        self.exec_timeout.unwrap_or_default()
    }
}

/// The configured mode's request handler.
pub enum Function {
    /// `streaming` and `serializing`.
    Fork(fork::Fork),
    /// `file`.
    File(file::FileMode),
    /// `http`.
    Proxy(Box<http::Proxy>),
    /// `static`.
    Static(static_files::StaticFiles),
}

impl Function {
    /// Builds the handler for `config.mode`.
    pub fn new(
        config: Arc<Config>,
        health: &crate::health::Health,
        log: LogOptions,
    ) -> Result<Function, ConfigError> {
        Ok(match config.mode {
            Mode::Streaming | Mode::Serializing => Function::Fork(fork::Fork::new(config, log)),
            Mode::File => Function::File(file::FileMode::new(config, log)?),
            Mode::Static => Function::Static(static_files::StaticFiles::new(&config)?),
            Mode::Http => Function::Proxy(Box::new(http::Proxy::new(config, health.clone(), log))),
        })
    }

    /// Handles one function request.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        match self {
            Function::Fork(f) => f.handle(req, ctx).await,
            Function::File(f) => f.handle(req, ctx).await,
            Function::Proxy(f) => f.handle(req, ctx).await,
            Function::Static(f) => f.handle(req).await,
        }
    }
}
