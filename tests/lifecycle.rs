//! Start-up, configuration errors, health, the lock file, SIGTERM drain and PID 1 duties.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// (environment, arguments, the name the error must mention)
type ConfigCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

#[test]
fn bad_config_exits_2_naming_the_variable() {
    let cases: &[ConfigCase] = &[
        (&[("mode", "afterburn"), ("fprocess", "cat")], &[], "mode"),
        (
            &[("fprocess", "cat"), ("exec_timeout", "soon")],
            &[],
            "exec_timeout",
        ),
        (&[("fprocess", "cat"), ("port", "abc")], &[], "port"),
        (
            &[("fprocess", "cat"), ("max_inflight", "-1")],
            &[],
            "max_inflight",
        ),
        (&[], &[], "fprocess"),
        (
            &[("mode", "http"), ("fprocess", "cat")],
            &[],
            "upstream_url",
        ),
        (
            &[("fprocess", "cat"), ("prefix_logs", "perhaps")],
            &[],
            "prefix_logs",
        ),
        (
            &[("fprocess", "cat")],
            &["--bogus-flag", "1"],
            "--bogus-flag",
        ),
    ];
    for (env, args, var) in cases {
        let (code, err) = run_to_exit(env, args);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(var), "{var} not named in {err:?}");
    }
}

#[test]
fn port_in_use_exits_2() {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let (code, err) = run_to_exit(&[("fprocess", "cat"), ("PORT", &port)], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PORT"), "{err}");
}

#[test]
fn help_version_and_healthcheck_flag() {
    let (code, _) = run_to_exit(&[], &["--help"]);
    assert_eq!(code, 0);
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "mode",
        "fprocess",
        "exec_timeout",
        "max_inflight",
        "upstream_url",
        "RAW_BODY",
        "metrics_port",
    ] {
        assert!(help.contains(name), "--help lacks {name}");
    }
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("fwatchdog "));

    let tmp = scratch_dir("hc");
    let tmp_s = tmp.to_str().unwrap();
    let (code, _) = run_to_exit(&[("TMPDIR", tmp_s)], &["--run-healthcheck"]);
    assert_eq!(code, 1, "no lock file yet");
    std::fs::write(tmp.join(".lock"), b"").unwrap();
    let (code, _) = run_to_exit(&[("TMPDIR", tmp_s)], &["--run-healthcheck"]);
    assert_eq!(code, 0);
}

#[test]
fn flags_override_env() {
    let wd = Watchdog::with(Opts {
        env: vec![("fprocess", "false".into())],
        cmd: vec!["echo", "from-flag"],
        ..Opts::default()
    });
    assert_eq!(wd.get("/").unwrap().text(), "from-flag\n");

    // A setting given as a flag wins over the env and reaches the function's environment.
    let wd = Watchdog::with(Opts {
        env: vec![("RAW_BODY", "false".into()), ("exec_timeout", "10s".into())],
        args: vec!["--raw-body", "true", "--exec-timeout=1s"],
        cmd: vec!["sh", "-c", "echo \"$RAW_BODY $exec_timeout\"; sleep 3"],
        ..Opts::default()
    });
    let r = wd.get("/").unwrap();
    assert_eq!(r.text(), "true 1s\n");
    assert!(r.truncated, "--exec-timeout=1s cut the 3 s function");
}

#[test]
fn health_ready_and_lock_file() {
    let mut wd = Watchdog::start(&[], &["cat"]);
    assert_eq!(wd.get("/_/health").unwrap().text(), "OK\n");
    assert_eq!(wd.get("/_/ready").unwrap().status, 200);
    assert_eq!(
        wd.request("POST", "/_/health", &[], b"").unwrap().status,
        405
    );
    let lock = wd.tmpdir.join(".lock");
    assert!(lock.exists());
    wd.signal("TERM");
    assert!(
        eventually(Duration::from_secs(1), || !lock.exists()),
        "lock file removed at once"
    );
    assert_eq!(
        wd.wait_exit(Duration::from_secs(5)).map(|s| s.code()),
        Some(Some(0))
    );

    let wd = Watchdog::start(&[("suppress_lock", "true")], &["cat"]);
    assert_eq!(
        wd.get("/_/health").unwrap().status,
        200,
        "suppress_lock keeps health 200"
    );
    assert!(!wd.tmpdir.join(".lock").exists());
}

#[test]
fn watchdogs_sharing_a_tmpdir_start_side_by_side() {
    // An http-mode watchdog checks at start that it can write the lock file. Watchdogs
    // that share a TMPDIR (two in one bench script did) must not trip over one another's
    // check: with one probe name for all, about 3 % of simultaneous starts exited 2.
    let shared = scratch_dir("shared-tmp");
    let mut failed = Vec::new();
    for _ in 0..40 {
        let mut batch: Vec<std::process::Child> = (0..4)
            .map(|_| {
                let own = common::listener();
                let mut c = std::process::Command::new(BIN);
                common::pass_listeners(&mut c, &[&own]);
                c.env("metrics_port", "0")
                    .env("TMPDIR", &shared)
                    .env("mode", "http")
                    // Nothing listens there: the watchdog waits for it, which is enough.
                    .env("upstream_url", "unix:/nonexistent/fwatchdog-test.sock")
                    .args(["--", "sleep", "30"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        for child in &mut batch {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                failed.push(format!("{status}: {err}"));
            } else {
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 160 exited: {failed:?}",
        failed.len()
    );
}

#[test]
fn sigterm_drains_inflight_requests() {
    let mut wd = Watchdog::start(&[], &["sh", "-c", "sleep 2; echo done"]);
    let port = wd.port;
    let inflight = std::thread::spawn(move || request(port, "GET", "/", &[], b"").unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    wd.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        wd.get("/_/health").unwrap().status,
        503,
        "health is 503 while draining"
    );
    // New work is still served while the platform stops routing.
    assert_eq!(wd.post("/", b"").unwrap().status, 200);
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "done\n");
    let st = wd.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "drain took {:?}",
        t.elapsed()
    );
}

#[test]
fn idle_sigterm_exits_in_about_a_second() {
    let mut wd = Watchdog::start(&[], &["cat"]);
    let t = Instant::now();
    wd.signal("TERM");
    let st = wd.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(st.code(), Some(0));
    // About a second; far from the 60 s window (healthcheck_interval + write_timeout).
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn zombies_under(pids: &[u32]) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ppid = fields
            .get(1)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if fields.first() == Some(&"Z") && pids.contains(&ppid) {
            n += 1;
        }
    }
    n
}

#[test]
fn pid1_reaps_orphans_and_keeps_exit_statuses() {
    if std::process::Command::new("unshare")
        .arg("--help")
        .output()
        .is_err()
    {
        panic!("unshare (util-linux) is needed for the PID 1 test");
    }
    // The function double-forks: its grandchild is orphaned and re-parented to PID 1.
    let mut wd = Watchdog::with(Opts {
        env: vec![("mode", "serializing".into())],
        cmd: vec!["sh", "-c", "(sleep 0.2 &); read code; echo ran; exit $code"],
        launcher: vec!["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        ..Opts::default()
    });
    for _ in 0..20 {
        let r = wd.post("/", b"0\n").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ran\n"));
    }
    // tokio::process still sees its own children's exit statuses.
    let r = wd.post("/", b"3\n").unwrap();
    assert_eq!(
        r.status, 500,
        "exit status 3 must not be stolen by the reaper"
    );
    std::thread::sleep(Duration::from_millis(800));
    let init = children_of(wd.child.id());
    assert_eq!(init.len(), 1, "unshare's child is the namespace's PID 1");
    let mut family = init.clone();
    family.extend(children_of(init[0]));
    assert!(family.len() >= 2, "PID 1 forked the watchdog: {family:?}");
    assert_eq!(zombies_under(&family), 0, "zombies left under {family:?}");

    // SIGTERM to PID 1 is forwarded; the watchdog drains and everything exits 0.
    std::process::Command::new("kill")
        .args(["-TERM", &init[0].to_string()])
        .status()
        .unwrap();
    let st = wd
        .wait_exit(Duration::from_secs(6))
        .expect("PID 1 exited after SIGTERM");
    assert_eq!(st.code(), Some(0), "log:\n{}", wd.log());
}

#[test]
fn knative_func_probe_paths_and_revision_in_the_start_line() {
    let dir = scratch_dir("kfunc");
    let ran = dir.join("ran");
    let script = format!("echo x >> {}; cat", ran.display());
    let wd = Watchdog::start(
        &[
            ("K_SERVICE", "hello"),
            ("K_REVISION", "hello-00001"),
            ("K_CONFIGURATION", "hello"),
            ("max_inflight", "1"),
        ],
        &["sh", "-c", &script],
    );
    for (path, body) in [("/health/readiness", "OK\n"), ("/health/liveness", "OK\n")] {
        let r = wd.get(path).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
    assert_eq!(wd.post("/health/readiness", b"").unwrap().status, 405);
    assert!(!ran.exists(), "a probe path reached the function");
    assert!(
        eventually(Duration::from_secs(5), || wd
            .log()
            .contains("k_revision=\"hello-00001\"")),
        "{}",
        wd.log()
    );
    let start = wd.log();
    let line = start
        .lines()
        .find(|l| l.contains("fwatchdog listening"))
        .unwrap();
    assert!(
        line.contains("k_service=\"hello\"") && line.contains("k_configuration=\"hello\""),
        "{line}"
    );
    // Draining: both turn 503 like /_/health and /_/ready.
    wd.signal("TERM");
    assert!(eventually(Duration::from_secs(5), || wd
        .get("/health/liveness")
        .is_ok_and(|r| r.status == 503)));
}
