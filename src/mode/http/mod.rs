//! `http`: one long-lived function process behind a reverse proxy. The process is started
//! once in its own process group and supervised; requests wait until it listens; bodies
//! stream both ways with the framing the client chose; upgrades pass through.
//!
//! What the upstream is given: the client's request with one valid Host, no hop-by-hop
//! headers, `X-Forwarded-*` and the call id added, a path without dot segments under
//! `upstream_url`'s prefix, and a body of at most `max_body_size`. CONNECT, a second or
//! invalid Host, and a path above the root are answered here and never reach it.

mod h2c;
mod headers;
mod ready;
mod stream;
mod supervise;
mod target;
pub mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::body::{Body, BoxError, ReqBody};
use crate::config::{Config, ConfigError, HttpConfig, Upstream};
use crate::error::Error;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::mode::{within, Ctx, Shared};
use crate::process::LogOptions;
use upstream::{Pool, Reply, SendError};

use headers::{add_call_id, add_forwarded, request_host, strip_hop_by_hop, wants_upgrade};
use ready::Readiness;
use stream::{splice_upgraded, too_large, CappedBody, IdleBody};

/// The reverse proxy to the function process.
pub struct Proxy {
    config: Arc<Config>,
    settings: HttpConfig,
    /// `settings.upstream`, shared with the connector.
    upstream: Upstream,
    client: UpstreamClient,
    health: Health,
    exited: Arc<AtomicBool>,
    readiness: Arc<Readiness>,
    log: LogOptions,
    metrics: Arc<crate::metrics::Metrics>,
    /// The function process once started; taken by shutdown.
    running: Mutex<Option<supervise::Running>>,
}

impl Proxy {
    /// A proxy for `settings.upstream`; nothing is started yet.
    pub fn new(config: Arc<Config>, settings: HttpConfig, shared: &Shared) -> Proxy {
        let health = shared.health.clone();
        let upstream = settings.upstream.clone();
        let client = if settings.upstream_h2c {
            UpstreamClient::H2(Arc::new(h2c::H2Upstream::new(upstream.clone())))
        } else {
            UpstreamClient::H1(Arc::new(Pool::new(upstream.clone())))
        };
        let exited = Arc::new(AtomicBool::new(false));
        let readiness = Arc::new(Readiness::new(
            client.clone(),
            upstream.clone(),
            settings.ready_path.clone(),
            health.clone(),
            exited.clone(),
        ));
        Proxy {
            config,
            settings,
            upstream,
            client,
            health,
            exited,
            readiness,
            log: shared.log,
            metrics: shared.metrics.clone(),
            running: Mutex::new(None),
        }
    }

    /// Starts the function process, its log forwarding, its supervision and the readiness
    /// poller that marks the watchdog ready once the upstream answers.
    pub fn start(&self) -> Result<(), ConfigError> {
        // Ready (and the lock file) come later, once the upstream answers; find out now
        // whether the lock file can be written at all.
        self.health
            .check_lock_writable()
            .map_err(|e| self.health.lock_error(e))?;
        let argv = &self.settings.fprocess;
        let running = supervise::spawn(argv, self.log, self.exited.clone()).map_err(|e| {
            ConfigError::new(
                "fprocess",
                format!("cannot start {:?}: {e}", argv.program()),
            )
        })?;
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        tokio::spawn(self.readiness.clone().poll_until_ready());
        if let UpstreamClient::H1(pool) = &self.client {
            pool.spawn_janitor();
        }
        Ok(())
    }

    /// Resolves when the function process exits on its own (not when stopped).
    pub async fn exited(&self) -> String {
        let died = self.running().map(|r| r.died());
        match died {
            Some(died) => died.await,
            None => std::future::pending().await,
        }
    }

    /// Passes a stray signal to the function's process group.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        match self.running() {
            Some(r) => r.signal(sig),
            None => tracing::info!(signal = %sig, "ignored (the function has not started)"),
        }
    }

    /// Stops the function's process group (SIGTERM, grace, SIGKILL) and waits for it.
    pub async fn shutdown(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(r) = running {
            r.stop().await;
        }
    }

    fn running(&self) -> Option<supervise::Handle> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(supervise::Running::handle)
    }

    /// `/_/ready` with `ready_path`: the upstream's own answer, from a probe made after
    /// this call began (one probe in flight at a time; callers that waited share the next).
    /// Also usable while the function starts: a success opens the readiness gate at once,
    /// instead of at the next poll.
    pub async fn ready_status(&self) -> StatusCode {
        self.readiness.status().await
    }

    /// Proxies one request.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        target::refuse_method(req.method())?;
        let limit = self.config.max_body_size;
        if limit > 0 && req.body().size_hint().lower() > limit {
            return Err(Error::BodyTooLarge(limit));
        }
        if self.exited.load(Ordering::Acquire) {
            return Err(Error::Unavailable("function process has exited"));
        }
        if !self.health.is_ready() {
            // Requests that arrive while the function starts wait for it, within exec_timeout.
            within(ctx.deadline, self.health.wait_ready())
                .await
                .ok_or(Error::Unavailable("function not ready within exec_timeout"))?;
        }
        match &self.client {
            UpstreamClient::H1(pool) => self.handle_h1(pool, req, ctx).await,
            UpstreamClient::H2(client) => self.handle_h2(client, req, ctx).await,
        }
    }

    async fn handle_h1(
        &self,
        pool: &Arc<Pool>,
        mut req: Request<ReqBody>,
        ctx: &Ctx,
    ) -> Result<Response<Body>, Error> {
        let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let pq = target::normalize(pq)?;
        let host = request_host(&parts);
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            // The body is framed by Transfer-Encoding; a Content-Length beside it is stale
            // (RFC 9112 6.3) and must not go upstream with the re-framed body.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        add_forwarded(&mut parts.headers, ctx, host.as_ref());
        add_call_id(&mut parts.headers, ctx);
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 clients carry the host in :authority, HTTP/1.0 clients may send none;
            // HTTP/1.1 upstreams need one.
            let fallback = match &self.upstream {
                Upstream::Tcp { authority, .. } => HeaderValue::from_str(authority).ok(),
                Upstream::Unix(_) => None,
            };
            let value = host
                .or(fallback)
                .unwrap_or(HeaderValue::from_static("localhost"));
            parts.headers.insert(header::HOST, value);
        }
        let body = self.maybe_buffer(&mut parts.headers, body, ctx).await?;
        let body = self.cap(body);
        let prefix = match &self.upstream {
            // `OPTIONS *` names the server, not a path under the prefix.
            Upstream::Tcp { prefix, .. } if pq.starts_with('/') => prefix.as_str(),
            _ => "",
        };
        let head = upstream::Head {
            method: &parts.method,
            prefix,
            path_and_query: &pq,
            headers: &parts.headers,
        };
        let sent = pool.send(&head, body, upgrade.is_some(), ctx.read_deadline);
        let reply = within(ctx.deadline, sent)
            .await
            .ok_or(Error::Timeout(ctx.timeout()))?;
        let reply = reply.map_err(|e| match e {
            SendError::Client(e) => e,
            SendError::Upstream(why) => self.upstream_failed(why),
        })?;
        match reply {
            Reply::Upgraded(resp, conn) => {
                if let Some(client_side) = upgrade {
                    tokio::spawn(splice_upgraded(client_side, conn, ctx.exec_timeout));
                }
                let (mut parts, ()) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, true);
                Ok(Response::from_parts(parts, crate::body::empty()))
            }
            Reply::Response(resp) => {
                // Connection-specific headers are forbidden in HTTP/2 (RFC 9113 8.2.2); there
                // the unread body ends with its stream alone.
                let close = resp.body().closes_client() && parts.version < Version::HTTP_2;
                let mut resp = to_client(resp, ctx, &self.metrics);
                if close {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(resp)
            }
        }
    }

    async fn handle_h2(
        &self,
        client: &h2c::H2Upstream,
        req: Request<ReqBody>,
        ctx: &Ctx,
    ) -> Result<Response<Body>, Error> {
        let (mut parts, body) = req.into_parts();
        let host = request_host(&parts);
        // To an HTTP/2 upstream the host travels as :authority, taken from the URI; a Host
        // header beside it would be a second, conflicting source.
        let authority = host.as_ref().and_then(|h| h.to_str().ok());
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = upstream_uri(&self.upstream, authority, &target::normalize(pq)?)?;
        // An HTTP/2 upstream connection cannot carry an HTTP/1.1 upgrade.
        strip_hop_by_hop(&mut parts.headers, false);
        add_forwarded(&mut parts.headers, ctx, host.as_ref());
        add_call_id(&mut parts.headers, ctx);
        parts.version = Version::HTTP_2;
        parts.headers.remove(header::HOST);
        let body = self.maybe_buffer(&mut parts.headers, body, ctx).await?;
        let body = self.cap(body);
        let sent = client.request(Request::from_parts(parts, body));
        let resp = within(ctx.deadline, sent)
            .await
            .ok_or(Error::Timeout(ctx.timeout()))?
            .map_err(|e| match too_large(&*e) {
                Some(limit) => Error::BodyTooLarge(limit),
                None => self.upstream_failed(error_chain(&*e)),
            })?;
        Ok(to_client(resp, ctx, &self.metrics))
    }

    fn upstream_failed(&self, why: String) -> Error {
        if self.exited.load(Ordering::Acquire) {
            Error::FunctionFailed("function process has exited".into())
        } else {
            Error::FunctionFailed(format!("upstream request failed: {why}"))
        }
    }

    /// A body whose length is not known up front is cut at `max_body_size` as it streams
    /// (one with a Content-Length over it was refused before the upstream was asked).
    fn cap(&self, body: ReqBody) -> ReqBody {
        let limit = self.config.max_body_size;
        if limit == 0 || body.size_hint().upper().is_some_and(|n| n <= limit) {
            return body;
        }
        CappedBody::new(body, limit).boxed_unsync()
    }

    /// With `buffer_http`, the whole body is read first and sent with Content-Length.
    async fn maybe_buffer(
        &self,
        headers: &mut HeaderMap,
        body: ReqBody,
        ctx: &Ctx,
    ) -> Result<ReqBody, Error> {
        if !self.settings.buffer_http {
            return Ok(body);
        }
        let bytes =
            crate::body::read_body(body, self.config.buffered_body_limit(), ctx.read_deadline)
                .await?;
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok(http_body_util::Full::new(bytes)
            .map_err(|e| match e {})
            .boxed_unsync())
    }
}

/// The upstream's response as the client gets it: hop-by-hop headers gone, and the body
/// bounded by `exec_timeout` as an idle limit.
fn to_client<B>(resp: Response<B>, ctx: &Ctx, metrics: &Arc<Metrics>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let body = match ctx.exec_timeout {
        Some(idle) => IdleBody::new(body, idle, metrics.clone()).boxed_unsync(),
        None => body.map_err(Into::into).boxed_unsync(),
    };
    Response::from_parts(parts, body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The URI sent upstream: the upstream's address (or, for HTTP/2, the client's host as
/// :authority), its path prefix, and the client's (normalised) path and query.
fn upstream_uri(upstream: &Upstream, authority: Option<&str>, pq: &str) -> Result<Uri, Error> {
    let s = match upstream {
        Upstream::Tcp {
            authority: a,
            prefix,
        } => {
            format!("http://{}{prefix}{pq}", authority.unwrap_or(a))
        }
        Upstream::Unix(_) => format!("http://{}{pq}", authority.unwrap_or("localhost")),
    };
    s.parse()
        .map_err(|_| Error::BadRequest("request target cannot be forwarded".into()))
}

/// How the function is spoken to: HTTP/1.1 through the watchdog's own client, or HTTP/2
/// (`upstream_h2c`) over one multiplexed connection (`h2c.rs`).
#[derive(Clone)]
enum UpstreamClient {
    H1(Arc<Pool>),
    H2(Arc<h2c::H2Upstream>),
}

impl UpstreamClient {
    /// `GET path` on the function: its status.
    async fn probe(&self, path: &str) -> Result<StatusCode, BoxError> {
        match self {
            UpstreamClient::H1(pool) => pool
                .probe(path)
                .await
                .map_err(|e| -> BoxError { format!("{e:?}").into() }),
            UpstreamClient::H2(client) => {
                let req = Request::get(format!("http://localhost{path}"))
                    .header(header::USER_AGENT, "fwatchdog-ready")
                    .body(crate::body::empty_req())?;
                Ok(client.request(req).await?.status())
            }
        }
    }
}
