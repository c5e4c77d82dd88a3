//! `streaming` and `serializing`: a fresh process per request, in its own process group.
//!
//! Every response is framed by the watchdog from the bytes it counted: a function's CGI
//! head may not set Content-Length (checked against the body where the whole body is in
//! hand, dropped where it streams) or any of [`cgi::FRAMING_HEADERS`].

mod classic;
mod output;

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::body::{self, Body, ReqBody};
use crate::cgi;
use crate::config::{Argv, Config, ForkConfig, Mode};
use crate::error::Error;
use crate::mode::Ctx;
use crate::process::{self, describe_exit, FunctionProcess, LogOptions};

pub use output::EXIT_DRAIN_GRACE;
use output::{
    feed_stdin, poll_body_err, take_ready, Output, OutputReader, StreamingBody, SMALL_BODY,
};

/// The fork-per-request runner shared by `streaming`, `serializing` and `file`.
pub struct Fork {
    config: Arc<Config>,
    settings: ForkConfig,
    /// `fprocess`'s program as found on PATH at start (see `process::path`), or as given.
    program: std::ffi::OsString,
    log: LogOptions,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A started function with its pipes.
pub struct Started {
    stdin: Option<ChildStdin>,
    reader: OutputReader,
}

/// A collected run's CGI head, with the framing headers taken out.
pub struct Collected {
    /// The CGI Status, or 200.
    pub code: StatusCode,
    /// The function's headers, without framing ones.
    pub headers: HeaderMap,
    /// The Content-Length the function declared (valid syntax), if any.
    pub declared: Option<u64>,
    /// What followed the head.
    pub body: Bytes,
}

impl Fork {
    /// A runner for `config`.
    pub fn new(config: Arc<Config>, settings: ForkConfig, shared: &crate::mode::Shared) -> Fork {
        let program = process::path::find(settings.fprocess.program());
        Fork {
            config,
            settings,
            program,
            log: shared.log,
            metrics: shared.metrics.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fork modes' own settings.
    pub fn settings(&self) -> &ForkConfig {
        &self.settings
    }

    /// Spawns the function for one request: CGI env, the request's own variables
    /// ([`Ctx::env`]), `extra_args` appended, `extra_env` set.
    pub fn start(
        &self,
        parts: &http::request::Parts,
        ctx: &Ctx,
        extra_args: &[&std::ffi::OsStr],
        extra_env: &[(&str, &std::ffi::OsStr)],
        stdin: bool,
    ) -> Result<Started, Error> {
        let argv = &self.settings.fprocess;
        let mut cmd = Command::new(&self.program);
        cmd.arg0(argv.program()).args(argv.args()).args(extra_args);
        if self.settings.cgi_headers {
            cmd.envs(cgi::request_env(parts, &ctx.call_id));
        }
        cmd.envs(ctx.env.iter().map(|(k, v)| (k, v)));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let mut combined = None;
        if self.settings.combine_output {
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
        let output = match (combined, child.stdout.take()) {
            (Some(reader), _) => {
                let fd: std::os::fd::OwnedFd = reader.into();
                Output::Combined(
                    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                        .map_err(spawn_error(argv))?,
                )
            }
            (None, Some(stdout)) => Output::Stdout(stdout),
            (None, None) => return Err(Error::FunctionFailed("stdout not piped".into())),
        };
        Ok(Started {
            stdin,
            reader: OutputReader::new(output, proc),
        })
    }

    /// Handles one request in the configured fork mode.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        match self.config.mode {
            Mode::Serializing => self.serializing(req, ctx).await,
            _ if ctx.whole => self.serializing(req, ctx).await,
            _ => self.streaming(req, ctx).await,
        }
    }

    async fn streaming(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let Started { stdin, mut reader } = self.start(&parts, ctx, &[], &[], true)?;
        let (err_tx, err_rx) = oneshot::channel();
        let mut body_err = Some(err_rx);
        if let Some(mut stdin) = stdin {
            let limit = self.config.max_body_size;
            let mut body = body;
            let (prefix, complete) = take_ready(&mut body);
            let size: usize = prefix.iter().map(Bytes::len).sum();
            if limit > 0 && size as u64 > limit {
                drop(stdin);
                reader.abort();
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
        // Headers go out with the first output, so a function that times out before
        // printing anything still gets a clean 504.
        let (status, mut headers) = loop {
            let read = tokio::select! {
                biased;
                err = std::future::poll_fn(|cx| poll_body_err(&mut body_err, cx)) => { reader.abort(); return Err(err) }
                _ = wait_deadline(&mut deadline) => { reader.abort(); return Err(Error::Timeout(ctx.timeout())) }
                read = reader.fill() => read,
            };
            match read {
                Ok(0) => {
                    // The function closed stdout without (complete) output: its exit status decides.
                    if self.settings.cgi_response && !reader.buffered().is_empty() {
                        reader.abort();
                        return Err(Error::FunctionFailed(
                            "output ended inside the CGI header block".into(),
                        ));
                    }
                    let status = tokio::select! {
                        s = reader.exit_status() => s.map_err(|e| Error::FunctionFailed(e.to_string())),
                        _ = wait_deadline(&mut deadline) => { reader.abort(); return Err(Error::Timeout(ctx.timeout())) }
                    };
                    reader.done();
                    return Ok(exit_response(
                        &self.settings,
                        status?,
                        Bytes::new(),
                        HeaderMap::new(),
                        StatusCode::OK,
                    ));
                }
                Ok(_) => {
                    if !self.settings.cgi_response {
                        break (StatusCode::OK, HeaderMap::new());
                    }
                    match cgi::parse_response_headers(reader.buffered()) {
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
                            reader.discard(body_start);
                            break (status, headers);
                        }
                    }
                }
                Err(e) => {
                    reader.abort();
                    return Err(Error::FunctionFailed(format!("reading output: {e}")));
                }
            }
        };
        let declared = match cgi::take_framing(&mut headers) {
            Ok(d) => d,
            Err(why) => {
                reader.abort();
                return Err(Error::FunctionFailed(why));
            }
        };
        // Output already waiting goes out with the headers, without waiting for more. If the
        // function has already finished, the whole response fits in one write with a
        // Content-Length instead of a chunked stream, and a declared length is checked.
        if reader.drain_ready() {
            reader.done();
            let body = reader.take_buffered();
            let (body, length) = frame_body(&parts.method, status, declared, body)?;
            if let Some(len) = length {
                headers.insert(header::CONTENT_LENGTH, len);
            }
            return Ok(response(
                &self.settings.content_type,
                status,
                headers,
                body::full(body),
            ));
        }
        // Streamed: the declared length is dropped and the watchdog frames the body (chunked),
        // so a wrong one can neither cut the body short nor run into the next response.
        let pending = Some(reader.take_buffered()).filter(|b| !b.is_empty());
        let body = StreamingBody {
            reader,
            pending,
            deadline,
            body_err,
            timeout: ctx.timeout(),
            metrics: self.metrics.clone(),
        };
        Ok(response(
            &self.settings.content_type,
            status,
            headers,
            body.boxed_unsync(),
        ))
    }

    async fn serializing(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let input =
            body::read_body(body, self.config.buffered_body_limit(), ctx.read_deadline).await?;
        let started = self.start(&parts, ctx, &[], &[], true)?;
        let (status, out) = self.run_collect(started, Some(input), ctx).await?;
        let request_type = parts.headers.get(header::CONTENT_TYPE);
        self.respond_collected(&parts.method, request_type, status, out)
    }

    /// Feeds `input` (if any), collects all output and waits for exit, within the deadline.
    /// The output ends when the pipe closes, or [`EXIT_DRAIN_GRACE`] after the function
    /// exited while something it started still holds the pipe (that process is stopped).
    pub async fn run_collect(
        &self,
        started: Started,
        input: Option<Bytes>,
        ctx: &Ctx,
    ) -> Result<(ExitStatus, Bytes), Error> {
        let Started { stdin, mut reader } = started;
        // An empty input needs no writer task: dropping stdin is its EOF.
        if let (Some(mut stdin), Some(input)) = (stdin, input.filter(|i| !i.is_empty())) {
            // A function that exits without reading its input is fine: ignore EPIPE.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let run = async {
            let out = reader
                .collect()
                .await
                .map_err(|e| Error::FunctionFailed(format!("reading output: {e}")))?;
            let status = reader
                .exit_status()
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
                reader.done();
                r
            }
            Err(_) => {
                reader.abort();
                Err(Error::Timeout(ctx.timeout()))
            }
        }
    }

    /// Splits collected output into its CGI head (when `cgi_response`) and body. A failed
    /// run's output is passed on as it is when it holds no valid head; a successful run's
    /// must. Framing headers are taken out and a declared length is checked for syntax.
    pub fn parse_collected(&self, status: ExitStatus, out: Bytes) -> Result<Collected, Error> {
        let mut c = Collected {
            code: StatusCode::OK,
            headers: HeaderMap::new(),
            declared: None,
            body: out,
        };
        if !self.settings.cgi_response {
            return Ok(c);
        }
        match cgi::parse_response_headers(&c.body) {
            cgi::Parsed::Done {
                status: code,
                headers,
                body_start,
            } => {
                c.code = code;
                c.headers = headers;
                c.body = c.body.slice(body_start..);
                c.declared = cgi::take_framing(&mut c.headers).map_err(Error::FunctionFailed)?;
            }
            cgi::Parsed::Incomplete if c.body.is_empty() => {}
            _ if !status.success() => {}
            cgi::Parsed::Incomplete => {
                return Err(Error::FunctionFailed(
                    "output ended inside the CGI header block".into(),
                ))
            }
            cgi::Parsed::Invalid(why) => return Err(Error::FunctionFailed(why)),
        }
        Ok(c)
    }

    /// The response for collected output: CGI headers applied, 500 on a failed exit.
    pub fn respond_collected(
        &self,
        method: &Method,
        request_type: Option<&HeaderValue>,
        status: ExitStatus,
        out: Bytes,
    ) -> Result<Response<Body>, Error> {
        let mut c = self.parse_collected(status, out)?;
        let (body, length) = frame_body(method, c.code, c.declared, c.body)?;
        if let Some(len) = length {
            c.headers.insert(header::CONTENT_LENGTH, len);
        }
        if self.settings.classic {
            let (code, headers, body) = classic::shape(
                status,
                body,
                c.headers,
                c.code,
                &self.settings.content_type,
                request_type,
            );
            if !status.success() {
                tracing::warn!(exit = %describe_exit(&status), "function failed");
            }
            return Ok(response("", code, headers, body::full(body)));
        }
        Ok(exit_response(
            &self.settings,
            status,
            body,
            c.headers,
            c.code,
        ))
    }
}

/// Checks a whole body against the length the function declared
/// ([`cgi::check_response_length`]), and says what to send: the body, and a Content-Length
/// to set when it is not the body's own. For HEAD a declared length is kept and nothing is
/// sent.
fn frame_body(
    method: &Method,
    code: StatusCode,
    declared: Option<u64>,
    body: Bytes,
) -> Result<(Bytes, Option<HeaderValue>), Error> {
    if let (&Method::HEAD, Some(d)) = (method, declared) {
        return Ok((Bytes::new(), Some(HeaderValue::from(d))));
    }
    cgi::check_response_length(method, code, declared, body.len() as u64)
        .map_err(Error::FunctionFailed)?;
    Ok((body, None))
}

/// Resource exhaustion while starting the function is the watchdog's state, not the
/// function's fault: 503 (retry, elsewhere if need be), with a log line naming the error.
/// Anything else (no such program, not executable) is the function's: 502.
fn spawn_error(argv: &Argv) -> impl Fn(std::io::Error) -> Error + '_ {
    use nix::libc::{EAGAIN, EMFILE, ENFILE, ENOMEM};
    move |e| {
        let reason = match e.raw_os_error() {
            Some(EMFILE | ENFILE) => "cannot start the function: out of file descriptors",
            Some(EAGAIN) => "cannot start the function: out of processes",
            Some(ENOMEM) => "cannot start the function: out of memory",
            _ => return Error::FunctionFailed(format!("cannot start {:?}: {e}", argv.program())),
        };
        tracing::warn!(command = ?argv.program(), error = %e, "{reason}");
        Error::Unavailable(reason)
    }
}

/// The response to send: the function's status and headers, with the configured
/// Content-Type when the function set none.
pub fn response(
    content_type: &str,
    code: StatusCode,
    mut headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    if !headers.contains_key(header::CONTENT_TYPE) {
        if let Ok(v) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    *resp.headers_mut() = headers;
    resp
}

/// 200 (or the CGI status) on success; 500 when the function exited non-zero, with its
/// output as the body, or a line naming the exit status when it printed nothing.
fn exit_response(
    config: &ForkConfig,
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
        // The body is ours now: a length the function declared for its own does not apply.
        headers.remove(header::CONTENT_LENGTH);
        Bytes::from(format!("function failed: {}\n", describe_exit(&status)))
    } else {
        out
    };
    response(&config.content_type, code, headers, body::full(out))
}

async fn wait_deadline(deadline: &mut Option<std::pin::Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}
