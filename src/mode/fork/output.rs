//! The function's side of a fork-mode request: its output read in chunks (ending when the
//! pipe closes, or shortly after the function itself exited), its input fed from the request
//! body, and the streaming response body.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::body::{self, BoxError, ReqBody};
use crate::error::Error;
use crate::process::FunctionProcess;

/// How long output may pause after the function's own process exited before the output
/// counts as ended. Something it started in the background (a daemon) can inherit stdout and
/// keep the pipe open long after the function is done; without this the response would last
/// until that process exits or `exec_timeout`. Output that keeps coming keeps the response
/// open; 100 ms is far longer than the gap between a process's exit and the kernel's delivery
/// of what it wrote, and short next to any request.
pub const EXIT_DRAIN_GRACE: Duration = Duration::from_millis(100);

/// How the function's output is collected.
pub enum Output {
    /// stdout piped (stderr to the log).
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

/// Reads function output in chunks and owns the process until output ends.
pub struct OutputReader {
    output: Output,
    /// The process group, until the request is done with it.
    pub proc: Option<FunctionProcess>,
    buf: BytesMut,
    /// How much to reserve for the next read: small for the usual short answer (a large
    /// buffer per request makes musl's allocator map and unmap memory every time), doubled
    /// while reads keep filling it, for bulk output.
    next_reserve: usize,
    /// The leader's exit status, when it exited before its output ended.
    exited: Option<ExitStatus>,
    /// Started at the leader's exit, pushed back by each output; output ends when it fires.
    grace: Option<Pin<Box<Sleep>>>,
    /// The output was ended by the grace: part of the group still holds the pipe.
    held: bool,
}

/// First read buffer per request, and the most a buffer grows to.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;

impl OutputReader {
    /// A reader of `proc`'s `output`.
    pub fn new(output: Output, proc: FunctionProcess) -> OutputReader {
        OutputReader {
            output,
            proc: Some(proc),
            buf: BytesMut::new(),
            next_reserve: READ_MIN,
            exited: None,
            grace: None,
            held: false,
        }
    }

    /// Reads more output onto the end of the buffer; 0 when the output has ended.
    ///
    /// The leader's exit is watched only while the pipe has nothing to read: tokio already
    /// watches the child through a pidfd registered at spawn, so this costs no system call
    /// until it has exited (then the one `waitpid` that reaps it, which was needed anyway).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(self.next_reserve);
            }
            let dst = self.buf.spare_capacity_mut();
            let room = dst.len();
            let mut rb = ReadBuf::uninit(dst);
            if let Poll::Ready(res) = Pin::new(&mut self.output).poll_read(cx, &mut rb) {
                res?;
                let n = rb.filled().len();
                if n == room {
                    self.next_reserve = (self.next_reserve * 2).min(READ_MAX);
                }
                // SAFETY: poll_read initialised the first n bytes of the spare capacity.
                unsafe { self.buf.set_len(self.buf.len() + n) };
                if n > 0 {
                    if let Some(g) = &mut self.grace {
                        g.as_mut().reset(Instant::now() + EXIT_DRAIN_GRACE);
                    }
                }
                return Poll::Ready(Ok(n));
            }
            if self.exited.is_none() {
                let Some(proc) = &mut self.proc else {
                    return Poll::Pending;
                };
                let status = ready!(proc.poll_wait(cx))?;
                self.exited = Some(status);
                self.grace = Some(Box::pin(tokio::time::sleep(EXIT_DRAIN_GRACE)));
                // Its last output may have arrived meanwhile: read again before waiting.
                continue;
            }
            let Some(g) = &mut self.grace else {
                return Poll::Pending;
            };
            ready!(g.as_mut().poll(cx));
            self.held = true;
            return Poll::Ready(Ok(0));
        }
    }

    /// The next chunk of output, `None` once it has ended.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Bytes>>> {
        let n = ready!(self.poll_fill(cx))?;
        if n == 0 {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(self.take_buffered())))
    }

    /// Reads more output onto what is buffered; 0 once the output has ended. The buffer is
    /// where the CGI head is looked for, so the first output is neither copied nor split
    /// before the head is known.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// The output read and not yet taken.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` buffered bytes (a CGI head that has been parsed).
    pub fn discard(&mut self, n: usize) {
        let _ = self.buf.split_to(n.min(self.buf.len()));
    }

    /// Takes everything buffered.
    pub fn take_buffered(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Buffers output that is already readable (up to a bound) without waiting; true when
    /// the output has ended.
    pub fn drain_ready(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while self.buf.len() < 256 * 1024 {
            match self.poll_fill(&mut cx) {
                Poll::Ready(Ok(0)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) | Poll::Pending => return false,
            }
        }
        false
    }

    /// All the output, in one buffer (no copy per read).
    pub async fn collect(&mut self) -> std::io::Result<Bytes> {
        while std::future::poll_fn(|cx| self.poll_fill(cx)).await? > 0 {}
        Ok(self.buf.split().freeze())
    }

    /// The leader's exit status (waiting for it if the output ended first).
    pub async fn exit_status(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        match &mut self.proc {
            Some(p) => p.wait().await,
            None => Err(std::io::Error::other("function process already released")),
        }
    }

    /// The output has ended: the group is left alone if the pipe reached EOF, as before;
    /// if a process of the group still held it open it is stopped, since it would otherwise
    /// outlive the request that started it, one more with every request.
    pub fn done(&mut self) {
        if let Some(p) = self.proc.take() {
            if self.held {
                p.terminate();
            } else {
                p.finish();
            }
        }
    }

    /// Stops the group now (timeout, failed request body, bad output).
    pub fn abort(&mut self) {
        if let Some(p) = self.proc.take() {
            p.terminate();
        }
    }
}

/// Ready with the request-body failure, if the body feeder reported one; pending forever
/// once the feeder finished cleanly (the receiver is cleared so it is never polled again).
pub fn poll_body_err(
    rx: &mut Option<oneshot::Receiver<Error>>,
    cx: &mut Context<'_>,
) -> Poll<Error> {
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

/// The body of a streaming response: function output as it is written. A timeout, a failed
/// request body or the client going away stops the process group, and the body then ends
/// with an error so the client sees an aborted response, never a truncated 200.
pub struct StreamingBody {
    /// The output still to come.
    pub reader: OutputReader,
    /// Output read with the head, sent first.
    pub pending: Option<Bytes>,
    /// `exec_timeout`'s end.
    pub deadline: Option<Pin<Box<Sleep>>>,
    /// Failure of the request body feeder.
    pub body_err: Option<oneshot::Receiver<Error>>,
    /// The effective timeout, for the log.
    pub timeout: Duration,
    /// Where a timeout is counted.
    pub metrics: Arc<crate::metrics::Metrics>,
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
                this.reader.done();
                Poll::Ready(None)
            }
            Err(e) => {
                this.reader.abort();
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }
}

/// Copies the request body to the function's stdin as it arrives, then closes stdin.
pub async fn feed_stdin(
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
pub const SMALL_BODY: usize = 32 * 1024;

/// Takes the body frames that have already arrived, without waiting (up to about
/// [`SMALL_BODY`]); true when that was the whole body. A failed frame ends the prefix and
/// is reported again by the feeder's next read.
pub fn take_ready(body: &mut ReqBody) -> (Vec<Bytes>, bool) {
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
