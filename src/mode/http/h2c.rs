//! The HTTP/2 upstream (`upstream_h2c`): one prior-knowledge h2c connection that every
//! request multiplexes over, opened on first use and again after it closed.
//!
//! hyper's connection-level client is enough here: HTTP/2 needs no pool of connections, and
//! hyper-util's pooled client, built for many hosts and protocols, cost the binary about
//! 60 KB for the one connection this needs.

use std::io;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;

use super::upstream;
use crate::body::{BoxError, ReqBody};
use crate::config::Upstream;

/// The shared h2c connection to the function.
pub struct H2Upstream {
    upstream: Upstream,
    /// The open connection's handle; a new one replaces it once it closed. The lock is held
    /// while connecting, so requests arriving together open one connection, not many.
    sender: Mutex<Option<SendRequest<ReqBody>>>,
}

impl H2Upstream {
    /// Nothing is connected until the first request.
    pub fn new(upstream: Upstream) -> H2Upstream {
        H2Upstream {
            upstream,
            sender: Mutex::new(None),
        }
    }

    /// Sends `req` over the shared connection, opening it first when there is none.
    pub async fn request(&self, req: Request<ReqBody>) -> Result<Response<Incoming>, BoxError> {
        let mut sender = self.sender().await?;
        // Waits while the upstream's concurrent-stream limit is reached.
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    async fn sender(&self) -> Result<SendRequest<ReqBody>, BoxError> {
        let mut slot = self.sender.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let stream = upstream::connect_stream(&self.upstream)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect: {e}")))?;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "h2c upstream connection ended");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }
}
