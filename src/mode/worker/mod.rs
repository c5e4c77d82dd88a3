//! `worker`: a pool of long-lived processes that each handle one request at a time over
//! pipes, in the protocol of `docs/worker-protocol.md`: a request's head line and body on
//! the worker's stdin, the answer's head line and body on its descriptor 3, everything it
//! prints to the log. A script or a CLI that reads requests in a loop runs at the speed of
//! a persistent server without embedding one.
//!
//! The request body is read whole first (bounded like every buffered body), so the head
//! can say its length and a worker never waits on a slow client; the answer is read whole
//! too, so a slow client never holds a worker. A worker past the request's deadline, or
//! whose client left, is killed with its group and replaced: its state is unknown.

mod pool;
pub mod protocol;

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;

use crate::body::{Body, ReqBody};
use crate::config::{Config, ConfigError, WorkerConfig};
use crate::error::Error;
use crate::health::Health;
use crate::mode::{within, Ctx, Shared};

use pool::{ExchangeError, Pool, PoolSettings};

/// The worker pool as a mode.
pub struct Workers {
    config: Arc<Config>,
    settings: WorkerConfig,
    health: Health,
    pool: Arc<Pool>,
}

impl Workers {
    /// A pool of `settings.workers`; nothing is started yet.
    pub fn new(config: Arc<Config>, settings: WorkerConfig, shared: &Shared) -> Workers {
        let pool = Pool::new(
            PoolSettings {
                argv: settings.fprocess.clone(),
                workers: settings.workers,
                max_requests: settings.worker_max_requests,
                log: shared.log,
            },
            shared.health.clone(),
            shared.metrics.clone(),
        );
        Workers {
            config,
            settings,
            health: shared.health.clone(),
            pool,
        }
    }

    /// Starts every worker; the watchdog is ready once the first says so.
    pub fn start(&self) -> Result<(), ConfigError> {
        self.health
            .check_lock_writable()
            .map_err(|e| self.health.lock_error(e))?;
        self.pool.start();
        Ok(())
    }

    /// 503 while no worker is ready (all starting, or all lost at once), else 200.
    pub fn ready(&self) -> StatusCode {
        if self.pool.live() == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }

    /// Passes a stray signal to every worker's group.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.pool.signal(sig);
    }

    /// Stops every worker once the drain is over.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    /// One request: body read whole, a free worker taken (waiting in arrival order), one
    /// exchange within the deadline.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let limit = self.config.buffered_body_limit();
        let body = crate::body::read_body(body, limit, ctx.read_deadline).await?;
        let mut env = if self.settings.cgi_headers {
            crate::cgi::request_env(&parts, &ctx.call_id)
        } else {
            Vec::new()
        };
        env.extend(ctx.env.iter().cloned());
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        let head = protocol::request_head(&parts, &ctx.call_id, body.len(), remaining, &env);
        let Some(lease) = within(ctx.deadline, self.pool.checkout()).await else {
            // Waiting for a busy worker is a timeout; for one that never came up, the
            // function is not there (retry elsewhere).
            return Err(match self.pool.live() {
                0 => Error::Unavailable("no worker ready within exec_timeout"),
                _ => Error::Timeout(ctx.timeout()),
            });
        };
        let mut lease = lease.ok_or(Error::Unavailable("the worker pool is stopping"))?;
        let answer = within(ctx.deadline, lease.exchange(&head, &body, limit)).await;
        let (head, out) = match answer {
            // Dropping the lease kills the worker's group and starts a new one.
            None => {
                tracing::warn!(call_id = %ctx.call_id, "{}", lease.describe("past exec_timeout; killed"));
                return Err(Error::Timeout(ctx.timeout()));
            }
            Some(Err(ExchangeError::Broken(why))) => {
                return Err(Error::FunctionFailed(lease.cause(&why).await));
            }
            Some(Ok(answer)) => answer,
        };
        lease.release();
        Ok(crate::mode::fork::response(
            &self.settings.content_type,
            head.status,
            head.headers,
            crate::body::full(out),
        ))
    }
}
