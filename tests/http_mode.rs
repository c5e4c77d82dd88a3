//! http mode: the watchdog in front of a real upstream process (tests/upstream.py).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::busy_poll::*;
use common::*;

const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream.py");

fn start(extra_env: &[(&str, &str)], upstream_args: &[&str]) -> (Watchdog, u16) {
    let up_l = listener();
    let up = up_l.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{up}");
    let up_s = "fd:10".to_string();
    let mut env: Vec<(&str, String)> = vec![("mode", "http".into()), ("upstream_url", url)];
    env.extend(extra_env.iter().map(|(k, v)| (*k, v.to_string())));
    let mut cmd = vec!["python3", UPSTREAM, up_s.as_str()];
    cmd.extend_from_slice(upstream_args);
    let wd = Watchdog::with(Opts {
        env,
        cmd,
        upstream: Some(&up_l),
        ..Opts::default()
    });
    (wd, up)
}

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

#[test]
fn round_trip_method_path_query_headers() {
    let (wd, _) = start(&[], &[]);
    let r = wd
        .request(
            "PUT",
            "/echo/a%20b?x=1&y=%2F",
            &[
                ("X-Custom", "v1"),
                ("Connection", "close, X-Drop-Me"),
                ("X-Drop-Me", "secret"),
                ("Keep-Alive", "timeout=1"),
            ],
            b"payload",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.header("x-empty"), Some(""), "empty header values pass");
    assert!(
        r.header("keep-alive").is_none(),
        "hop-by-hop response header stripped"
    );
    let j = json(&r);
    assert_eq!(j["method"], "PUT");
    assert_eq!(j["path"], "/echo/a%20b");
    assert_eq!(j["query"], "x=1&y=%2F");
    assert_eq!(j["body"], "payload");
    let h = &j["headers"];
    assert_eq!(h["x-custom"], "v1");
    assert_eq!(h["host"], format!("127.0.0.1:{}", wd.port), "Host kept");
    assert!(
        h.get("x-drop-me").is_none(),
        "header named in Connection removed: {h}"
    );
    assert!(h.get("keep-alive").is_none(), "hop-by-hop removed: {h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{}", wd.port));
    assert!(r.header("x-duration-seconds").is_some());
}

#[test]
fn content_length_framing_is_preserved() {
    let (wd, _) = start(&[], &[]);
    let r = wd.request("POST", "/echo", &[], b"12345").unwrap();
    let j = json(&r);
    assert_eq!(j["framing"], "content-length");
    assert_eq!(j["headers"]["content-length"], "5");
    assert!(j["headers"].get("transfer-encoding").is_none());

    // A chunked request stays chunked.
    let j = post_chunked_hello(&wd);
    assert_eq!(j["framing"], "chunked");
    assert_eq!(j["body"], "hello");

    // buffer_http turns a chunked request into Content-Length.
    let (wd, _) = start(&[("buffer_http", "true")], &[]);
    let j = post_chunked_hello(&wd);
    assert_eq!(j["framing"], "content-length");
    assert_eq!(j["body"], "hello");
}

/// What /echo saw of a chunked POST of "hello".
fn post_chunked_hello(wd: &Watchdog) -> serde_json::Value {
    let chunked = [("Transfer-Encoding", "chunked")];
    let r = wd
        .request("POST", "/echo", &chunked, b"5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    json(&r)
}

#[test]
fn sse_events_arrive_as_they_are_written() {
    let (wd, _) = start(&[], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    let t = Instant::now();
    s.write_all(
        b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: one") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(500),
        "first event after {first:?}"
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    seen.extend_from_slice(&rest);
    let r = parse_response(&seen).unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.text(), "data: one\n\ndata: two\n\n");
    assert!(t.elapsed() >= Duration::from_secs(2));
}

#[test]
fn readiness_gates_health_and_holds_early_requests() {
    // A unix socket: nothing answers at its path until the upstream binds it, late.
    let sock = scratch_dir("late-up").join("up.sock");
    let unix = format!("unix:{}", sock.display());
    let mut wd = {
        Watchdog::with(Opts {
            env: vec![("mode", "http".into()), ("upstream_url", unix.clone())],
            cmd: vec!["python3", UPSTREAM, &unix, "--delay", "2"],
            wait_healthy: false,
            ..Opts::default()
        })
    };
    let t = Instant::now();
    // Wait until the watchdog itself listens.
    assert!(eventually(Duration::from_secs(5), || wd
        .get("/_/health")
        .is_ok()));
    let h = wd.get("/_/health").unwrap().status;
    assert_eq!(h, 503, "health before the upstream listens");
    assert_eq!(wd.get("/_/ready").unwrap().status, 503);
    assert!(
        !wd.tmpdir.join(".lock").exists(),
        "no lock file before ready"
    );
    // An early request waits for the upstream instead of failing.
    let r = wd.post("/echo", b"early").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() >= Duration::from_millis(1500));
    assert_eq!(json(&r)["body"], "early");
    wd.wait_healthy(Duration::from_secs(2));
    assert!(wd.tmpdir.join(".lock").exists());
}

#[test]
fn ready_path_reports_the_upstream() {
    let (wd, _) = start(&[("ready_path", "/ready")], &[]);
    assert_eq!(wd.get("/_/ready").unwrap().status, 200);
    let (wd, _) = start(&[("ready_path", "/crash-not")], &[]);
    // /crash-not is answered by /echo's handler with 200 too, so the gate opened.
    assert_eq!(wd.get("/_/health").unwrap().status, 200);
}

#[test]
fn slow_upstream_gives_504_and_keeps_running() {
    let (wd, _) = start(&[("exec_timeout", "1")], &[]);
    let t = Instant::now();
    let r = wd.get("/slow").unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-openfaas-internal"), Some("fwatchdog"));
    // /slow answers after 3 s: the 504 came before it.
    assert!(t.elapsed() < Duration::from_millis(2900));
    // The upstream is still there.
    assert_eq!(wd.post("/echo", b"x").unwrap().status, 200);
}

#[test]
fn websocket_passes_through() {
    let (wd, _) = start(&[], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "closed during handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // One masked text frame "hi".
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = b"hi"
        .iter()
        .enumerate()
        .map(|(i, c)| c ^ mask[i % 4])
        .collect();
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    s.write_all(&frame).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..2], &[0x81, 8]);
    assert_eq!(&reply[2..], b"echo: hi");
}

#[test]
fn h2c_clients_are_proxied() {
    let (wd, _) = start(&[], &[]);
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-d", "via h2"])
        .arg(format!("http://127.0.0.1:{}/echo?q=2", wd.port))
        .output()
        .expect("curl");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["body"], "via h2");
    assert_eq!(j["query"], "q=2");
    assert_eq!(j["headers"]["host"], format!("127.0.0.1:{}", wd.port));
}

#[test]
fn upstream_crash_makes_the_watchdog_exit_nonzero() {
    let (mut wd, _) = start(&[], &[]);
    let _ = wd.get("/crash");
    let t = Instant::now();
    let st = wd
        .wait_exit(Duration::from_secs(5))
        .expect("watchdog exits after the function died");
    assert_ne!(st.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        wd.log().contains("exit status 3"),
        "exit status logged:\n{}",
        wd.log()
    );
}

#[test]
fn sigterm_reaches_the_upstream_after_the_drain() {
    let dir = scratch_dir("sigterm");
    let marker = dir.join("got-term");
    let (mut wd, _) = start(&[], &["--sigterm-file", marker.to_str().unwrap()]);
    let port = wd.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/slow", &[], b"").unwrap());
    std::thread::sleep(Duration::from_millis(300));
    wd.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !marker.exists(),
        "the upstream must not get SIGTERM before the drain"
    );
    let r = slow.join().unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slow done"),
        "in-flight request completed"
    );
    let st = wd.wait_exit(Duration::from_secs(8)).expect("exited");
    assert_eq!(st.code(), Some(0), "{}", wd.log());
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "got SIGTERM");
}

#[test]
fn unix_socket_upstream() {
    let dir = scratch_dir("unix");
    let sock = dir.join("fn.sock");
    let where_ = format!("unix:{}", sock.display());
    let wd = Watchdog::with(Opts {
        env: vec![("mode", "http".into()), ("upstream_url", where_.clone())],
        cmd: vec!["python3", UPSTREAM, &where_],
        ..Opts::default()
    });
    let r = wd.post("/echo?via=unix", b"over a socket").unwrap();
    let j = json(&r);
    assert_eq!(j["body"], "over a socket");
    assert_eq!(j["query"], "via=unix");
}

#[test]
fn upstream_output_is_logged_with_a_prefix() {
    let (wd, _) = start(&[], &[]);
    wd.post("/echo", b"x").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || wd
            .log()
            .contains("stdout: upstream listening on")),
        "{}",
        wd.log()
    );
    // The upstream logs the request after answering it.
    assert!(
        eventually(Duration::from_secs(2), || wd
            .log()
            .contains("stderr: upstream: ")),
        "{}",
        wd.log()
    );
}

#[test]
fn large_uploads_stream_to_the_upstream_with_flat_memory() {
    let (wd, _) = start(&[("exec_timeout", "60s"), ("read_timeout", "60s")], &[]);
    let total: usize = 200 * 1024 * 1024;
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    let head = format!(
        "POST /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {total}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..200 {
        s.write_all(&chunk).unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!((r.status, r.text()), (200, total.to_string()));
    let hwm_kb = wd.peak_rss_kb();
    println!("peak RSS proxying a 200 MB upload: {hwm_kb} kB");
    assert!(hwm_kb < 40 * 1024, "peak RSS {hwm_kb} kB");
}

#[test]
fn h2c_upstream_when_configured() {
    // The upstream is fwatchdog itself in static mode, which serves HTTP/2 with prior knowledge.
    let dir = scratch_dir("h2c-up");
    std::fs::write(dir.join("hello.txt"), "over h2c\n").unwrap();
    let up_l = listener();
    let up = up_l.local_addr().unwrap().port();
    let wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "http".into()),
            ("upstream_url", format!("h2c://127.0.0.1:{up}")),
        ],
        // The inner watchdog takes the upstream listener as its own descriptor 3.
        cmd: vec![
            "python3",
            "-c",
            "import os,sys; os.dup2(10, 3); os.close(10); os.environ['LISTEN_FDS'] = '1'; \
             os.execv(sys.argv[1], sys.argv[1:])",
            BIN,
            "--mode",
            "static",
            "--static-path",
            dir.to_str().unwrap(),
            "--metrics-port",
            "0",
        ],
        upstream: Some(&up_l),
        ..Opts::default()
    });
    let r = wd.get("/hello.txt").unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "over h2c\n"),
        "{}",
        wd.log()
    );
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // The same setting against an HTTP/1.1-only upstream fails: the proxy really speaks h2.
    let (wd, up) = start(&[], &[]);
    drop(wd);
    let wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "http".into()),
            ("upstream_url", format!("h2c://127.0.0.1:{up}")),
            ("exec_timeout", "3s".into()),
        ],
        cmd: vec![
            "python3",
            UPSTREAM,
            Box::leak(up.to_string().into_boxed_str()),
        ],
        ..Opts::default()
    });
    let r = wd.get("/echo").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn upstream_url_path_prefix_is_prepended() {
    let up_l = listener();
    let up = up_l.local_addr().unwrap().port();
    let wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "http".into()),
            ("upstream_url", format!("http://127.0.0.1:{up}/api/")),
        ],
        cmd: vec!["python3", UPSTREAM, "fd:10"],
        upstream: Some(&up_l),
        ..Opts::default()
    });
    let j = json(&wd.get("/items?id=7").unwrap());
    assert_eq!(
        (j["path"].as_str(), j["query"].as_str()),
        (Some("/api/items"), Some("id=7"))
    );
}

#[test]
fn upstream_connections_are_pooled_and_stale_ones_replaced() {
    let (wd, _) = start(&[], &[]);
    let peer = |r: &Resp| json(r)["peer_port"].as_u64().expect("peer_port");
    let a = peer(&wd.get("/echo").unwrap());
    let b = peer(&wd.get("/echo").unwrap());
    assert_eq!(
        a, b,
        "the second request reuses the first one's upstream connection"
    );
    // Requests whose response is complete without a body leave the connection reusable.
    let head = wd.request("HEAD", "/echo", &[], b"").unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.header("content-length").is_some());
    assert_eq!(wd.get("/nocontent").unwrap().status, 204);
    assert_eq!(peer(&wd.get("/echo").unwrap()), a);

    // The upstream closes the pooled connection right after answering (as an idle
    // keep-alive timeout does); the next requests still succeed, at once and later.
    for pause in [Duration::ZERO, Duration::from_millis(200)] {
        assert_eq!(wd.get("/drop").unwrap().text(), "dropping");
        std::thread::sleep(pause);
        let r = wd.get("/echo").unwrap();
        assert_eq!(r.status, 200, "after a dropped connection: {}", r.text());
        let r = wd.post("/echo", b"with a body").unwrap();
        assert_eq!(r.status, 200, "after a dropped connection: {}", r.text());
        assert_eq!(json(&r)["body"], "with a body");
    }
}

#[test]
fn every_response_framing_passes_through() {
    let (wd, _) = start(&[], &[]);
    let r = wd.get("/eof").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        b"until the end".repeat(1000),
        "close-delimited body whole"
    );
    let r = wd.get("/trailers").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "abcdefg");
    assert!(!r.truncated, "chunked body ends with its last chunk");
    // The connection behind a trailer section is clean and reused.
    assert_eq!(wd.get("/echo").unwrap().status, 200);
    // Transfer-Encoding wins over a Content-Length beside it, which is not passed on.
    let r = wd.get("/te-and-cl").unwrap();
    assert_eq!(r.text(), "hello");
    assert!(r.header("content-length").is_none(), "{:?}", r.headers);
    let r = wd.get("/garbage").unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("invalid response"), "{}", r.text());
    assert_eq!(wd.get("/echo").unwrap().status, 200, "still serving");
}

#[test]
fn upstream_may_answer_before_reading_the_body() {
    let (wd, _) = start(&[], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    // Like curl, the client reads while it writes; its write fails once the answer is in.
    let writer = std::thread::spawn(move || {
        let len = 64 << 20;
        let head = format!("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        let _ = w.write_all(head.as_bytes());
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.ends_with(b"too big for me") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let r = parse_response(&raw).unwrap();
    drop(s);
    writer.join().unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.text(), "too big for me");
    assert_eq!(wd.get("/echo").unwrap().status, 200, "still serving");
}

#[test]
fn request_and_response_stream_at_the_same_time() {
    // The upstream echoes each chunk as it reads it: a proxy that sent the whole body
    // before reading the answer would deadlock once the socket buffers fill.
    let (wd, _) = start(&[], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    let chunks = 256; // 16 MiB
    let writer = std::thread::spawn(move || {
        w.write_all(b"POST /stream-echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for _ in 0..chunks {
            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .unwrap();
            w.write_all(&chunk).unwrap();
            w.write_all(b"\r\n").unwrap();
        }
        w.write_all(b"0\r\n\r\n").unwrap();
    });
    let r = read_response(&mut s).unwrap();
    writer.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.truncated);
    assert_eq!(r.body.len(), chunks * 64 * 1024);
    assert!(r.body.iter().all(|&b| b == b'z'));
}

#[test]
fn busy_poll_serves_keeps_timers_and_sleeps_when_idle() {
    let (wd, _) = start(&[("busy_poll", "1ms")], &[]);
    assert!(
        !wd.log().contains("polling off"),
        "busy_poll found the runtime: {}",
        wd.log()
    );
    for _ in 0..50 {
        assert_eq!(wd.post("/echo", b"x").unwrap().status, 200);
    }
    // Timers still fire on time while the thread polls.
    let t = Instant::now();
    let r = wd
        .request("GET", "/slow", &[("X-Timeout", "300ms")], b"")
        .unwrap();
    assert_eq!(r.status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(2900),
        "{:?}",
        t.elapsed()
    );
    assert_sleeps_when_idle(&wd);
}

#[test]
fn busy_poll_auto_needs_two_cpus_and_costs_nothing_idle() {
    if !two_cpus("busy_poll_auto_needs_two_cpus_and_costs_nothing_idle") {
        return;
    }
    // Default: auto, which polls on this machine.
    let (wd, _) = start(&[], &[]);
    assert_eq!(busy_poll_chosen(&wd), "busy_poll=\"100us\"", "{}", wd.log());
    for _ in 0..200 {
        assert_eq!(wd.post("/echo", b"x").unwrap().status, 200);
    }
    assert_sleeps_when_idle(&wd);
    // Pinned to one CPU (as a quota under two would), auto stays off.
    let up_l = listener();
    let up = up_l.local_addr().unwrap().port();
    let pinned = Watchdog::with(Opts {
        env: vec![
            ("mode", "http".into()),
            ("upstream_url", format!("http://127.0.0.1:{up}")),
        ],
        cmd: vec!["python3", UPSTREAM, "fd:10"],
        launcher: vec!["taskset", "-c", "0"],
        upstream: Some(&up_l),
        ..Opts::default()
    });
    assert_eq!(busy_poll_chosen(&pinned), "busy_poll=\"0s\"");
    assert_eq!(pinned.post("/echo", b"x").unwrap().status, 200);
    // So do the fork modes, and an explicit 0.
    let fork = Watchdog::start(&[], &["cat"]);
    assert_eq!(busy_poll_chosen(&fork), "busy_poll=\"0s\"");
    let (off, _) = start(&[("busy_poll", "0")], &[]);
    assert_eq!(busy_poll_chosen(&off), "busy_poll=\"0s\"");
}

// How far busy_poll cuts the proxy's sleeps per request is measured by bench/busy_poll.sh;
// a test asserting on context-switch counts failed on busy machines.

#[test]
fn busy_poll_is_bounded() {
    for (value, why) in [("2ms", "at most 1ms"), ("soon", "not a duration")] {
        let (code, err) = run_to_exit(&[("busy_poll", value)], &["--", "true"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("busy_poll") && err.contains(why), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn expect_100_continue_round_trip() {
    // curl sends large uploads this way: head first, body after the interim 100.
    let (wd, _) = start(&[], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    s.write_all(b"hello").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = json(&r);
    assert_eq!(j["body"], "hello");
    assert_eq!(j["framing"], "content-length");
}

#[test]
fn a_body_slower_than_read_timeout_gets_408() {
    let (wd, _) = start(&[("read_timeout", "1s")], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf.")
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(wd.get("/echo").unwrap().status, 200, "still serving");
}

#[test]
fn a_stream_is_cut_when_idle_for_exec_timeout_not_while_it_flows() {
    // /sse sends one event, then the next 2 s later. With exec_timeout=3s both arrive (the
    // gap is shorter than the idle limit); with 1s the stream is aborted after the first.
    let (wd, _) = start(&[("exec_timeout", "3s")], &[]);
    let r = wd.get("/sse").unwrap();
    assert!(!r.truncated && r.text().contains("two"), "{}", r.text());

    let (wd, _) = start(&[("exec_timeout", "1s")], &[]);
    let t = Instant::now();
    let r = wd.get("/sse").unwrap();
    assert_eq!(r.status, 200, "the response had started");
    assert!(r.text().contains("one"), "{}", r.text());
    assert!(r.truncated, "aborted, without the last chunk: {}", r.text());
    // The second event (2 s in) never came: the cut was on time; no clock needed.
    assert!(!r.text().contains("two"), "{}", r.text());
    let _ = t;
}

#[test]
fn the_upstream_does_not_outlive_a_killed_watchdog() {
    // SIGKILL leaves the watchdog no chance to stop its function; the kernel does it.
    let tag = marker("orphan");
    let (mut wd, _) = start(&[], &[tag.as_str()]);
    assert_eq!(wd.get("/echo").unwrap().status, 200);
    let upstream = pids_with_marker(&tag);
    assert_eq!(upstream.len(), 1, "{upstream:?}");
    wd.child.kill().unwrap();
    let _ = wd.child.wait();
    assert!(
        eventually(Duration::from_secs(3), || pids_with_marker(&tag).is_empty()),
        "upstream still running: {:?}",
        pids_with_marker(&tag)
    );
}
