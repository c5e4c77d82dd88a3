//! The worker pool: `workers` slots, each holding one long-lived process at a time. A slot
//! starts its process, waits for the ready line, and puts the worker on the idle queue;
//! a request takes the worker off the queue for one exchange (a [`Lease`]) and gives it
//! back, or, if anything went wrong, kills its process group and has the slot start a new
//! one. Requests that find no idle worker wait on the queue in arrival order.
//!
//! A slot whose worker keeps dying before its ready line waits between attempts, doubling
//! from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], so a broken function costs a log line now and
//! then, not a CPU.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;

use super::protocol::{self, ResponseHead, MAX_HEAD};
use crate::config::Argv;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::process::{self, describe_exit, FunctionProcess, LogOptions};

/// First pause after a worker failed to start.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between start attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a failed worker's exit status is waited for, for the log line.
const EXIT_WAIT: Duration = Duration::from_millis(200);
/// Requests up to this size go to the worker in one write.
const SMALL_REQUEST: usize = 64 * 1024;
/// How long a new worker may take to say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One running worker process and its pipes.
pub struct Worker {
    proc: FunctionProcess,
    stdin: ChildStdin,
    responses: BufReader<pipe::Receiver>,
    slot: usize,
    served: u64,
}

/// What the pool needs besides its workers.
pub struct PoolSettings {
    /// The worker command.
    pub argv: Argv,
    /// How many slots.
    pub workers: usize,
    /// Requests before a worker is replaced (0 = never).
    pub max_requests: u64,
    /// Where the workers' stdout and stderr go.
    pub log: LogOptions,
}

/// The slots, the idle queue and the registry of live process groups.
pub struct Pool {
    settings: PoolSettings,
    health: Health,
    metrics: Arc<Metrics>,
    idle_tx: mpsc::UnboundedSender<Worker>,
    idle_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Worker>>,
    /// Workers that have said they are ready and not been lost since.
    live: AtomicUsize,
    started: AtomicU64,
    stopping: AtomicBool,
    /// Process group of each slot's current process, for signals and shutdown.
    groups: Mutex<HashMap<usize, i32>>,
}

/// Why an exchange failed: the worker must go.
pub enum ExchangeError {
    /// It broke the protocol or its pipes; the reason is for the log and the 502.
    Broken(String),
}

impl Pool {
    /// A pool with no workers yet; [`Pool::start`] starts them.
    pub fn new(settings: PoolSettings, health: Health, metrics: Arc<Metrics>) -> Arc<Pool> {
        let (idle_tx, idle_rx) = mpsc::unbounded_channel();
        Arc::new(Pool {
            settings,
            health,
            metrics,
            idle_tx,
            idle_rx: tokio::sync::Mutex::new(idle_rx),
            live: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// Starts every slot; the first worker to say it is ready makes the watchdog ready.
    pub fn start(self: &Arc<Self>) {
        for slot in 0..self.settings.workers {
            self.fill(slot);
        }
    }

    /// Workers ready to take a request, idle or busy.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits for an idle worker (in arrival order) and leases it.
    pub async fn checkout(self: &Arc<Self>) -> Option<Lease> {
        let asked = tokio::time::Instant::now();
        let mut idle = self.idle_rx.lock().await;
        loop {
            let mut worker = idle.recv().await?;
            if let Some(status) = worker.proc.exited() {
                tracing::warn!(slot = worker.slot, exit = %describe_exit(&status), "worker exited while idle; replacing it");
                self.lost(worker.slot);
                continue;
            }
            if worker.out_of_step() {
                // Its next "answer" would be the rest of an earlier one: another request
                // would get it. The worker's stream cannot be trusted any more.
                tracing::warn!(
                    slot = worker.slot,
                    "worker wrote past its answer's length; replacing it"
                );
                let slot = worker.slot;
                worker.proc.kill();
                self.lost(slot);
                continue;
            }
            self.metrics.worker_taken(asked.elapsed());
            return Some(Lease {
                worker: Some(worker),
                pool: self.clone(),
            });
        }
    }

    /// Sends `sig` to every worker's process group.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let groups: Vec<i32> = self.groups().values().copied().collect();
        for pg in groups {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), sig);
        }
        tracing::info!(signal = %sig, "forwarded to every worker's process group");
    }

    /// Stops every idle worker (stdin closed, SIGTERM, SIGKILL after the grace) and any
    /// that is still starting; no slot is filled again.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let mut stops = tokio::task::JoinSet::new();
        {
            let mut idle = self.idle_rx.lock().await;
            while let Ok(worker) = idle.try_recv() {
                stops.spawn(worker.stop());
            }
        }
        while stops.join_next().await.is_some() {}
        // Workers still starting stop themselves when they find the pool stopping; any
        // group still registered gets the same treatment as a straggler.
        let left: Vec<i32> = self.groups().drain().map(|(_, pg)| pg).collect();
        for pg in left {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pg),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<usize, i32>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker of `slot` is gone: count it and start its successor.
    fn lost(self: &Arc<Self>, slot: usize) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.groups().remove(&slot);
        self.metrics.restart();
        self.fill(slot);
    }

    /// Starts a worker for `slot` in the background, with backoff while it fails.
    fn fill(self: &Arc<Self>, slot: usize) {
        let pool = self.clone();
        tokio::spawn(async move {
            let mut pause = FIRST_BACKOFF;
            loop {
                if pool.stopping.load(Ordering::Acquire) {
                    return;
                }
                match pool.spawn_worker(slot).await {
                    Ok(worker) => {
                        if pool.stopping.load(Ordering::Acquire) {
                            worker.stop().await;
                            return;
                        }
                        pool.live.fetch_add(1, Ordering::AcqRel);
                        if let Err(e) = pool.health.set_ready() {
                            tracing::error!(error = %pool.health.lock_error(e), "cannot mark ready");
                        }
                        let _ = pool.idle_tx.send(worker);
                        return;
                    }
                    Err(why) => {
                        pool.groups().remove(&slot);
                        tracing::error!(slot, retry_in = ?pause, "worker failed to start: {why}");
                        tokio::time::sleep(pause).await;
                        pause = pause.saturating_mul(2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

    /// Spawns one worker and waits for its ready line.
    async fn spawn_worker(&self, slot: usize) -> Result<Worker, String> {
        let argv = &self.settings.argv;
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make the response pipe: {e}"))?;
        let mut cmd = process::path::command(argv.program());
        cmd.args(argv.args())
            .env("WORKER_PROTOCOL", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        process::die_with_the_watchdog(&mut cmd);
        response_fd_3(&mut cmd, &wr);
        let mut proc = FunctionProcess::spawn(&mut cmd)
            .map_err(|e| format!("cannot start {:?}: {e}", argv.program()))?;
        // The child has its copy; ours must go, or EOF on descriptor 3 would never come.
        drop(cmd);
        drop(wr);
        let n = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.worker_started();
        self.groups().insert(slot, proc.pgid());
        let child = proc.child();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("worker pipes missing".into());
        };
        tokio::spawn(process::forward_lines(stdout, "stdout", self.settings.log));
        tokio::spawn(process::forward_lines(stderr, "stderr", self.settings.log));
        let responses = pipe::Receiver::from_owned_fd(rd)
            .map_err(|e| format!("cannot read the response pipe: {e}"))?;
        let mut worker = Worker {
            proc,
            stdin,
            responses: BufReader::with_capacity(64 * 1024, responses),
            slot,
            served: 0,
        };
        let ready = tokio::time::timeout(START_TIMEOUT, read_line(&mut worker.responses)).await;
        let failed = |worker: Worker, why: String| async move {
            let how = worker.stop().await;
            format!("{why} ({how})")
        };
        match ready {
            Err(_) => Err(failed(worker, format!("no ready line within {START_TIMEOUT:?}")).await),
            Ok(Err(e)) => Err(failed(worker, format!("exited before its ready line: {e}")).await),
            Ok(Ok(line)) => match protocol::parse_ready(&line) {
                Ok(()) => {
                    tracing::info!(slot, pid = worker.proc.pgid(), started = n, "worker ready");
                    Ok(worker)
                }
                Err(why) => Err(failed(worker, why).await),
            },
        }
    }
}

/// Makes `wr` the child's descriptor 3 (dup2 clears close-on-exec on the copy; if `wr`
/// already is 3, close-on-exec is cleared on it instead).
fn response_fd_3(cmd: &mut Command, wr: &OwnedFd) {
    let fd = wr.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // calls (dup2, fcntl) on a descriptor the parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = nix::libc::fcntl(3, nix::libc::F_GETFD);
                if flags < 0
                    || nix::libc::fcntl(3, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            } else if nix::libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One line (newline included) of at most [`MAX_HEAD`] bytes; EOF before it is an error.
async fn read_line(r: &mut BufReader<pipe::Receiver>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "descriptor 3 closed",
        ));
    }
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            if n >= MAX_HEAD {
                format!("head line longer than {MAX_HEAD} bytes")
            } else {
                "descriptor 3 closed mid-line".to_string()
            },
        ));
    }
    Ok(line)
}

impl Worker {
    /// True when descriptor 3 holds bytes no request asked for (or is closed): read
    /// without waiting, from the buffer and then the pipe.
    fn out_of_step(&mut self) -> bool {
        if !self.responses.buffer().is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(
            self.responses.get_ref().try_read(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }

    /// Closes stdin and stops the group (SIGTERM, SIGKILL after the grace); how it ended.
    async fn stop(self) -> String {
        drop(self.stdin);
        match self.proc.terminate_and_wait().await {
            Some(status) => describe_exit(&status),
            None => "gone".into(),
        }
    }
}

/// A worker taken for one request. Dropped without [`Lease::release`] (a failure, a
/// timeout, a client that went away), its process group is killed and its slot refilled.
pub struct Lease {
    worker: Option<Worker>,
    pool: Arc<Pool>,
}

impl Lease {
    /// Sends one request (its head line and body) and reads the answer's head and body.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        max_length: u64,
    ) -> Result<(ResponseHead, Vec<u8>), ExchangeError> {
        let Some(w) = self.worker.as_mut() else {
            return Err(ExchangeError::Broken("no worker".into()));
        };
        let broken = |what: &str, e: io::Error| ExchangeError::Broken(format!("{what}: {e}"));
        // One write for a small request: two would cost a second wake-up of the worker.
        let write = if body.len() <= SMALL_REQUEST {
            let mut both = Vec::with_capacity(head.len() + body.len());
            both.extend_from_slice(head);
            both.extend_from_slice(body);
            w.stdin.write_all(&both).await
        } else {
            match w.stdin.write_all(head).await {
                Ok(()) => w.stdin.write_all(body).await,
                Err(e) => Err(e),
            }
        };
        write.map_err(|e| broken("writing the request", e))?;
        let line = read_line(&mut w.responses)
            .await
            .map_err(|e| broken("reading the response head", e))?;
        let resp =
            protocol::parse_response_head(&line, max_length).map_err(ExchangeError::Broken)?;
        let len = usize::try_from(resp.length)
            .map_err(|_| ExchangeError::Broken("length does not fit in memory".into()))?;
        // Grown as the bytes arrive: a worker that claims 64 MiB and sends nothing costs
        // nothing but its wait.
        let mut out = Vec::with_capacity(len.min(SMALL_REQUEST));
        let got = (&mut w.responses)
            .take(resp.length)
            .read_to_end(&mut out)
            .await
            .map_err(|e| broken(&format!("reading the {len}-byte response body"), e))?;
        if got < len {
            return Err(ExchangeError::Broken(format!(
                "reading the {len}-byte response body: descriptor 3 closed after {got} bytes"
            )));
        }
        Ok((resp, out))
    }

    /// Why the worker failed, with its exit status when it has one, for the log and 502.
    /// A worker whose pipe just closed is usually exiting: its status is waited for
    /// briefly (only on this failure path), so the log says how it ended.
    pub async fn cause(&mut self, why: &str) -> String {
        let slot = self.slot();
        let status = match self.worker.as_mut() {
            Some(w) => tokio::time::timeout(EXIT_WAIT, w.proc.wait())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        match status {
            Some(status) => format!("worker {slot}: {why} ({})", describe_exit(&status)),
            None => format!("worker {slot}: {why}"),
        }
    }

    /// `why`, naming the worker, without waiting for anything.
    pub fn describe(&self, why: &str) -> String {
        format!("worker {}: {why}", self.slot())
    }

    fn slot(&self) -> usize {
        self.worker.as_ref().map_or(0, |w| w.slot)
    }

    /// Gives the worker back after a good exchange, or retires it at `worker_max_requests`.
    pub fn release(mut self) {
        let Some(mut w) = self.worker.take() else {
            return;
        };
        self.pool.metrics.worker_done();
        w.served += 1;
        let max = self.pool.settings.max_requests;
        if max > 0 && w.served >= max {
            let pool = self.pool.clone();
            let slot = w.slot;
            tokio::spawn(async move {
                let how = w.stop().await;
                tracing::info!(slot, served = max, exit = %how, "worker retired at worker_max_requests");
                pool.lost(slot);
            });
            return;
        }
        if self.pool.stopping.load(Ordering::Acquire) {
            tokio::spawn(w.stop());
            return;
        }
        let _ = self.pool.idle_tx.send(w);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            self.pool.metrics.worker_done();
            let slot = w.slot;
            w.proc.kill();
            self.pool.lost(slot);
        }
    }
}
