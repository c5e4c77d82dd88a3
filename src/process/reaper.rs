//! PID 1 duties, done the way tini does them: when the watchdog starts as PID 1 it forks.
//! The parent stays PID 1, reaps every orphan that is re-parented to it and forwards
//! signals to the child; the child is the watchdog. Because the watchdog's own children are
//! not the parent's, a `waitpid(-1)` here never steals an exit status from tokio::process.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};

/// Signals passed on to the watchdog.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// If this process is PID 1, splits into the reaper (which never returns) and the
/// watchdog (which returns `Ok`). Must run before any thread is started.
pub fn become_init_if_pid1() -> nix::Result<()> {
    if getpid().as_raw() != 1 {
        return Ok(());
    }
    let mut set = SigSet::empty();
    for sig in FORWARDED.iter().copied().chain([Signal::SIGCHLD]) {
        set.add(sig);
    }
    let mut old = SigSet::empty();
    // Block first, so no signal arriving around the fork is lost: the parent collects
    // them with sigwait, the child unblocks them for tokio.
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
    // SAFETY: no other thread exists yet (called from main before the runtime starts).
    match unsafe { fork() }? {
        ForkResult::Child => {
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            let code = supervise(child, &set);
            std::process::exit(code);
        }
    }
}

/// The PID 1 loop: forward signals, reap everything, exit with the watchdog's status.
fn supervise(child: Pid, set: &SigSet) -> i32 {
    loop {
        let sig = match set.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        if let Some(code) = reap_all(child) {
            // Collect what is left before leaving; the kernel kills the rest with us.
            let _ = reap_all(Pid::from_raw(-1));
            return code;
        }
    }
}

/// Reaps every exited child; returns the watchdog's exit code once it has exited.
fn reap_all(watchdog: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(WaitStatus::Exited(pid, code)) if pid == watchdog => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == watchdog => {
                result = Some(128 + sig as i32)
            }
            Ok(_) => {}
        }
    }
}
