//! mode=worker with the real binary and real worker processes (tests/worker.py, and the
//! python3 template's entry code): the protocol both ways, waiting for a free worker,
//! supervision (timeouts, exits, bad output, recycling, a worker that never starts),
//! SIGTERM, and no zombies.

mod common;

use std::time::Duration;

use common::busy_poll::{assert_sleeps_when_idle, busy_poll_chosen, two_cpus};
use common::*;

const WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/worker.py");

fn start(env: &[(&str, &str)], args: &[&str]) -> Watchdog {
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("mode", "worker".into()));
    let mut cmd = vec!["python3", WORKER];
    cmd.extend_from_slice(args);
    Watchdog::with(Opts {
        env,
        cmd,
        ..Opts::default()
    })
}

fn pid_of(wd: &Watchdog) -> u32 {
    let r = wd.get("/pid").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Gone, or a zombie waiting to be reaped: either way no longer running.
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

#[test]
fn a_binary_body_goes_both_ways_byte_for_byte() {
    let wd = start(&[("RAW_BODY", "true"), ("workers", "1")], &[]);
    let body: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let r = wd.post("/echo?x=1&y", &body).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the echoed body differs");
    assert_eq!(r.header("x-echo-head"), Some("POST /echo x=1&y"));
    assert_eq!(r.header("content-length"), Some("1048576"));
    // The head carries the call id, the CGI variables and a deadline in the future.
    let r = wd
        .request(
            "GET",
            "/head?q=1",
            &[("X-Call-Id", "abc-1"), ("X-Custom", "v")],
            b"",
        )
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(head["call_id"], "abc-1");
    assert_eq!(head["env"]["Http_X_Custom"], "v");
    assert_eq!(head["env"]["Http_Query"], "q=1");
    assert!(head["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == &serde_json::json!(["x-custom", "v"])));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(head["deadline_ms"].as_u64().unwrap() > now_ms);
}

#[test]
fn with_two_workers_two_requests_run_at_once_and_the_rest_wait() {
    let dir = scratch_dir("worker-conc");
    let log = dir.join("spans");
    let wd = start(
        &[("workers", "2"), ("exec_timeout", "60s")],
        &["--log", log.to_str().unwrap()],
    );
    let port = wd.port;
    let handles: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                request(port, "GET", "/sleep?s=0.4", &[], b"").map(|r| (r.status, r.text()))
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), (200, "slept".to_string()));
    }
    let spans: Vec<(f64, f64, u32)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans.len(), 6);
    let pids: std::collections::HashSet<u32> = spans.iter().map(|s| s.2).collect();
    assert_eq!(pids.len(), 2, "two workers served: {spans:?}");
    // Most requests in progress at any moment: two, never more.
    let most = spans
        .iter()
        .map(|(s, _, _)| spans.iter().filter(|(a, b, _)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert_eq!(most, 2, "{spans:?}");
}

#[test]
fn past_exec_timeout_the_group_is_killed_and_a_fresh_worker_serves_the_next() {
    let mark = marker("wk-timeout");
    let wd = start(&[("workers", "1"), ("exec_timeout", "1s")], &[]);
    let first = pid_of(&wd);
    let r = wd.get(&format!("/forkwait?mark={mark}")).unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(5), || !alive(first)),
        "the worker outlived its timeout"
    );
    assert!(
        eventually(Duration::from_secs(5), || pids_with_marker(&mark)
            .is_empty()),
        "its grandchild survived"
    );
    let r = wd.post("/echo", b"next").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "next"));
    assert_ne!(pid_of(&wd), first);
    assert!(
        eventually(Duration::from_secs(5), || wd
            .log()
            .contains("past exec_timeout")),
        "{}",
        wd.log()
    );
}

#[test]
fn a_worker_that_exits_or_writes_garbage_fails_only_its_request() {
    let wd = start(&[("workers", "1")], &[]);
    let first = pid_of(&wd);
    let r = wd.get("/exit").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("exit status 7"), "{}", r.text());
    let r = wd.post("/echo", b"after exit").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "after exit"));
    let second = pid_of(&wd);
    assert_ne!(first, second);
    let r = wd.get("/garbage").unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("not JSON"), "{}", r.text());
    let r = wd.post("/echo", b"after garbage").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "after garbage"));
    assert_ne!(pid_of(&wd), second);
    let log = wd.log();
    assert!(
        log.contains("exit status 7") && log.contains("not JSON"),
        "{log}"
    );
}

#[test]
fn bytes_past_an_answer_never_become_the_next_answer() {
    let wd = start(&[("workers", "1")], &[]);
    let first = pid_of(&wd);
    let r = wd.get("/extra").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    // The worker is out of step: the next request gets a fresh one, not "STALE".
    let r = wd.post("/echo", b"fresh").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "fresh"));
    assert_ne!(pid_of(&wd), first);
}

#[test]
fn what_a_worker_prints_is_logged_and_the_protocol_holds() {
    let wd = start(&[("workers", "1")], &[]);
    for _ in 0..3 {
        let r = wd.get("/print").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "printed"));
    }
    let r = wd.post("/echo", b"still framed").unwrap();
    assert_eq!(r.text(), "still framed");
    // Log lines reach the file when the watchdog next idles: wait for them.
    let logged = || {
        let log = wd.log();
        log.contains("stdout: hello from the worker's stdout")
            && log.contains("stderr: and from its stderr")
    };
    assert!(eventually(Duration::from_secs(5), logged), "{}", wd.log());
}

#[test]
fn worker_max_requests_recycles_every_n_requests() {
    let wd = start(&[("workers", "1"), ("worker_max_requests", "5")], &[]);
    let pids: Vec<u32> = (0..15).map(|_| pid_of(&wd)).collect();
    for chunk in pids.chunks(5) {
        assert!(chunk.iter().all(|p| *p == chunk[0]), "{pids:?}");
    }
    assert_ne!(pids[0], pids[5]);
    assert_ne!(pids[5], pids[10]);
    assert!(
        eventually(Duration::from_secs(5), || !alive(pids[0])),
        "a retired worker kept running"
    );
}

#[test]
fn a_worker_that_never_starts_is_503_with_backoff_not_a_busy_loop() {
    let mut wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "worker".into()),
            ("workers", "2".into()),
            ("exec_timeout", "1s".into()),
        ],
        cmd: vec!["python3", WORKER, "--die-at-start"],
        wait_healthy: false,
        ..Opts::default()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wd.get("/_/health").unwrap().status, 503);
    // A request waits for a worker until exec_timeout; none comes.
    let r = wd.post("/echo", b"x").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let log = wd.log();
    let failures = log.matches("worker failed to start").count();
    assert!(failures >= 2, "{log}");
    // Backoff doubles from 100 ms: in 3 s each slot tries about five times, not hundreds.
    assert!(failures <= 20, "{failures} start attempts in 3 s:\n{log}");
    assert!(log.contains("exit status 5"), "{log}");
    // CPU time the watchdog spent in those seconds (utime + stime, in clock ticks of 10 ms).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", wd.child.id())).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    assert!(ticks < 100, "the watchdog used {ticks} ticks of CPU");
    wd.signal("TERM");
    assert!(wd.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_stops_every_worker() {
    let mut wd = start(&[("workers", "2"), ("exec_timeout", "30s")], &[]);
    let pids = [pid_of(&wd), pid_of(&wd)];
    let port = wd.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/sleep?s=1.5", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    wd.signal("TERM");
    let r = slow.join().unwrap().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    let st = wd.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(st.code(), Some(0), "{}", wd.log());
    for p in pids {
        assert!(
            eventually(Duration::from_secs(5), || !alive(p)),
            "worker {p} left running"
        );
    }
}

#[test]
fn as_pid_1_replaced_workers_leave_no_zombies() {
    let mut wd = Watchdog::with(Opts {
        env: vec![("mode", "worker".into()), ("workers", "1".into())],
        cmd: vec!["python3", WORKER],
        launcher: vec!["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        ..Opts::default()
    });
    for _ in 0..5 {
        assert_eq!(wd.get("/exit").unwrap().status, 502);
        assert_eq!(wd.post("/echo", b"ok").unwrap().text(), "ok");
    }
    // Zombies among the namespace's processes: children of its PID 1 (the watchdog's
    // reaper) or of the watchdog. Other tests' processes are not counted.
    let ns_init = children(wd.child.id());
    assert_eq!(ns_init.len(), 1, "{ns_init:?}");
    let mut family = ns_init.clone();
    family.extend(children(ns_init[0]));
    let zombies = |family: &[u32]| -> Vec<u32> {
        all_procs()
            .into_iter()
            .filter(|(_, ppid, state)| family.contains(ppid) && *state == 'Z')
            .map(|(pid, _, _)| pid)
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || zombies(&family).is_empty()),
        "zombies under {family:?}: {:?}",
        zombies(&family)
    );
    // SIGTERM goes to the namespace's PID 1 (unshare's child), which forwards it.
    let init = ns_init;
    std::process::Command::new("kill")
        .args(["-TERM", &init[0].to_string()])
        .status()
        .unwrap();
    let st = wd.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(st.code(), Some(0), "{}", wd.log());
}

#[test]
fn metrics_count_workers_started_restarts_busy_and_waiting() {
    let mut env: Vec<(&str, String)> = vec![("mode", "worker".into()), ("workers", "2".into())];
    env.push(("exec_timeout", "10s".into()));
    let wd = Watchdog::with(Opts {
        env,
        cmd: vec!["python3", WORKER],
        metrics: true,
        ..Opts::default()
    });
    for _ in 0..3 {
        assert_eq!(wd.post("/echo", b"x").unwrap().status, 200);
    }
    assert_eq!(wd.get("/exit").unwrap().status, 502);
    assert_eq!(wd.post("/echo", b"y").unwrap().status, 200);
    let scrape = |name: &str| -> f64 {
        let text = request(wd.metrics_port, "GET", "/metrics", &[], b"")
            .unwrap()
            .text();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert!(
        eventually(Duration::from_secs(10), || scrape(
            "fwatchdog_workers_started_total"
        ) >= 3.0),
        "a replacement was started"
    );
    assert!(scrape("fwatchdog_function_restarts_total") >= 1.0);
    assert_eq!(scrape("fwatchdog_workers_busy"), 0.0);
    assert_eq!(scrape("fwatchdog_worker_queue_wait_seconds_count"), 5.0);
}

/// (pid, ppid, state) of every process.
fn all_procs() -> Vec<(u32, u32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let mut f = stat.rsplit(')').next()?.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse::<u32>().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

fn children(of: u32) -> Vec<u32> {
    all_procs()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == of)
        .map(|(pid, _, _)| pid)
        .collect()
}

#[test]
fn busy_poll_auto_polls_in_worker_mode_with_two_cpus_and_sleeps_when_idle() {
    if !two_cpus("busy_poll_auto_polls_in_worker_mode_with_two_cpus_and_sleeps_when_idle") {
        return;
    }
    // The watchdog waits on a warm process for every answer, as in http mode.
    let wd = start(&[("workers", "1")], &[]);
    assert_eq!(busy_poll_chosen(&wd), "busy_poll=\"100us\"", "{}", wd.log());
    for _ in 0..200 {
        assert_eq!(wd.post("/echo", b"x").unwrap().status, 200);
    }
    assert_sleeps_when_idle(&wd);
    let off = start(&[("workers", "1"), ("busy_poll", "0")], &[]);
    assert_eq!(busy_poll_chosen(&off), "busy_poll=\"0s\"");
}
