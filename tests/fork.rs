//! streaming and serializing modes, against the real binary and real child processes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn echo_in_both_modes() {
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(&[("mode", mode)], &["cat"]);
        let r = wd.post("/", b"hello fwatchdog").unwrap();
        assert_eq!(r.status, 200, "{mode}");
        assert_eq!(r.text(), "hello fwatchdog", "{mode}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(
            r.header("x-duration-seconds")
                .unwrap()
                .parse::<f64>()
                .unwrap()
                >= 0.0
        );
        assert!(!r.header("x-call-id").unwrap().is_empty());
    }
}

#[test]
fn call_id_is_passed_on_and_echoed() {
    let wd = Watchdog::start(&[], &["sh", "-c", "printf %s \"$Http_X_Call_Id\""]);
    let r = wd
        .request("GET", "/", &[("X-Call-Id", "call-123")], b"")
        .unwrap();
    assert_eq!(r.text(), "call-123");
    assert_eq!(r.header("x-call-id"), Some("call-123"));
    let r = wd.get("/").unwrap();
    let made = r.header("x-call-id").unwrap().to_string();
    assert_eq!(r.text(), made, "a made call id reaches the function too");
}

#[test]
fn cgi_environment() {
    let wd = Watchdog::start(&[("mode", "serializing")], &["env"]);
    let r = wd
        .request(
            "PUT",
            "/fn/path?q=1&r=two",
            &[("X-Custom-Thing", "abc"), ("Content-Type", "text/plain")],
            b"xyz",
        )
        .unwrap();
    let env = r.text();
    for want in [
        "Http_Method=PUT",
        "Http_Path=/fn/path",
        "Http_Query=q=1&r=two",
        &format!("Http_Host=127.0.0.1:{}", wd.port),
        "Http_X_Custom_Thing=abc",
        "Http_Content_Type=text/plain",
        "Http_Content_Length=3",
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in:\n{env}");
    }
    // The watchdog's own environment is inherited.
    assert!(env.lines().any(|l| l.starts_with("PATH=")));

    let wd = Watchdog::start(
        &[("mode", "serializing"), ("cgi_headers", "false")],
        &["env"],
    );
    let r = wd
        .request("GET", "/x", &[("X-Custom-Thing", "abc")], b"")
        .unwrap();
    assert!(
        !r.text().contains("Http_"),
        "cgi_headers=false:\n{}",
        r.text()
    );
}

#[test]
fn fprocess_is_split_like_a_shell() {
    let wd = Watchdog::start(
        &[(
            "fprocess",
            r#"sh -c 'printf "%s|" "$@"' x "a b" c\ d 'e "f"'"#,
        )],
        &[],
    );
    let r = wd.get("/").unwrap();
    assert_eq!(r.text(), r#"a b|c d|e "f"|"#);
}

#[test]
fn cgi_response_sets_status_and_headers() {
    let script =
        r#"printf 'Status: 201 Created\r\nContent-Type: text/x-fn\r\nX-Fn: yes\r\n\r\nmade it'"#;
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(
            &[("mode", mode), ("cgi_response", "true")],
            &["sh", "-c", script],
        );
        let r = wd.get("/").unwrap();
        assert_eq!(r.status, 201, "{mode}");
        assert_eq!(r.header("content-type"), Some("text/x-fn"));
        assert_eq!(r.header("x-fn"), Some("yes"));
        assert_eq!(r.text(), "made it");
    }
}

#[test]
fn serializing_exit_code_gives_500() {
    let wd = Watchdog::start(
        &[("mode", "serializing")],
        &["sh", "-c", "echo partial; echo oops >&2; exit 3"],
    );
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "partial\n");
    assert!(
        eventually(Duration::from_secs(2), || wd.log().contains("stderr: oops")),
        "stderr goes to the log:\n{}",
        wd.log()
    );
    let wd = Watchdog::start(
        &[("mode", "serializing"), ("combine_output", "true")],
        &["sh", "-c", "echo out; echo err >&2"],
    );
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "out\nerr\n");
}

#[test]
fn timeout_gives_504_promptly_in_both_modes() {
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(&[("mode", mode), ("exec_timeout", "1")], &["sleep", "5"]);
        let t = Instant::now();
        let r = wd.get("/").unwrap();
        let took = t.elapsed();
        assert_eq!(r.status, 504, "{mode}");
        assert_eq!(r.header("x-openfaas-internal"), Some("fwatchdog"));
        assert!(took < Duration::from_secs(2), "{mode}: 504 after {took:?}");
    }
}

#[test]
fn x_timeout_shortens_but_never_lengthens() {
    let wd = Watchdog::start(&[("exec_timeout", "3")], &["sleep", "10"]);
    let t = Instant::now();
    let r = wd
        .request("GET", "/", &[("X-Timeout", "500ms")], b"")
        .unwrap();
    assert_eq!(r.status, 504);
    // Well before exec_timeout (3 s), however busy the machine.
    assert!(
        t.elapsed() < Duration::from_millis(2900),
        "{:?}",
        t.elapsed()
    );
    // 60 s does not lengthen it: the 504 (not the sleep's 200 at 10 s) shows that.
    let r = wd
        .request("GET", "/", &[("X-Timeout", "60s")], b"")
        .unwrap();
    assert_eq!(r.status, 504);
    let r = wd
        .request("GET", "/", &[("X-Timeout", "soon")], b"")
        .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn grandchild_holding_stdout_cannot_stretch_the_request() {
    // A quiet grandchild holding stdout: the answer ends shortly after the function exits,
    // and the grandchild goes with the request.
    let mark = marker("holder");
    let script = format!("sh -c 'sleep 20; : {mark}' & echo started");
    let wd = Watchdog::start(
        &[("mode", "serializing"), ("exec_timeout", "10")],
        &["sh", "-c", &script],
    );
    let t = Instant::now();
    let r = wd.get("/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "started\n"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        eventually(Duration::from_secs(4), || pids_with_marker(&mark)
            .is_empty()),
        "grandchild survived: {:?}",
        pids_with_marker(&mark)
    );
    // One that keeps writing keeps the response open, up to exec_timeout and no further.
    let mark = marker("writer");
    // A writer that forks nothing per line (`sleep` in a shell loop could, on a loaded
    // machine, take longer than the exit grace to start and look like a writer that
    // stopped); the parent exits once it has started.
    let up = std::env::temp_dir().join(format!("{mark}.up"));
    let script = format!(
        "python3 -c 'import sys, time\nopen(sys.argv[2], \"w\").close()\nwhile True: print(sys.argv[1], flush=True); time.sleep(0.02)' {mark} {up} & \
         while [ ! -e {up} ]; do sleep 0.01; done; echo started",
        up = up.display()
    );
    let wd = Watchdog::start(
        &[("mode", "serializing"), ("exec_timeout", "1")],
        &["sh", "-c", &script],
    );
    let t = Instant::now();
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        eventually(Duration::from_secs(4), || pids_with_marker(&mark)
            .is_empty()),
        "grandchild survived: {:?}",
        pids_with_marker(&mark)
    );
    let _ = std::fs::remove_file(&up);
}

/// A function whose whole group is findable by a marker: two inner shells keep it in their
/// command lines while they sleep.
fn marked_sleeper(mark: &str) -> String {
    format!("sh -c 'sleep 30; : {mark}' & sh -c 'sleep 30; : {mark}'")
}

#[test]
fn nothing_of_the_group_survives_a_timeout() {
    for mode in ["streaming", "serializing"] {
        let mark = marker("timeout");
        let wd = Watchdog::start(
            &[("mode", mode), ("exec_timeout", "1")],
            &["sh", "-c", &marked_sleeper(&mark)],
        );
        let r = wd.get("/").unwrap();
        assert_eq!(r.status, 504);
        assert!(
            eventually(Duration::from_secs(4), || pids_with_marker(&mark)
                .is_empty()),
            "{mode}: survivors {:?}",
            pids_with_marker(&mark)
        );
    }
}

#[test]
fn nothing_of_the_group_survives_a_client_disconnect() {
    for mode in ["streaming", "serializing"] {
        let mark = marker("disconnect");
        let wd = Watchdog::start(
            &[("mode", mode), ("exec_timeout", "0")],
            &["sh", "-c", &marked_sleeper(&mark)],
        );
        let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(
            eventually(Duration::from_secs(3), || pids_with_marker(&mark).len()
                >= 2),
            "function did not start"
        );
        drop(s);
        assert!(
            eventually(Duration::from_secs(5), || pids_with_marker(&mark)
                .is_empty()),
            "{mode}: survivors after disconnect {:?}",
            pids_with_marker(&mark)
        );
    }
}

#[test]
fn streaming_sends_the_first_line_at_once() {
    let wd = Watchdog::start(&[], &["sh", "-c", "echo first; sleep 2; echo second"]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    let t = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(700),
        "first line after {first:?}"
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    seen.extend_from_slice(&rest);
    assert!(t.elapsed() >= Duration::from_secs(2));
    let r = parse_response(&seen).unwrap();
    assert_eq!(r.text(), "first\nsecond\n");
    assert!(!r.truncated);
}

#[test]
fn streaming_timeout_after_output_aborts_the_response() {
    let wd = Watchdog::start(
        &[("exec_timeout", "1")],
        &["sh", "-c", "echo partial; sleep 5; echo never"],
    );
    let t = Instant::now();
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 200, "headers went out with the first line");
    assert_eq!(r.text(), "partial\n");
    assert!(r.truncated, "the body must end without its final chunk");
    assert!(
        t.elapsed() < Duration::from_millis(4500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn streaming_200_mb_keeps_memory_flat() {
    let wd = Watchdog::start(&[("exec_timeout", "0"), ("read_timeout", "60s")], &["cat"]);
    let total: usize = 200 * 1024 * 1024;
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {total}\r\n\r\n"
        );
        w.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            w.write_all(&chunk).unwrap();
        }
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.join().unwrap();
    assert!(
        got > total,
        "received {got} bytes (headers + chunked body of {total})"
    );
    let hwm_kb = wd.peak_rss_kb();
    println!("peak RSS streaming 200 MB: {hwm_kb} kB");
    assert!(hwm_kb < 40 * 1024, "peak RSS {hwm_kb} kB");
}

#[test]
fn max_inflight_gives_429() {
    let wd = Watchdog::start(&[("max_inflight", "1")], &["sleep", "2"]);
    let port = wd.port;
    let first = std::thread::spawn(move || request(port, "GET", "/", &[], b"").unwrap().status);
    std::thread::sleep(Duration::from_millis(300));
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-openfaas-internal"), Some("fwatchdog"));
    assert!(r.text().contains("Max concurrent requests: 1"));
    assert_eq!(wd.get("/_/ready").unwrap().status, 429);
    assert_eq!(wd.get("/_/health").unwrap().status, 200);
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(wd.get("/_/ready").unwrap().status, 200);
}

#[test]
fn slowloris_is_cut_off_without_delaying_others() {
    let wd = Watchdog::start(&[("read_timeout", "2s")], &["cat"]);
    let mut slow = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    let t = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_at = None;
    for b in head.iter() {
        if slow.write_all(&[*b]).is_err() {
            cut_at = Some(t.elapsed());
            break;
        }
        // Meanwhile, others are served.
        assert_eq!(wd.post("/", b"fast").unwrap().text(), "fast");
        std::thread::sleep(Duration::from_millis(500));
        if t.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    // The watchdog closed the slow connection around read_timeout.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let closed = cut_at.unwrap_or(t.elapsed());
    // Cut around read_timeout (2 s); without the cut it would be held to the end (12 s+).
    assert!(
        closed < Duration::from_secs(10),
        "slow client held on for {closed:?}"
    );
}

#[test]
fn long_stderr_lines_are_split_never_dropped() {
    let wd = Watchdog::start(
        &[("mode", "serializing"), ("log_buffer_size", "1000")],
        &[
            "sh",
            "-c",
            "head -c 2500 /dev/zero | tr '\\0' a >&2; echo >&2; echo short-line-after >&2",
        ],
    );
    assert_eq!(wd.get("/").unwrap().status, 200);
    assert!(eventually(Duration::from_secs(2), || wd
        .log()
        .contains("stderr: short-line-after")));
    let log = wd.log();
    let pieces: Vec<&str> = log.lines().filter(|l| l.contains("stderr: a")).collect();
    assert_eq!(pieces.len(), 3, "2500 bytes at 1000 per line:\n{log}");
    let total: usize = pieces
        .iter()
        .map(|l| l.split("stderr: ").nth(1).unwrap().len())
        .sum();
    assert_eq!(total, 2500);
}

#[test]
fn h2c_prior_knowledge_is_served() {
    let wd = Watchdog::start(&[], &["cat"]);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-d",
            "over h2",
            "-w",
            "|%{http_version}",
        ])
        .arg(format!("http://127.0.0.1:{}/", wd.port))
        .output()
        .expect("curl is needed for the h2c test");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over h2|2");
}

#[test]
fn missing_command_is_a_502_not_a_crash() {
    let wd = Watchdog::start(&[], &["/nonexistent/fn"]);
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("/nonexistent/fn"), "{}", r.text());
    assert_eq!(wd.get("/_/health").unwrap().status, 200);
}

/// The program is looked up on PATH once at start, but the function still sees the name it
/// was given as its argv[0], as exec would have passed it.
#[test]
fn a_program_found_on_path_keeps_its_bare_name() {
    let wd = Watchdog::start(&[], &["cat", "/proc/self/cmdline"]);
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "cat\0/proc/self/cmdline\0");
    let wd = Watchdog::start(&[], &["no-such-function-anywhere"]);
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("no-such-function-anywhere"),
        "{}",
        r.text()
    );
}

#[test]
fn oversized_headers_get_431() {
    let wd = Watchdog::start(&[], &["cat"]);
    let big = "a".repeat(70 * 1024);
    let r = wd.request("GET", "/", &[("X-Big", &big)], b"").unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.header("x-openfaas-internal"), Some("fwatchdog"));
    assert!(r.text().contains("headers larger than"), "{}", r.text());
    let huge = "a".repeat(200 * 1024);
    let r = wd.request("GET", "/", &[("X-Huge", &huge)], b"").unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(wd.get("/_/health").unwrap().status, 200);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_at_write_timeout() {
    let mark = marker("reader");
    // Endless output; the client never reads it.
    let script = format!("yes {mark}");
    let wd = Watchdog::start(
        &[("write_timeout", "1s"), ("exec_timeout", "0")],
        &["sh", "-c", &script],
    );
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(eventually(Duration::from_secs(3), || !pids_with_marker(
        &mark
    )
    .is_empty()));
    // Socket buffers fill, the write stalls, and after write_timeout the watchdog gives up
    // on the client and stops the function.
    assert!(
        eventually(Duration::from_secs(8), || pids_with_marker(&mark)
            .is_empty()),
        "function still running for a client that stopped reading"
    );
    drop(s);
}

#[test]
fn max_body_size_gives_413_in_both_modes() {
    for mode in ["streaming", "serializing"] {
        let wd = Watchdog::start(&[("mode", mode), ("max_body_size", "10")], &["cat"]);
        let r = wd.post("/", b"0123456789abcdef").unwrap();
        assert_eq!(r.status, 413, "{mode}");
        assert_eq!(r.header("x-openfaas-internal"), Some("fwatchdog"));
        assert_eq!(
            wd.post("/", b"0123456789").unwrap().text(),
            "0123456789",
            "{mode}"
        );
    }
}

#[test]
fn cgi_headers_of_a_failed_run_are_parsed_too() {
    let cases = [
        (
            "printf 'Status: 404 Not Found\\nX-Why: gone\\n\\nnope'; exit 1",
            404,
            "nope",
        ),
        (
            "printf 'Content-Type: text/plain\\n\\ncrashed'; exit 2",
            500,
            "crashed",
        ),
        (
            "echo not a header block; exit 3",
            500,
            "not a header block\n",
        ),
    ];
    for (script, want, body) in cases {
        let wd = Watchdog::start(
            &[("mode", "serializing"), ("cgi_response", "true")],
            &["sh", "-c", script],
        );
        let r = wd.get("/").unwrap();
        assert_eq!((r.status, r.text().as_str()), (want, body), "{script}");
    }
}

#[test]
fn refused_requests_echo_their_call_id() {
    let wd = Watchdog::start(&[], &["cat"]);
    let r = wd
        .request(
            "GET",
            "/",
            &[("X-Call-Id", "mine-1"), ("X-Timeout", "soon")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-call-id"), Some("mine-1"));
}
