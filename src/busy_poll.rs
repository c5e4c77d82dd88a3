//! `busy_poll`: an idle runtime thread keeps looking for work for a short while before it
//! goes to sleep in `epoll_wait`.
//!
//! On a VM, waking a thread whose CPU went idle costs tens of microseconds (the host has to
//! reschedule the virtual CPU), and a proxied request wakes the watchdog twice. A thread
//! that is still polling when the next event arrives skips that cost. The price is CPU:
//! up to `busy_poll` of spinning each time the thread runs out of work, none once it has
//! been idle that long. So it is off by default.
//!
//! Polling that keeps finding nothing (a function that takes milliseconds per request)
//! backs off: after three empty polls in a row the thread skips polling for 1, 2, 4, …
//! up to 1024 parks, and one successful poll restores it.
//!
//! The runtime's `on_thread_park` hook does the polling. It watches the runtime's own epoll
//! instance (tokio holds it twice, as mio's poller and a duplicate for its registry), which
//! becomes readable when any of its sockets, signal pipes or cross-thread wakers has an
//! event; `poll(2)` on an epoll descriptor reports that without taking the events, so the
//! runtime still receives them when it parks right after.

use std::collections::HashSet;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The runtime's epoll descriptors (-1 = unused slot).
static DRIVER_FDS: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];
static BUDGET_NS: AtomicU64 = AtomicU64::new(0);
/// Consecutive polls that found nothing.
static MISSES: AtomicU32 = AtomicU32::new(0);
/// Parks left to sleep through without polling.
static SKIP: AtomicU32 = AtomicU32::new(0);

/// Empty polls in a row after which polling backs off.
const MISSES_BEFORE_BACKOFF: u32 = 3;
/// Most parks skipped between two polls.
const MAX_SKIP: u32 = 1024;

/// How many parks to skip after `misses` empty polls in a row.
fn backoff(misses: u32) -> u32 {
    if misses < MISSES_BEFORE_BACKOFF {
        return 0;
    }
    1u32.checked_shl(misses - MISSES_BEFORE_BACKOFF)
        .unwrap_or(MAX_SKIP)
        .min(MAX_SKIP)
}

/// The process's epoll descriptors, to tell afterwards which one a new runtime made.
pub fn epoll_fds() -> HashSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().ends_with(b"[eventpoll]"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Turns polling on for the runtime whose epoll descriptors are those in `after` but not
/// in `before`. Returns false (and polling stays off) unless there are one or two.
pub fn enable(before: &HashSet<RawFd>, after: &HashSet<RawFd>, budget: Duration) -> bool {
    let new: Vec<RawFd> = after.difference(before).copied().collect();
    if new.is_empty() || new.len() > DRIVER_FDS.len() {
        return false;
    }
    for (slot, fd) in DRIVER_FDS.iter().zip(new) {
        slot.store(fd, Ordering::Release);
    }
    // Last: worker threads may already be parking, and poll only once this is set.
    BUDGET_NS.store(budget.as_nanos() as u64, Ordering::Release);
    true
}

/// The `on_thread_park` part: returns as soon as the runtime has an event waiting, or when
/// the budget is spent.
pub fn spin() {
    let budget = Duration::from_nanos(BUDGET_NS.load(Ordering::Acquire));
    if budget.is_zero() {
        return;
    }
    let skip = SKIP.load(Ordering::Relaxed);
    if skip > 0 {
        SKIP.store(skip - 1, Ordering::Relaxed);
        return;
    }
    if poll_for(budget) {
        MISSES.store(0, Ordering::Relaxed);
    } else {
        let misses = MISSES.load(Ordering::Relaxed).saturating_add(1);
        MISSES.store(misses, Ordering::Relaxed);
        SKIP.store(backoff(misses), Ordering::Relaxed);
    }
}

/// Polls the runtime's descriptors until one is ready (true) or `budget` is spent (false).
fn poll_for(budget: Duration) -> bool {
    // On the stack, as this runs every time the thread runs out of work. An unused second
    // slot repeats the first descriptor (enable stores at least one).
    let first = DRIVER_FDS[0].load(Ordering::Acquire);
    if first < 0 {
        return false;
    }
    let second = DRIVER_FDS[1].load(Ordering::Acquire);
    let second = if second >= 0 { second } else { first };
    // SAFETY: the descriptors belong to the runtime, which outlives its park hook.
    let fd = |raw| PollFd::new(unsafe { BorrowedFd::borrow_raw(raw) }, PollFlags::POLLIN);
    let mut fds = [fd(first), fd(second)];
    let start = Instant::now();
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => {}
            // Ready, or an error the runtime's own epoll_wait will meet and report.
            _ => return true,
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_polls_back_off_exponentially_up_to_a_bound() {
        let skips: Vec<u32> = (0..8).map(backoff).collect();
        assert_eq!(skips, [0, 0, 0, 1, 2, 4, 8, 16]);
        assert_eq!(backoff(13), 1024);
        assert_eq!(backoff(40), MAX_SKIP);
        assert_eq!(backoff(u32::MAX), MAX_SKIP);
    }
}
