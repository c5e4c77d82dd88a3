//! Process supervision: spawn a function in its own process group, kill the whole group with a
//! grace period, and forward its output to the log line by line.

pub mod path;
pub mod reaper;

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::config::LogFormat;

/// Time between SIGTERM and SIGKILL when a function's group is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// A running function process, leader of its own process group. Dropping it before the
/// leader has been waited for stops the whole group (SIGTERM, then SIGKILL after
/// [`KILL_GRACE`]), so a cancelled request never leaves the function running.
pub struct FunctionProcess {
    child: Option<Child>,
    pgid: i32,
    reaped: bool,
}

impl FunctionProcess {
    /// Spawns `cmd` as the leader of a new process group. `process_group(0)` keeps std on
    /// its posix_spawn path (no `pre_exec` closure, which would force fork+exec).
    pub fn spawn(cmd: &mut Command) -> io::Result<FunctionProcess> {
        cmd.process_group(0).kill_on_drop(false);
        let child = cmd.spawn()?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(FunctionProcess {
            child: Some(child),
            pgid,
            reaped: false,
        })
    }

    /// The process group id (= the leader's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The child, for taking its pipes.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// Waits for the leader to exit (and reaps it).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Polls for the leader's exit (and reaps it), for watching it while reading its output.
    /// tokio's wait is cancel-safe, so a fresh future per poll loses nothing.
    pub fn poll_wait(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<ExitStatus>> {
        let status = {
            let wait = std::pin::pin!(self.child().wait());
            std::task::ready!(wait.poll(cx))
        };
        if status.is_ok() {
            self.reaped = true;
        }
        std::task::Poll::Ready(status)
    }

    /// How the leader ended, if it has (reaping it): a long-lived process found dead while
    /// it sat idle.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.reaped = true;
        Some(status)
    }

    /// SIGKILL to the whole group at once (a process past its deadline, whose state is
    /// unknown); the leader is reaped in the background.
    pub fn kill(self) {
        if self.pgid > 0 && !self.reaped {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
        self.finish();
    }

    /// Stops the whole group now: SIGTERM at once, SIGKILL after the grace, in the background.
    pub fn terminate(mut self) {
        self.stop_group();
    }

    /// Stops the group and waits until the leader is gone (used at shutdown).
    pub async fn terminate_and_wait(mut self) -> Option<ExitStatus> {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGTERM);
        let child = self.child.as_mut()?;
        let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        // Stragglers that outlived the leader go too.
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        self.reaped = true;
        status
    }

    fn stop_group(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let pgid = self.pgid;
        if pgid <= 0 {
            return;
        }
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
        // Until the leader is reaped its pid cannot be reused, so signalling the group
        // after the grace cannot hit an unrelated process. Watch for its exit with a
        // pidfd (which does not reap) rather than wait(), which would.
        let pidfd = if self.reaped { None } else { pidfd_open(pgid) };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            return;
        };
        handle.spawn(async move {
            let exited = async {
                // SAFETY: the AsyncFd owns the pidfd outright; nothing else reads or closes it.
                let registered =
                    pidfd.and_then(|fd| unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok());
                match registered {
                    Some(fd) => {
                        let _ = fd.readable().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let _ = tokio::time::timeout(KILL_GRACE, exited).await;
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let mut child = child;
            let _ = child.wait().await;
        });
    }

    /// Marks the process finished normally: dropping it will not signal the group.
    /// The leader is reaped in the background if it has not been already.
    pub fn finish(mut self) {
        if let Some(mut child) = self.child.take() {
            // Usually the function has already exited: reap it here rather than in a task.
            if !self.reaped && !matches!(child.try_wait(), Ok(Some(_))) {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = child.wait().await;
                    });
                }
            }
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.stop_group();
        }
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, nix::libc::O_NONBLOCK) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A short description of how a process ended, for logs and error bodies.
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".to_string(),
    }
}

/// How function output lines are written to the watchdog's stderr.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Prefix each line with time and stream name (text format).
    pub prefix: bool,
    /// Longest line kept whole; longer lines are split into pieces of this size.
    pub max_line: usize,
    /// Text or JSON.
    pub format: LogFormat,
}

/// Copies `reader` to the log line by line until EOF. Never drops data: a line longer than
/// `max_line` is written in pieces, and the pipe keeps being drained.
pub async fn forward_lines<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: &'static str,
    opts: LogOptions,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        take_lines(&mut buf, opts.max_line, |line| {
            write_line(stream, line, opts)
        });
    }
    if !buf.is_empty() {
        write_line(stream, &buf, opts);
    }
}

/// Hands `emit` every complete line at the front of `buf` and every `max_line` bytes that
/// have no newline yet, so no piece is ever longer than `max_line`, however the data was cut
/// into reads. What is left (a partial line shorter than that) stays in `buf`.
fn take_lines(buf: &mut Vec<u8>, max_line: usize, mut emit: impl FnMut(&[u8])) {
    let mut start = 0;
    loop {
        // One byte more than a piece: a line of exactly max_line bytes ends in its newline
        // rather than leaving an empty line behind.
        let end = buf.len().min(start + max_line + 1);
        let window = &buf[start..end];
        if let Some(pos) = window.iter().position(|&b| b == b'\n') {
            emit(&window[..pos]);
            start += pos + 1;
        } else if window.len() > max_line {
            emit(&window[..max_line]);
            start += max_line;
        } else {
            break;
        }
    }
    buf.drain(..start);
}

/// Writes one function output line to stderr in a single write, so lines never interleave.
pub fn write_line(stream: &str, line: &[u8], opts: LogOptions) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match opts.format {
        // Same keys, order and time format as the watchdog's own JSON events, so one log
        // query covers both.
        LogFormat::Json => crate::log::function_output(stream, line).write(),
        LogFormat::Text => {
            let mut out = Vec::with_capacity(line.len() + 48);
            if opts.prefix {
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                out.extend_from_slice(format!("{now} {stream}: ").as_bytes());
            }
            out.extend_from_slice(line);
            out.push(b'\n');
            crate::log::buffer::write(&out);
        }
    }
}

/// Asks the kernel to SIGKILL the function process if the watchdog dies without stopping
/// it (SIGKILL, OOM kill). In a container that ends everything anyway; run directly (local
/// runs, tests) an orphaned server would otherwise keep its port and run on for ever.
/// The signal follows the death of the thread that spawned the child, so spawn from a thread
/// that lives as long as the watchdog (http mode: the main thread, the runtime's only one).
/// Not for fork modes: a pre-exec hook rules out posix_spawn, their fast path.
pub fn die_with_the_watchdog(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes two async-signal-safe
    // system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)?;
            // The watchdog may have died before the request above took effect.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other(
                    "watchdog gone before the function started",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::take_lines;

    /// Feeds `input` in pieces of `cut` bytes and returns the lines emitted, plus the rest.
    fn run(input: &[u8], cut: usize, max: usize) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(cut) {
            buf.extend_from_slice(piece);
            take_lines(&mut buf, max, |l| out.push(l.to_vec()));
        }
        if !buf.is_empty() {
            out.push(buf);
        }
        out
    }

    #[test]
    fn long_lines_are_split_whatever_the_read_sizes() {
        let mut input = vec![b'a'; 2500];
        input.extend_from_slice(b"\nshort\n");
        for cut in [1, 7, 999, 1000, 1001, 1500, 4096] {
            let out = run(&input, cut, 1000);
            let lens: Vec<usize> = out.iter().map(Vec::len).collect();
            assert_eq!(lens, vec![1000, 1000, 500, 5], "reads of {cut}");
            assert_eq!(out[3], b"short");
        }
    }

    #[test]
    fn a_line_of_exactly_the_limit_leaves_no_empty_line() {
        let mut input = vec![b'b'; 1000];
        input.push(b'\n');
        for cut in [1, 1000, 1001] {
            assert_eq!(
                run(&input, cut, 1000),
                vec![vec![b'b'; 1000]],
                "reads of {cut}"
            );
        }
    }
}
