//! `http`: one long-lived function process behind a reverse proxy. The process is started
//! once in its own process group and supervised; requests wait until it listens; bodies
//! stream both ways with the framing the client chose; upgrades pass through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError, ReqBody};
use crate::config::{Config, Upstream};
use crate::error::Error;
use crate::function::upstream::{self, Pool, Reply, SendError, Upgraded};
use crate::function::Ctx;
use crate::health::Health;
use crate::process::{self, describe_exit, FunctionProcess, LogOptions};

/// How often readiness is polled while the function starts (Knative probes every 50 ms).
const READY_POLL: Duration = Duration::from_millis(5);

/// The reverse proxy to the function process.
pub struct Proxy {
    config: Arc<Config>,
    /// `config.upstream`, which http mode always has.
    upstream: Upstream,
    client: UpstreamClient,
    health: Health,
    exited: Arc<AtomicBool>,
    log: LogOptions,
}

/// The running function process, as seen by [`crate::run`].
pub struct Supervisor {
    /// Resolves with a description of the exit when the process ends on its own.
    pub exited: oneshot::Receiver<String>,
    /// Asks the supervisor to stop the process group (SIGTERM, grace, SIGKILL).
    pub stop: oneshot::Sender<()>,
    /// Finishes once the process is gone after a stop.
    pub done: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy for `config.upstream`; nothing is started yet.
    pub fn new(config: Arc<Config>, health: Health, log: LogOptions) -> Proxy {
        let upstream = config
            .upstream
            .clone()
            .expect("http mode has an upstream (checked in config)");
        let client = if config.upstream_h2c {
            UpstreamClient::H2(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .http2_only(true)
                    .build(UpstreamConnector {
                        upstream: Arc::new(upstream.clone()),
                    }),
            ))
        } else {
            UpstreamClient::H1(Arc::new(Pool::new(upstream.clone())))
        };
        Proxy {
            config,
            upstream,
            client,
            health,
            exited: Arc::new(AtomicBool::new(false)),
            log,
        }
    }

    /// Starts the function process, its log forwarding, its supervision and the readiness
    /// poller that marks the watchdog ready once the upstream answers.
    pub fn start(&self) -> io::Result<Supervisor> {
        let argv = &self.config.fprocess;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        process::die_with_the_watchdog(&mut cmd);
        let mut proc = FunctionProcess::spawn(&mut cmd)?;
        tracing::info!(pid = proc.pgid(), fprocess = ?argv, "started function process");
        if let Some(out) = proc.child().stdout.take() {
            tokio::spawn(process::forward_lines(out, "stdout", self.log));
        }
        if let Some(err) = proc.child().stderr.take() {
            tokio::spawn(process::forward_lines(err, "stderr", self.log));
        }
        let (exit_tx, exit_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let exited = self.exited.clone();
        let done = tokio::spawn(async move {
            tokio::select! {
                status = proc.wait() => {
                    exited.store(true, Ordering::Release);
                    let how = match status {
                        Ok(s) => describe_exit(&s),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(exit = %how, "function process exited");
                    let _ = exit_tx.send(how);
                }
                _ = stop_rx => {
                    let status = proc.terminate_and_wait().await;
                    exited.store(true, Ordering::Release);
                    let how = status.map(|s| describe_exit(&s)).unwrap_or_default();
                    tracing::info!(exit = %how, "function process stopped");
                }
            }
        });
        let poller = ReadyPoller {
            client: self.client.clone(),
            upstream: self.upstream.clone(),
            ready_path: self.config.ready_path.clone(),
            health: self.health.clone(),
            exited: self.exited.clone(),
        };
        tokio::spawn(poller.run());
        Ok(Supervisor {
            exited: exit_rx,
            stop: stop_tx,
            done,
        })
    }

    /// `/_/ready` with `ready_path`: the upstream's own answer.
    pub async fn ready_status(&self) -> StatusCode {
        let Some(path) = &self.config.ready_path else {
            return StatusCode::OK;
        };
        match tokio::time::timeout(Duration::from_secs(2), self.client.probe(path)).await {
            Ok(Ok(status)) => status,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Proxies one request.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
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
        let host = request_host(&parts);
        strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        add_forwarded(&mut parts.headers, ctx, host.as_ref());
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
        let prefix = match &self.upstream {
            Upstream::Tcp { prefix, .. } => prefix.as_str(),
            Upstream::Unix(_) => "",
        };
        let head = upstream::Head {
            method: &parts.method,
            prefix,
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
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
            Reply::Response(resp) => Ok(to_client(resp, ctx)),
        }
    }

    async fn handle_h2(
        &self,
        client: &Client<UpstreamConnector, ReqBody>,
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
        parts.uri = upstream_uri(&self.upstream, authority, pq)?;
        // An HTTP/2 upstream connection cannot carry an HTTP/1.1 upgrade.
        strip_hop_by_hop(&mut parts.headers, false);
        add_forwarded(&mut parts.headers, ctx, host.as_ref());
        parts.version = Version::HTTP_2;
        parts.headers.remove(header::HOST);
        let body = self.maybe_buffer(&mut parts.headers, body, ctx).await?;
        let sent = client.request(Request::from_parts(parts, body));
        let resp = within(ctx.deadline, sent)
            .await
            .ok_or(Error::Timeout(ctx.timeout()))?
            .map_err(|e| self.upstream_failed(error_chain(&e)))?;
        Ok(to_client(resp, ctx))
    }

    fn upstream_failed(&self, why: String) -> Error {
        if self.exited.load(Ordering::Acquire) {
            Error::FunctionFailed("function process has exited".into())
        } else {
            Error::FunctionFailed(format!("upstream request failed: {why}"))
        }
    }

    /// With `buffer_http`, the whole body is read first and sent with Content-Length.
    async fn maybe_buffer(
        &self,
        headers: &mut HeaderMap,
        body: ReqBody,
        ctx: &Ctx,
    ) -> Result<ReqBody, Error> {
        if !self.config.buffer_http {
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

/// `fut`'s output, or `None` if `deadline` passes first.
async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The upstream's response as the client gets it: hop-by-hop headers gone, and the body
/// bounded by `exec_timeout` as an idle limit.
fn to_client<B>(resp: Response<B>, ctx: &Ctx) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let body = match ctx.exec_timeout {
        Some(idle) => IdleBody::new(body, idle).boxed_unsync(),
        None => body.map_err(Into::into).boxed_unsync(),
    };
    Response::from_parts(parts, body)
}

/// The host the client addressed: its Host header, or (HTTP/2) the URI's authority.
fn request_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
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
/// :authority), its path prefix, and the client's path and query as received.
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

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers and those named in `Connection`. For an upgrade the
/// `Connection: upgrade` / `Upgrade` pair is what the upgrade is made of, so it stays.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names present, and removals only of those found: hashed lookups of
    // all nine names (and of every Connection token) per message in each direction were a
    // measurable part of the proxy's own cost.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n.as_str()))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let token = token.trim();
        // `close` names no header, and hop-by-hop names are already on the list.
        if token.is_empty()
            || token.eq_ignore_ascii_case("close")
            || token.eq_ignore_ascii_case("keep-alive")
            || token.eq_ignore_ascii_case("upgrade")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            doomed.push(name);
        }
    }
    let kept_upgrade = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in &doomed {
        headers.remove(name);
    }
    if let Some(u) = kept_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// True for an HTTP/1.1 `Upgrade` request other than h2c (which the watchdog itself would
/// have to speak, and declines by serving the request as HTTP/1.1).
fn wants_upgrade(req: &Request<ReqBody>) -> bool {
    let has_token = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let proto = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    req.version() == Version::HTTP_11
        && has_token
        && proto.is_some_and(|p| !p.eq_ignore_ascii_case("h2c"))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn add_forwarded(headers: &mut HeaderMap, ctx: &Ctx, host: Option<&HeaderValue>) {
    if let Some(ip) = &ctx.peer_ip {
        let appended = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => {
                HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok()
            }
            _ => Some(ip.clone()),
        };
        if let Some(v) = appended {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    // A platform proxy in front (Knative's queue-proxy) already knows the real scheme and
    // host; keep what it says.
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let (false, Some(h)) = (headers.contains_key(&X_FORWARDED_HOST), host) {
        headers.insert(X_FORWARDED_HOST, h.clone());
    }
}

/// How the function is spoken to: HTTP/1.1 through the watchdog's own client, or HTTP/2
/// (`upstream_h2c`) through hyper's, which multiplexes requests over one connection.
#[derive(Clone)]
enum UpstreamClient {
    H1(Arc<Pool>),
    H2(Box<Client<UpstreamConnector, ReqBody>>),
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

struct ReadyPoller {
    client: UpstreamClient,
    upstream: Upstream,
    ready_path: Option<String>,
    health: Health,
    exited: Arc<AtomicBool>,
}

impl ReadyPoller {
    async fn run(self) {
        let started = Instant::now();
        loop {
            if self.exited.load(Ordering::Acquire) {
                return;
            }
            let ok = match &self.ready_path {
                Some(path) => matches!(
                    tokio::time::timeout(Duration::from_secs(1), self.client.probe(path)).await,
                    Ok(Ok(s)) if s.is_success()
                ),
                None => upstream::connect_stream(&self.upstream).await.is_ok(),
            };
            if ok {
                match self.health.set_ready() {
                    Ok(()) => tracing::info!(after = ?started.elapsed(), "function ready"),
                    Err(e) => tracing::error!(error = %e, "cannot write lock file"),
                }
                return;
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// Connects to the upstream over TCP or a unix socket.
#[derive(Clone)]
pub struct UpstreamConnector {
    upstream: Arc<Upstream>,
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<upstream::Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // The request URI only carries the path; where to connect is fixed by upstream_url.
        let upstream = self.upstream.clone();
        Box::pin(async move { upstream::connect_stream(&upstream).await.map(TokioIo::new) })
    }
}

impl Connection for upstream::Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A response body that fails when the upstream sends nothing for `idle`: streams run as
/// long as data flows, and a stalled one is cut off.
struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Started the first time the body has to wait: most small bodies never do, and a timer
    /// per response was a measurable cost.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleBody<B> {
    fn new(inner: B, idle: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            idle,
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
async fn splice_upgraded(
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
