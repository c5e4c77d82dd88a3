//! The HTTP/2 upstream (`upstream_h2c`): one prior-knowledge h2c connection that every
//! request multiplexes over, opened on first use and again after it closed.
//!
//! hyper's connection-level client is enough here: HTTP/2 needs no pool of connections, and
//! hyper-util's pooled client, built for many hosts and protocols, cost the binary 190 KB
//! (at the release profile) for the one connection this needs.

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

    /// Sends `req` over the shared connection, opening it first when there is none. A
    /// request the connection did not take (it was closing: the upstream sent GOAWAY or
    /// hung up) goes once more, over a new connection; hyper hands such a request back
    /// untouched, so this holds for requests with a body too.
    pub async fn request(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, BoxError> {
        let mut retried = false;
        loop {
            let mut sender = self.sender().await?;
            // Waits while the upstream's concurrent-stream limit is reached.
            let sent = match sender.ready().await {
                Ok(()) => sender.try_send_request(req).await,
                Err(e) if !retried => {
                    tracing::debug!(error = %e, "h2c upstream connection closed; opening another");
                    self.forget().await;
                    retried = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !retried => {
                        tracing::debug!(error = %e.error(), "h2c request not taken; sending it again");
                        req = unsent;
                        self.forget().await;
                        retried = true;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Drops the shared connection's handle so the next request opens a new one.
    async fn forget(&self) {
        *self.sender.lock().await = None;
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;

    /// A real hyper HTTP/2 server on loopback that closes each connection (GOAWAY, then the
    /// close once its streams are done) after it has answered three requests, and counts
    /// the connections.
    async fn three_per_connection_h2_server() -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = l.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let served = Arc::new(AtomicUsize::new(0));
                    let done = Arc::new(tokio::sync::Notify::new());
                    let (n, d) = (served.clone(), done.clone());
                    let svc = hyper::service::service_fn(move |_req| {
                        if n.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                            d.notify_one();
                        }
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = done.notified() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        });
        (authority, accepted)
    }

    async fn get(up: &H2Upstream) -> String {
        let req = Request::get("http://localhost/")
            .body(crate::body::empty_req())
            .unwrap();
        let resp = up.request(req).await.expect("the request went through");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn requests_share_one_connection_and_a_closed_one_is_replaced() {
        let (authority, accepted) = three_per_connection_h2_server().await;
        let up = H2Upstream::new(Upstream::Tcp {
            authority,
            prefix: String::new(),
        });
        let (a, b, c) = tokio::join!(get(&up), get(&up), get(&up));
        assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("hi", "hi", "hi"));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "three requests, one connection"
        );
        // The server closes that connection after the third answer; wait until the client
        // side knows (the connection's task has ended).
        for _ in 0..500 {
            let closed = up
                .sender
                .lock()
                .await
                .as_ref()
                .is_some_and(|s| s.is_closed());
            if closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(get(&up).await, "hi");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a new connection for the next request"
        );
    }
}
