//! Hostile input against the real binary: values that do not fit, connections that hold on,
//! spoofed hosts, stray signals, planted files. Each test failed before its fix.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{eventually, read_response, run_to_exit, scratch_dir, Opts, Watchdog};

/// Reads until the peer closes (Ok with what arrived) or `within` passes (Err).
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
        if start.elapsed() > within {
            return Err(format!(
                "still open after {within:?} ({} bytes read)",
                got.len()
            ));
        }
    }
}

fn connect(wd: &Watchdog) -> TcpStream {
    TcpStream::connect(("127.0.0.1", wd.port)).unwrap()
}

#[test]
fn durations_that_do_not_fit_are_400_and_the_watchdog_lives() {
    for exec_timeout in ["30s", "0"] {
        let wd = Watchdog::start(&[("exec_timeout", exec_timeout)], &["cat"]);
        for bad in [
            "1e20",
            "1e400",
            "18446744073709551615",
            "99999999999999999999s",
            "1000000000d",
            "366days",
            "-1",
            "NaN",
            "inf",
            &"9".repeat(5000),
        ] {
            let r = wd
                .request("POST", "/", &[("X-Timeout", bad)], b"x")
                .unwrap();
            assert_eq!(r.status, 400, "X-Timeout {bad:?}: {}", r.text());
            assert_eq!(r.text().lines().count(), 1, "{}", r.text());
        }
        let r = wd
            .request(
                "POST",
                "/",
                &[("X-Timeout", "1s"), ("X-Timeout", "1e20")],
                b"x",
            )
            .unwrap();
        assert_eq!(r.status, 400, "two X-Timeout headers: {}", r.text());
        let r = wd
            .request("POST", "/", &[("X-Timeout", "5s")], b"ok")
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "still serving");
    }
}

#[test]
fn durations_in_settings_that_do_not_fit_exit_2_naming_the_variable() {
    for (var, value) in [
        ("exec_timeout", "9.3e18"),
        ("exec_timeout", "1e20"),
        ("read_timeout", "99999999999999999999"),
        ("write_timeout", "1000000000d"),
        ("healthcheck_interval", "1e300"),
        ("idle_timeout", "400days"),
        ("read_header_timeout", "1e19"),
        ("log_buffer_size", "1000000000000"),
        ("max_connections", "0"),
        ("max_header_bytes", "10"),
        ("max_header_bytes", "99999999999999999999999"),
    ] {
        let (code, err) = run_to_exit(&[("fprocess", "cat"), (var, value)], &[]);
        assert_eq!(code, 2, "{var}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(var), "{var} not named: {err}");
    }
}

#[test]
fn a_silent_socket_and_half_a_preface_are_closed_after_read_header_timeout() {
    let wd = Watchdog::start(&[("read_header_timeout", "1s")], &["cat"]);
    let mut silent = connect(&wd);
    let mut half_h2 = connect(&wd);
    half_h2.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut half_h1 = connect(&wd);
    half_h1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    for (what, s) in [
        ("silent", &mut silent),
        ("half preface", &mut half_h2),
        ("half head", &mut half_h1),
    ] {
        read_until_closed(s, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert_eq!(wd.post("/", b"still").unwrap().text(), "still");
}

#[test]
fn idle_keep_alive_connections_are_closed_and_busy_ones_are_not() {
    let wd = Watchdog::start(
        &[("idle_timeout", "1s"), ("read_header_timeout", "1s")],
        &["sh", "-c", "cat; sleep 3; echo done"],
    );
    // A response that takes three idle timeouts is in flight all along: never cut.
    let mut busy = connect(&wd);
    busy.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = read_response(&mut busy).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hidone\n"));
    // Then it is idle, and closed.
    read_until_closed(&mut busy, Duration::from_secs(15)).unwrap();
}

// --- a few HTTP/2 frames by hand, so that the client can misbehave as it likes ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Preface, SETTINGS (with `settings` pairs) and a SETTINGS ACK.
fn h2_start(s: &mut TcpStream, settings: &[(u16, u32)]) {
    let mut payload = Vec::new();
    for (id, v) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&v.to_be_bytes());
    }
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(4, 0, 0, &payload)).unwrap();
    s.write_all(&frame(4, 1, 0, &[])).unwrap();
}

/// A GET for `/` on stream 1 (HPACK: indexed :method GET, :scheme http, :path /, and a
/// literal :authority).
fn h2_get(s: &mut TcpStream) {
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
    block.extend_from_slice(b"localhost");
    s.write_all(&frame(1, 0x5, 1, &block)).unwrap();
}

/// Frame types in `bytes` (a stream of whole or partial frames).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = (bytes[0] as usize) << 16 | (bytes[1] as usize) << 8 | bytes[2] as usize;
        out.push(bytes[3]);
        bytes = bytes.get(9 + len..).unwrap_or(&[]);
    }
    out
}

#[test]
fn an_idle_h2c_connection_gets_goaway_and_is_closed() {
    let wd = Watchdog::start(&[("idle_timeout", "1s")], &["cat"]);
    let mut s = connect(&wd);
    h2_start(&mut s, &[]);
    h2_get(&mut s);
    let got = read_until_closed(&mut s, Duration::from_secs(15)).unwrap();
    let types = frame_types(&got);
    assert!(types.contains(&1), "a HEADERS answer first: {types:?}");
    assert!(types.contains(&7), "GOAWAY before the close: {types:?}");
}

#[test]
fn an_h2_client_with_a_zero_window_is_cut_off_after_write_timeout() {
    let wd = Watchdog::start(
        &[("write_timeout", "1s"), ("exec_timeout", "60s")],
        &["head", "-c", "1000000", "/dev/zero"],
    );
    let mut s = connect(&wd);
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may send headers, but no data.
    h2_start(&mut s, &[(4, 0)]);
    h2_get(&mut s);
    let got = read_until_closed(&mut s, Duration::from_secs(20)).unwrap();
    assert!(frame_types(&got).contains(&1), "the response head came");
    assert!(
        eventually(Duration::from_secs(5), || wd
            .log()
            .contains("write_timeout")),
        "{}",
        wd.log()
    );
    assert_eq!(wd.post("/", b"").unwrap().status, 200);
}

#[test]
fn connections_beyond_max_connections_are_closed_at_once() {
    let wd = Watchdog::start(
        &[("max_connections", "3"), ("read_header_timeout", "30s")],
        &["cat"],
    );
    // Eight connections, silent, so none of them ends on its own for 30 s: at most three
    // may stay open (which three depends on when the harness's health checks ended).
    let mut conns: Vec<TcpStream> = (0..8).map(|_| connect(&wd)).collect();
    for c in &conns {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    let mut closed = vec![false; conns.len()];
    let start = Instant::now();
    while closed.iter().filter(|c| **c).count() < 5 && start.elapsed() < Duration::from_secs(20) {
        for (c, done) in conns.iter_mut().zip(closed.iter_mut()) {
            let mut b = [0u8; 1];
            if *done {
                continue;
            }
            match c.read(&mut b) {
                Ok(0) => *done = true,
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    *done = true
                }
                _ => {}
            }
        }
    }
    let n = closed.iter().filter(|c| **c).count();
    assert!(n >= 5, "only {n} of 8 closed; log:\n{}", wd.log());
    let held = conns;
    assert!(
        eventually(Duration::from_secs(5), || wd
            .log()
            .contains("connection cap reached")),
        "{}",
        wd.log()
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(10), || wd
            .post("/", b"back")
            .is_ok_and(|r| r.text() == "back")),
        "served again once connections closed"
    );
}

#[test]
fn a_thousand_idle_sockets_do_not_lock_clients_out_for_good() {
    // 64 descriptors in all: without limits the idle sockets would hold every one of them.
    let mut wd = Watchdog::with(Opts {
        env: vec![("read_header_timeout", "1s".into())],
        cmd: vec!["cat"],
        launcher: vec!["prlimit", "--nofile=64:64", "--"],
        ..Opts::default()
    });
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", wd.port)).ok())
        .collect();
    assert!(idle.len() > 100, "the backlog took some: {}", idle.len());
    // The watchdog closes what it accepted after read_header_timeout, and then serves.
    assert!(
        eventually(Duration::from_secs(30), || {
            let mut s = match TcpStream::connect(("127.0.0.1", wd.port)) {
                Ok(s) => s,
                Err(_) => return false,
            };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let ok = s
                .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .is_ok();
            ok && read_response(&mut s).is_ok_and(|r| r.status == 200 && r.text() == "ok")
        }),
        "no request served while idle sockets are held; log:\n{}",
        wd.log()
    );
    assert!(wd.child.try_wait().unwrap().is_none(), "alive");
    drop(idle);
    wd.wait_healthy(Duration::from_secs(10));
}

#[test]
fn a_429_carries_the_call_id_and_duration() {
    let wd = Watchdog::start(
        &[("max_inflight", "1"), ("mode", "serializing")],
        &["sleep", "2"],
    );
    let port = wd.port;
    let first = std::thread::spawn(move || common::request(port, "POST", "/", &[], b"").unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let r = wd
        .request("POST", "/", &[("X-Call-Id", "mine-123")], b"")
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-call-id"), Some("mine-123"));
    assert!(r.header("x-duration-seconds").is_some(), "{:?}", r.headers);
    assert_eq!(first.join().unwrap().status, 200);
}

#[test]
fn duplicate_or_invalid_host_is_400_and_never_reaches_the_function() {
    let dir = scratch_dir("host");
    let ran = dir.join("ran");
    let script = format!("echo x >> {}; cat", ran.display());
    let wd = Watchdog::start(&[], &["sh", "-c", &script]);
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: user@evil\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a/b\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ] {
        let mut s = connect(&wd);
        s.write_all(head.as_bytes()).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 400, "{head:?}: {}", r.text());
    }
    assert!(!ran.exists(), "the function ran for a bad Host");
    let mut s = connect(&wd);
    s.write_all(b"POST / HTTP/1.1\r\nHost: good.example:8080\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().text(), "ok");
    // HTTP/1.0 needs no Host.
    let mut s = connect(&wd);
    s.write_all(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().text(), "ok");
}

#[test]
fn a_function_cannot_pass_for_the_watchdog() {
    let wd = Watchdog::start(
        &[("cgi_response", "true"), ("mode", "serializing")],
        &[
            "printf",
            "X-OpenFaaS-Internal: fwatchdog\\nX-Other: 1\\n\\nhi",
        ],
    );
    let r = wd.post("/", b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    assert_eq!(r.header("x-other"), Some("1"));
    assert_eq!(r.header("x-openfaas-internal"), None, "{:?}", r.headers);
}

#[test]
fn stray_signals_do_not_stop_the_watchdog() {
    let wd = Watchdog::start(&[], &["cat"]);
    for sig in ["HUP", "USR1", "USR2", "QUIT"] {
        wd.signal(sig);
        std::thread::sleep(Duration::from_millis(100));
        let r = wd.post("/", sig.as_bytes());
        assert_eq!(
            r.map(|r| r.text()).ok().as_deref(),
            Some(sig),
            "after SIG{sig}; log:\n{}",
            wd.log()
        );
    }
    assert!(wd.log().contains("ignored"), "{}", wd.log());
}

#[test]
fn stray_signals_reach_the_http_mode_function_and_the_watchdog_stays() {
    let dir = scratch_dir("signals-http");
    let sock = dir.join("up.sock");
    let got = dir.join("signals");
    let up = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream.py");
    let unix = format!("unix:{}", sock.display());
    let got_s = got.to_string_lossy().into_owned();
    let wd = Watchdog::with(Opts {
        env: vec![("mode", "http".into()), ("upstream_url", unix.clone())],
        cmd: vec!["python3", up, &unix, "--signal-file", &got_s],
        ..Opts::default()
    });
    for sig in ["HUP", "USR1", "USR2", "QUIT"] {
        wd.signal(sig);
        let want = format!("SIG{sig}");
        assert!(
            eventually(Duration::from_secs(5), || std::fs::read_to_string(&got)
                .is_ok_and(|s| s.contains(&want))),
            "{want} not forwarded; log:\n{}",
            wd.log()
        );
        assert_eq!(wd.get("/ready").unwrap().status, 200, "after {want}");
    }
}

#[test]
fn a_planted_symlink_or_fifo_at_the_lock_path_is_refused() {
    let tmp = scratch_dir("lock-plant");
    let target = tmp.join("victim");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, tmp.join(".lock")).unwrap();
    let tmp_s = tmp.to_string_lossy().into_owned();
    let (code, err) = run_to_exit(&[("fprocess", "cat"), ("TMPDIR", &tmp_s)], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TMPDIR") && err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");

    std::fs::remove_file(tmp.join(".lock")).unwrap();
    nix::unistd::mkfifo(&tmp.join(".lock"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A FIFO with no reader would block an open for writing forever.
    for mode in [
        vec![("fprocess", "cat")],
        vec![
            ("mode", "http"),
            ("fprocess", "sleep 30"),
            ("upstream_url", "unix:/nonexistent/up.sock"),
        ],
    ] {
        let mut env = mode.clone();
        env.push(("TMPDIR", &tmp_s));
        let started = Instant::now();
        let (code, err) = run_to_exit(&env, &[]);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert!(err.contains("FIFO"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn a_stale_lock_file_is_replaced_and_a_missing_tmpdir_is_made_in_http_mode() {
    let tmp = scratch_dir("lock-stale");
    std::fs::write(tmp.join(".lock"), b"old").unwrap();
    let wd = Watchdog::with(Opts {
        env: vec![("TMPDIR", tmp.to_string_lossy().into_owned())],
        cmd: vec!["cat"],
        ..Opts::default()
    });
    assert_eq!(std::fs::read(tmp.join(".lock")).unwrap(), b"");
    drop(wd);

    let missing = scratch_dir("lock-missing").join("not/yet");
    let sock = scratch_dir("lock-missing-sock").join("up.sock");
    let up_script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream.py");
    let unix = format!("unix:{}", sock.display());
    let wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "http".into()),
            ("TMPDIR", missing.to_string_lossy().into_owned()),
            ("upstream_url", unix.clone()),
        ],
        cmd: vec!["python3", up_script, &unix],
        ..Opts::default()
    });
    assert_eq!(wd.get("/ready").unwrap().status, 200);
    assert!(missing.join(".lock").exists());
}

#[test]
fn unverified_bodies_are_bounded_all_together() {
    let mount = scratch_dir("hmac-budget");
    std::fs::write(mount.join("hook"), b"s3cret").unwrap();
    let wd = Watchdog::start(
        &[
            ("secret_mount_path", &mount.to_string_lossy()),
            ("hmac_secret", "hook"),
            ("hmac_buffer_limit", "1000000"),
        ],
        &["cat"],
    );
    let sig = format!("sha256={}", "0".repeat(64));
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: 600000\r\n\r\n"
    );
    // The first holds 600 kB of its budget while it uploads slowly.
    let mut first = connect(&wd);
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&[b'a'; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A second would take the total past 1 MB: refused at once, before its body is read.
    let mut second = connect(&wd);
    second.write_all(head.as_bytes()).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = read_response(&mut second).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    // The first, once complete, is checked and refused on its signature.
    first.write_all(&vec![b'a'; 599_000]).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_response(&mut first).unwrap().status, 401);
    // And the budget came back.
    let r = wd
        .request(
            "POST",
            "/",
            &[("X-Hub-Signature-256", &sig)],
            &[b'b'; 600_000],
        )
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn the_request_header_limit_is_a_setting() {
    let big = "x".repeat(3000);
    let wd = Watchdog::start(&[], &["cat"]);
    let r = wd.request("POST", "/", &[("X-Big", &big)], b"ok").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let wd = Watchdog::start(&[("max_header_bytes", "2048")], &["cat"]);
    let r = wd.request("POST", "/", &[("X-Big", &big)], b"ok").unwrap();
    assert_eq!(r.status, 431, "{}", r.text());
    assert!(r.text().contains("2048"), "{}", r.text());
}
