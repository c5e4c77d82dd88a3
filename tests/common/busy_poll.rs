//! What the tests of `busy_poll` share: the budget a watchdog chose, whether this machine
//! has the CPUs `auto` needs, and that an idle watchdog does not spin.

use std::time::Duration;

use super::{eventually, Watchdog};

/// Asserts that a second without requests costs the watchdog (almost) no CPU: polling
/// must stop when there is nothing to find.
pub fn assert_sleeps_when_idle(wd: &Watchdog) {
    // CPU time (user + system) in clock ticks, from the fields after the command name
    // (which is in parentheses and may hold spaces).
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", wd.child.id())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks() - before;
    // A spinning thread would use about 100 ticks; an idle one about none.
    assert!(used <= 30, "idle watchdog used {used} ticks in 1 s");
}

/// Whether this machine has the two CPUs `auto` polls with; says so when it has not.
pub fn two_cpus(test: &str) -> bool {
    let enough = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !enough {
        eprintln!("SKIP {test}: needs 2 CPUs");
    }
    enough
}

/// The budget the watchdog chose, from its start line.
pub fn busy_poll_chosen(wd: &Watchdog) -> String {
    // The start line may still be on its way through the pipe to the harness.
    eventually(Duration::from_secs(5), || wd.log().contains("busy_poll="));
    let log = wd.log();
    let at = log
        .find("busy_poll=")
        .unwrap_or_else(|| panic!("no busy_poll in {log}"));
    log[at..].split_whitespace().next().unwrap().to_string()
}
