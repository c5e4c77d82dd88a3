//! `streaming` and `serializing`: a fresh process per request, in its own process group.

use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::body::{self, Body, BoxError, ReqBody};
use crate::cgi;
use crate::config::{Config, Mode};
use crate::error::Error;
use crate::function::Ctx;
use crate::process::{self, describe_exit, FunctionProcess, LogOptions};

/// The fork-per-request runner shared by `streaming`, `serializing` and `file`.
pub struct Fork {
    config: Arc<Config>,
    log: LogOptions,
}

/// How the function's output is collected.
enum Output {
    /// stdout piped (stderr to the log, or into the same pipe with `combine_output`).
    Stdout(ChildStdout),
    /// stdout and stderr share one pipe (`combine_output`).
    Combined(tokio::net::unix::pipe::Receiver),
}

impl AsyncRead for Output {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Output::Stdout(s) => Pin::new(s).poll_read(cx, buf),
            Output::Combined(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// A started function with its pipes.
pub struct Started {
    /// The process group.
    pub proc: FunctionProcess,
    stdin: Option<ChildStdin>,
    output: Output,
}

impl Fork {
    /// A runner for `config`.
    pub fn new(config: Arc<Config>, log: LogOptions) -> Fork {
        Fork { config, log }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Spawns the function for one request: CGI env, `extra_args` appended, `extra_env` set.
    pub fn start(
        &self,
        parts: &http::request::Parts,
        ctx: &Ctx,
        extra_args: &[&std::ffi::OsStr],
        extra_env: &[(&str, &std::ffi::OsStr)],
        stdin: bool,
    ) -> Result<Started, Error> {
        let argv = &self.config.fprocess;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).args(extra_args);
        if self.config.cgi_headers {
            cmd.envs(cgi::request_env(parts));
            if !parts.headers.contains_key("x-call-id") {
                cmd.env("Http_X_Call_Id", &ctx.call_id);
            }
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let mut combined = None;
        if self.config.combine_output {
            let (reader, writer) = std::io::pipe().map_err(spawn_error(argv))?;
            cmd.stdout(writer.try_clone().map_err(spawn_error(argv))?);
            cmd.stderr(writer);
            combined = Some(reader);
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut proc = FunctionProcess::spawn(&mut cmd).map_err(spawn_error(argv))?;
        // The Command keeps its copy of the shared pipe's write end: close it now, or the
        // reader would never see EOF.
        drop(cmd);
        let child = proc.child();
        let stdin = child.stdin.take();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(process::forward_lines(stderr, "stderr", self.log));
        }
        let output = match combined {
            Some(reader) => {
                let fd: std::os::fd::OwnedFd = reader.into();
                Output::Combined(
                    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                        .map_err(spawn_error(argv))?,
                )
            }
            None => Output::Stdout(child.stdout.take().expect("stdout piped")),
        };
        Ok(Started {
            proc,
            stdin,
            output,
        })
    }

    /// Handles one request in the configured fork mode.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        match self.config.mode {
            Mode::Serializing => self.serializing(req, ctx).await,
            _ => self.streaming(req, ctx).await,
        }
    }

    async fn streaming(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let Started {
            proc,
            stdin,
            output,
        } = self.start(&parts, ctx, &[], &[], true)?;
        let (err_tx, err_rx) = oneshot::channel();
        let mut body_err = Some(err_rx);
        if let Some(mut stdin) = stdin {
            let limit = self.config.max_body_size;
            let mut body = body;
            let (prefix, complete) = take_ready(&mut body);
            let size: usize = prefix.iter().map(Bytes::len).sum();
            if limit > 0 && size as u64 > limit {
                drop(stdin);
                return Err(Error::BodyTooLarge(limit));
            }
            if complete && size <= SMALL_BODY {
                // A small body that has fully arrived fits in the pipe: write it now and
                // close stdin, so the function sees EOF without waiting for a feeder task.
                for data in &prefix {
                    if stdin.write_all(data).await.is_err() {
                        break;
                    }
                }
                drop(stdin);
            } else {
                let feed = feed_stdin(prefix, body, stdin, ctx.read_deadline, limit, err_tx);
                tokio::spawn(feed);
            }
        }
        let mut deadline = ctx.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut reader = OutputReader {
            output,
            proc: Some(proc),
            buf: BytesMut::new(),
            next_reserve: READ_MIN,
        };
        // Headers go out with the first output, so a function that times out before
        // printing anything still gets a clean 504.
        let mut head = BytesMut::new();
        let (status, mut headers) = loop {
            let chunk = tokio::select! {
                biased;
                err = std::future::poll_fn(|cx| poll_body_err(&mut body_err, cx)) => { reader.abort(); return Err(err) }
                _ = wait_deadline(&mut deadline) => { reader.abort(); return Err(Error::Timeout(ctx.timeout())) }
                chunk = reader.next_chunk() => chunk,
            };
            match chunk {
                Ok(Some(data)) => {
                    head.extend_from_slice(&data);
                    if !self.config.cgi_response {
                        break (StatusCode::OK, HeaderMap::new());
                    }
                    match cgi::parse_response_headers(&head) {
                        cgi::Parsed::Incomplete => continue,
                        cgi::Parsed::Invalid(why) => {
                            reader.abort();
                            return Err(Error::FunctionFailed(why));
                        }
                        cgi::Parsed::Done {
                            status,
                            headers,
                            body_start,
                        } => {
                            let _ = head.split_to(body_start);
                            break (status, headers);
                        }
                    }
                }
                Ok(None) => {
                    // The function closed stdout without (complete) output: its exit status decides.
                    if self.config.cgi_response && !head.is_empty() {
                        reader.abort();
                        return Err(Error::FunctionFailed(
                            "output ended inside the CGI header block".into(),
                        ));
                    }
                    let mut proc = reader.proc.take().expect("process present");
                    let status = tokio::select! {
                        s = proc.wait() => s.map_err(|e| Error::FunctionFailed(e.to_string()))?,
                        _ = wait_deadline(&mut deadline) => { proc.terminate(); return Err(Error::Timeout(ctx.timeout())) }
                    };
                    return Ok(exit_response(
                        &self.config,
                        status,
                        Bytes::new(),
                        HeaderMap::new(),
                        StatusCode::OK,
                    ));
                }
                Err(e) => {
                    reader.abort();
                    return Err(Error::FunctionFailed(format!("reading output: {e}")));
                }
            }
        };
        set_content_type(&mut headers, &self.config.content_type);
        // Output already waiting goes out with the headers, without waiting for more. If the
        // function has already finished, the whole response fits in one write with a
        // Content-Length instead of a chunked stream.
        if reader.drain_ready(&mut head) {
            if let Some(p) = reader.proc.take() {
                p.finish();
            }
            let mut resp = Response::new(body::full(head.freeze()));
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            return Ok(resp);
        }
        let body = StreamingBody {
            reader,
            pending: Some(head.freeze()).filter(|b| !b.is_empty()),
            deadline,
            body_err,
            timeout: ctx.timeout(),
            metrics: ctx.metrics.clone(),
        };
        let mut resp = Response::new(body.boxed_unsync());
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    async fn serializing(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let input =
            body::read_body(body, self.config.buffered_body_limit(), ctx.read_deadline).await?;
        let started = self.start(&parts, ctx, &[], &[], true)?;
        let (status, out) = self.run_collect(started, Some(input), ctx).await?;
        self.respond_collected(status, out)
    }

    /// Feeds `input` (if any), collects all output and waits for exit, within the deadline.
    pub async fn run_collect(
        &self,
        started: Started,
        input: Option<Bytes>,
        ctx: &Ctx,
    ) -> Result<(ExitStatus, Vec<u8>), Error> {
        let Started {
            mut proc,
            stdin,
            mut output,
        } = started;
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A function that exits without reading its input is fine: ignore EPIPE.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let run = async {
            let mut out = Vec::new();
            output
                .read_to_end(&mut out)
                .await
                .map_err(|e| Error::FunctionFailed(format!("reading output: {e}")))?;
            let status = proc
                .wait()
                .await
                .map_err(|e| Error::FunctionFailed(e.to_string()))?;
            Ok::<_, Error>((status, out))
        };
        let result = match ctx.deadline {
            Some(d) => tokio::time::timeout_at(d, run).await,
            None => Ok(run.await),
        };
        match result {
            Ok(r) => {
                proc.finish();
                r
            }
            Err(_) => {
                proc.terminate();
                Err(Error::Timeout(ctx.timeout()))
            }
        }
    }

    /// The response for collected output: CGI headers applied, 500 on a failed exit.
    pub fn respond_collected(
        &self,
        status: ExitStatus,
        out: Vec<u8>,
    ) -> Result<Response<Body>, Error> {
        let mut out = Bytes::from(out);
        let (mut code, mut headers) = (StatusCode::OK, HeaderMap::new());
        if self.config.cgi_response {
            match cgi::parse_response_headers(&out) {
                cgi::Parsed::Done {
                    status: cgi_status,
                    headers: h,
                    body_start,
                } => {
                    code = cgi_status;
                    headers = h;
                    out = out.slice(body_start..);
                }
                cgi::Parsed::Incomplete if out.is_empty() => {}
                // A failed run's output is passed on as it is, headers or not.
                _ if !status.success() => {}
                cgi::Parsed::Incomplete => {
                    return Err(Error::FunctionFailed(
                        "output ended inside the CGI header block".into(),
                    ))
                }
                cgi::Parsed::Invalid(why) => return Err(Error::FunctionFailed(why)),
            }
        }
        Ok(exit_response(&self.config, status, out, headers, code))
    }
}

fn spawn_error(argv: &[String]) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::FunctionFailed(format!("cannot start {:?}: {e}", argv[0]))
}

fn set_content_type(headers: &mut HeaderMap, default: &str) {
    if !headers.contains_key(header::CONTENT_TYPE) {
        if let Ok(v) = HeaderValue::from_str(default) {
            headers.insert(header::CONTENT_TYPE, v);
        }
    }
}

/// 200 (or the CGI status) on success; 500 when the function exited non-zero, with its
/// output as the body, or a line naming the exit status when it printed nothing.
fn exit_response(
    config: &Config,
    status: ExitStatus,
    out: Bytes,
    mut headers: HeaderMap,
    code: StatusCode,
) -> Response<Body> {
    // A failed run is a 500, unless the function itself said which error it was (CGI Status).
    let code = if status.success() {
        code
    } else {
        tracing::warn!(exit = %describe_exit(&status), "function failed");
        if code.is_client_error() || code.is_server_error() {
            code
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let out = if !status.success() && out.is_empty() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Bytes::from(format!("function failed: {}\n", describe_exit(&status)))
    } else {
        out
    };
    set_content_type(&mut headers, &config.content_type);
    let mut resp = Response::new(body::full(out));
    *resp.status_mut() = code;
    *resp.headers_mut() = headers;
    resp
}

async fn wait_deadline(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Copies the request body to the function's stdin as it arrives, then closes stdin.
async fn feed_stdin(
    prefix: Vec<Bytes>,
    mut body: ReqBody,
    mut stdin: ChildStdin,
    deadline: Instant,
    limit: u64,
    err_tx: oneshot::Sender<Error>,
) {
    let mut total: u64 = 0;
    for data in &prefix {
        total += data.len() as u64;
        if stdin.write_all(data).await.is_err() {
            return;
        }
    }
    loop {
        match body::next_data(&mut body, deadline, &mut total, limit).await {
            Ok(None) => return,
            Ok(Some(data)) => {
                if stdin.write_all(&data).await.is_err() {
                    // The function stopped reading its input; its output still counts.
                    return;
                }
            }
            Err(e) => {
                let _ = err_tx.send(e);
                return;
            }
        }
    }
}

/// A body at most this big that has fully arrived is written to stdin directly; a pipe
/// holds 64 KiB, so the write cannot block.
const SMALL_BODY: usize = 32 * 1024;

/// Takes the body frames that have already arrived, without waiting (up to about
/// [`SMALL_BODY`]); true when that was the whole body. A failed frame ends the prefix and
/// is reported again by the feeder's next read.
fn take_ready(body: &mut ReqBody) -> (Vec<Bytes>, bool) {
    use http_body::Body as _;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut prefix = Vec::new();
    let mut size = 0;
    if body.is_end_stream() {
        return (prefix, true);
    }
    while size <= SMALL_BODY {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(None) => return (prefix, true),
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    prefix.push(data);
                }
                if body.is_end_stream() {
                    return (prefix, true);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => break,
        }
    }
    (prefix, false)
}

/// Ready with the request-body failure, if the body feeder reported one; pending forever
/// once the feeder finished cleanly (the receiver is cleared so it is never polled again).
fn poll_body_err(rx: &mut Option<oneshot::Receiver<Error>>, cx: &mut Context<'_>) -> Poll<Error> {
    let Some(r) = rx else { return Poll::Pending };
    match Pin::new(r).poll(cx) {
        Poll::Ready(Ok(err)) => {
            *rx = None;
            Poll::Ready(err)
        }
        Poll::Ready(Err(_)) => {
            *rx = None;
            Poll::Pending
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Reads function output in chunks and owns the process until output ends.
struct OutputReader {
    output: Output,
    proc: Option<FunctionProcess>,
    buf: BytesMut,
    /// How much to reserve for the next read: small for the usual short answer (a large
    /// buffer per request makes musl's allocator map and unmap memory every time), doubled
    /// while reads keep filling it, for bulk output.
    next_reserve: usize,
}

/// First read buffer per request, and the most a buffer grows to.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;

impl OutputReader {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Bytes>>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(self.next_reserve);
        }
        let dst = self.buf.spare_capacity_mut();
        let room = dst.len();
        let mut rb = ReadBuf::uninit(dst);
        ready!(Pin::new(&mut self.output).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(None));
        }
        if n == room {
            self.next_reserve = (self.next_reserve * 2).min(READ_MAX);
        }
        // SAFETY: poll_read initialised the first n bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Poll::Ready(Ok(Some(self.buf.split().freeze())))
    }

    /// Appends output that is already readable to `head` (up to a bound) without waiting;
    /// true when the output has ended.
    fn drain_ready(&mut self, head: &mut BytesMut) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while head.len() < 256 * 1024 {
            match self.poll_chunk(&mut cx) {
                Poll::Ready(Ok(Some(data))) => head.extend_from_slice(&data),
                Poll::Ready(Ok(None)) => return true,
                Poll::Ready(Err(_)) | Poll::Pending => return false,
            }
        }
        false
    }

    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn abort(&mut self) {
        if let Some(p) = self.proc.take() {
            p.terminate();
        }
    }
}

/// The body of a streaming response: function output as it is written. A timeout, a failed
/// request body or the client going away stops the process group, and the body then ends
/// with an error so the client sees an aborted response, never a truncated 200.
struct StreamingBody {
    reader: OutputReader,
    pending: Option<Bytes>,
    deadline: Option<Pin<Box<Sleep>>>,
    body_err: Option<oneshot::Receiver<Error>>,
    timeout: std::time::Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

impl http_body::Body for StreamingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(data) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Poll::Ready(err) = poll_body_err(&mut this.body_err, cx) {
            this.reader.abort();
            return Poll::Ready(Some(Err(err.to_string().into())));
        }
        if let Some(d) = &mut this.deadline {
            if d.as_mut().poll(cx).is_ready() {
                this.reader.abort();
                this.metrics.timeout();
                tracing::warn!(timeout = ?this.timeout, "function timed out while streaming; response aborted");
                return Poll::Ready(Some(Err(Error::Timeout(this.timeout).to_string().into())));
            }
        }
        match ready!(this.reader.poll_chunk(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => {
                if let Some(p) = this.reader.proc.take() {
                    p.finish();
                }
                Poll::Ready(None)
            }
            Err(e) => {
                this.reader.abort();
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }
}

use std::future::Future;
