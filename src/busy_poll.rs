//! `busy_poll`: an idle runtime thread keeps looking for work for a short while before it
//! goes to sleep in `epoll_wait`.
//!
//! On a VM, waking a thread whose CPU went idle costs tens of microseconds (the host has to
//! reschedule the virtual CPU), and a proxied request wakes the watchdog twice. A thread
//! that is still polling when the next event arrives skips that cost. The price is CPU, so
//! the thread polls only while polling pays:
//!
//! - **Its waits are short.** Every sleep is timed, polled or not, and a score follows how
//!   many of the recent ones ended within the budget (a hit). The thread polls only while
//!   at least three in four do, so an idle watchdog, or one whose waits alternate between
//!   short and long, does not spin at all.
//! - **Requests are quick.** A wake-up saved is worth a few percent of a millisecond-long
//!   request and a third of a 60 µs one; when requests take longer than [`SLOW_REQUEST`] on
//!   average, polling stops, however short the waits between their events are.
//! - **Nobody else wants the CPU.** Between two looks the thread yields, so anything else
//!   runnable on its CPU (the function, most likely) runs first. In front of a function
//!   that keeps both CPUs busy, polling then costs 1 % of throughput or less.
//!
//! `auto` (the default) sets a budget of [`AUTO_BUDGET`] in http and worker mode (the two
//! that wait on a warm process for every answer) when the watchdog may use at least two
//! CPUs (affinity and cgroup quota both count): on one CPU, or under a
//! quota of less than two, spinning would take time from the function itself.
//!
//! The runtime's `on_thread_park` hook does the polling. It watches the runtime's own epoll
//! instance (tokio holds it twice, as mio's poller and a duplicate for its registry), which
//! becomes readable when any of its sockets, signal pipes or cross-thread wakers has an
//! event; `poll(2)` on an epoll descriptor reports that without taking the events, so the
//! runtime still receives them when it parks right after.

use std::cell::Cell;
use std::collections::HashSet;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::{BusyPoll, Mode};

/// The budget `auto` chooses where it turns polling on.
pub const AUTO_BUDGET: Duration = Duration::from_micros(100);
/// Average time to the response head beyond which polling stops.
pub const SLOW_REQUEST: Duration = Duration::from_millis(1);

/// The runtime's epoll descriptors (-1 = unused slot).
static DRIVER_FDS: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];
static BUDGET_NS: AtomicU64 = AtomicU64::new(0);
/// Moving average of the time to the response head, in nanoseconds.
static REQUEST_NS: AtomicU64 = AtomicU64::new(0);

/// Fixed-point 1.0 for the hit score.
const SCORE_ONE: u32 = 1024;
/// The score from which the thread polls: three in four recent sleeps were hits.
const SCORE_TO_POLL: u32 = SCORE_ONE * 3 / 4;

/// What one runtime thread knows about its own sleeps.
#[derive(Clone, Copy)]
struct Sleeps {
    /// When the thread last ran out of work (None once it has run again).
    since: Option<Instant>,
    /// Moving average of hits, 0..=SCORE_ONE. Starts at 0: polling is earned.
    score: u32,
}

thread_local! {
    static SLEEPS: Cell<Sleeps> = const { Cell::new(Sleeps { since: None, score: 0 }) };
}

/// The score after one more sleep: each counts for an eighth.
fn rescore(score: u32, hit: bool) -> u32 {
    if hit {
        score + (SCORE_ONE - score) / 8
    } else {
        score - score / 8
    }
}

/// The moving average after one more request: each counts for an eighth, and none for
/// more than sixteen times the limit, so one long stream does not switch polling off for
/// long.
fn average(avg_ns: u64, took: Duration) -> u64 {
    let took = took.min(SLOW_REQUEST * 16).as_nanos() as u64;
    avg_ns - avg_ns / 8 + took / 8
}

/// The budget a setting comes to in `mode` on a machine where the watchdog may use `cpus`
/// CPUs.
pub fn resolve(setting: BusyPoll, mode: Mode, cpus: usize) -> Duration {
    match setting {
        BusyPoll::Budget(d) => d,
        BusyPoll::Auto if matches!(mode, Mode::Http | Mode::Worker) && cpus >= 2 => AUTO_BUDGET,
        BusyPoll::Auto => Duration::ZERO,
    }
}

/// The budget in force (zero: off).
pub fn budget() -> Duration {
    Duration::from_nanos(BUDGET_NS.load(Ordering::Acquire))
}

/// The process's open descriptors, to tell afterwards which ones a new runtime made.
pub fn open_fds() -> HashSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Turns polling on for the runtime whose epoll descriptors are among those opened since
/// `before` was taken. Returns false (and polling stays off) unless there are one or two.
/// Only the new descriptors are looked at: each readlink in /proc costs a path walk, and
/// this runs on the way to the first healthy answer.
pub fn enable(before: &HashSet<RawFd>, budget: Duration) -> bool {
    let new: Vec<RawFd> = open_fds()
        .difference(before)
        .copied()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().ends_with(b"[eventpoll]"))
        })
        .collect();
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

/// Counts one request's time to its response head.
pub fn request_took(took: Duration) {
    if BUDGET_NS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let avg = REQUEST_NS.load(Ordering::Relaxed);
    // A lost update between threads only blurs an average.
    REQUEST_NS.store(average(avg, took), Ordering::Relaxed);
}

/// The `on_thread_park` part: polls, when polling pays, until the runtime has an event
/// waiting or the budget is spent.
pub fn park() {
    let budget = budget();
    if budget.is_zero() {
        return;
    }
    let now = Instant::now();
    let mut sleeps = SLEEPS.get();
    sleeps.since = Some(now);
    SLEEPS.set(sleeps);
    let quick = REQUEST_NS.load(Ordering::Relaxed) <= SLOW_REQUEST.as_nanos() as u64;
    if sleeps.score >= SCORE_TO_POLL && quick {
        poll_for(now, budget);
    }
}

/// The `on_thread_unpark` part: scores the sleep that just ended.
pub fn unpark() {
    let budget = budget();
    if budget.is_zero() {
        return;
    }
    let mut sleeps = SLEEPS.get();
    if let Some(since) = sleeps.since.take() {
        sleeps.score = rescore(sleeps.score, since.elapsed() <= budget);
        SLEEPS.set(sleeps);
    }
}

/// Polls the runtime's descriptors until one is ready or `budget` from `start` is spent.
fn poll_for(start: Instant, budget: Duration) {
    // On the stack, as this runs every time the thread runs out of work. An unused second
    // slot repeats the first descriptor (enable stores at least one).
    let first = DRIVER_FDS[0].load(Ordering::Acquire);
    if first < 0 {
        return;
    }
    let second = DRIVER_FDS[1].load(Ordering::Acquire);
    let second = if second >= 0 { second } else { first };
    // SAFETY: the descriptors belong to the runtime, which outlives its park hook.
    let fd = |raw| PollFd::new(unsafe { BorrowedFd::borrow_raw(raw) }, PollFlags::POLLIN);
    let mut fds = [fd(first), fd(second)];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => {}
            // Ready, or an error the runtime's own epoll_wait will meet and report.
            _ => return,
        }
        if start.elapsed() >= budget {
            return;
        }
        // Not a bare spin: anything else runnable on this CPU (the function, say) goes
        // first. With nothing waiting, it returns at once.
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_is_earned_by_short_sleeps_and_lost_by_long_ones() {
        let after = |mut s: u32, hits: &[bool]| {
            for &h in hits {
                s = rescore(s, h);
            }
            s
        };
        // From a cold start, about a dozen short sleeps in a row.
        assert!(after(0, &[true; 10]) < SCORE_TO_POLL);
        assert!(after(0, &[true; 12]) >= SCORE_TO_POLL);
        // Three long ones in a row stop it.
        assert!(after(SCORE_ONE, &[false; 3]) < SCORE_TO_POLL);
        // Waits that alternate (a slow function at one connection) never earn it.
        let alternating: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
        assert!(after(SCORE_ONE, &alternating) < SCORE_TO_POLL);
        // One long sleep among short ones does not.
        assert!(after(SCORE_ONE, &[false, true, true, true, true]) >= SCORE_TO_POLL);
        assert!(after(SCORE_ONE, &[true; 100]) <= SCORE_ONE);
    }

    #[test]
    fn slow_requests_switch_polling_off_and_quick_ones_back_on() {
        let limit = SLOW_REQUEST.as_nanos() as u64;
        let mut avg = 0;
        for _ in 0..20 {
            avg = average(avg, Duration::from_millis(2));
        }
        assert!(avg > limit);
        for _ in 0..30 {
            avg = average(avg, Duration::from_micros(50));
        }
        assert!(avg <= limit);
        // A stream that lasted an hour counts as sixteen limits: quick requests win the
        // average back within a few dozen.
        avg = average(avg, Duration::from_secs(3600));
        let mut n = 0;
        while avg > limit {
            avg = average(avg, Duration::from_micros(50));
            n += 1;
        }
        assert!(n < 30, "{n}");
    }

    #[test]
    fn auto_polls_in_http_and_worker_mode_with_two_cpus_or_more() {
        let d = Duration::from_micros(30);
        assert_eq!(resolve(BusyPoll::Auto, Mode::Http, 2), AUTO_BUDGET);
        assert_eq!(resolve(BusyPoll::Auto, Mode::Worker, 2), AUTO_BUDGET);
        assert_eq!(resolve(BusyPoll::Auto, Mode::Worker, 1), Duration::ZERO);
        assert_eq!(resolve(BusyPoll::Auto, Mode::Http, 1), Duration::ZERO);
        assert_eq!(resolve(BusyPoll::Auto, Mode::Streaming, 8), Duration::ZERO);
        assert_eq!(resolve(BusyPoll::Budget(d), Mode::Streaming, 1), d);
        assert_eq!(
            resolve(BusyPoll::Budget(Duration::ZERO), Mode::Http, 8),
            Duration::ZERO
        );
    }
}
