//! http mode's one function process: started in its own process group with its output
//! forwarded to the log, watched until it exits (on its own: the watchdog drains and
//! stops) or is stopped (after the drain: SIGTERM to the group, grace, SIGKILL).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};

use crate::config::Argv;
use crate::process::{self, describe_exit, FunctionProcess, LogOptions};

/// The running function process.
pub(super) struct Running {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    handle: Handle,
}

/// What can be done to the process without owning it: wait for it to die, signal it.
#[derive(Clone)]
pub(super) struct Handle {
    pgid: i32,
    died: watch::Receiver<Option<String>>,
}

/// Spawns `argv` and the task that supervises it; `exited` turns true when it is gone.
pub(super) fn spawn(argv: &Argv, log: LogOptions, exited: Arc<AtomicBool>) -> io::Result<Running> {
    let mut cmd = process::path::command(argv.program());
    cmd.args(argv.args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    process::die_with_the_watchdog(&mut cmd);
    let mut proc = FunctionProcess::spawn(&mut cmd)?;
    let pgid = proc.pgid();
    tracing::info!(pid = pgid, fprocess = %argv.to_shell(), "started function process");
    if let Some(out) = proc.child().stdout.take() {
        tokio::spawn(process::forward_lines(out, "stdout", log));
    }
    if let Some(err) = proc.child().stderr.take() {
        tokio::spawn(process::forward_lines(err, "stderr", log));
    }
    let (died_tx, died) = watch::channel(None);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        tokio::select! {
            status = proc.wait() => {
                exited.store(true, Ordering::Release);
                let how = match status {
                    Ok(s) => describe_exit(&s),
                    Err(e) => e.to_string(),
                };
                tracing::error!(exit = %how, "function process exited");
                let _ = died_tx.send(Some(how));
            }
            _ = stop_rx => {
                let status = proc.terminate_and_wait().await;
                exited.store(true, Ordering::Release);
                let how = status.map(|s| describe_exit(&s)).unwrap_or_default();
                tracing::info!(exit = %how, "function process stopped");
            }
        }
    });
    Ok(Running {
        stop,
        done,
        handle: Handle { pgid, died },
    })
}

impl Running {
    /// A handle that outlives a borrow of this.
    pub(super) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops the process group and waits until the process is gone.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

impl Handle {
    /// Resolves with how the process ended, if it ends on its own; never after a stop.
    pub(super) async fn died(mut self) -> String {
        let how = self
            .died
            .wait_for(Option::is_some)
            .await
            .map(|how| how.clone().unwrap_or_default());
        match how {
            Ok(how) => how,
            // Stopped, not died: the sender is gone without a word.
            Err(_) => std::future::pending().await,
        }
    }

    /// Sends `sig` to the process group.
    pub(super) fn signal(&self, sig: Signal) {
        let sent = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pgid), sig);
        tracing::info!(signal = %sig, ok = sent.is_ok(), "forwarded to the function's process group");
    }
}
