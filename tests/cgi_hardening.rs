//! What a function's CGI output and a client's headers can do to the fork modes (streaming,
//! serializing, file), against the real binary: bounded header blocks, responses framed by
//! the watchdog alone, status codes a client can use, an environment a request cannot
//! spoof, descriptor exhaustion as a retryable 503, and a daemon that keeps stdout open.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const MODES: [&str; 3] = ["streaming", "serializing", "file"];

/// A watchdog in `mode` running `sh -c script`, with CGI response parsing on.
fn cgi_wd(mode: &str, script: &str) -> Watchdog {
    Watchdog::start(
        &[("mode", mode), ("cgi_response", "true")],
        &["sh", "-c", script],
    )
}

/// One kept-alive HTTP/1.1 connection: responses are read by their own framing, so several
/// requests can share it.
struct Conn {
    r: BufReader<TcpStream>,
    port: u16,
}

impl Conn {
    fn open(port: u16, read_timeout: Duration) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(read_timeout))?;
        Ok(Conn {
            r: BufReader::new(s),
            port,
        })
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<()> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
            self.port
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.r.get_mut().write_all(head.as_bytes())
    }

    /// Reads exactly one response (Content-Length, chunked, or up to close).
    fn read_one(&mut self) -> std::io::Result<Resp> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed before a response"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut headers = HashMap::new();
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mut body = Vec::new();
        let mut truncated = false;
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                line.clear();
                if self.r.read_line(&mut line)? == 0 {
                    truncated = true;
                    break;
                }
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk"))?;
                if size == 0 {
                    line.clear();
                    self.r.read_line(&mut line)?;
                    break;
                }
                let mut chunk = vec![0; size + 2];
                self.r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().map_err(|_| bad("content-length"))?;
            body.resize(len, 0);
            self.r.read_exact(&mut body)?;
        } else {
            self.r.read_to_end(&mut body)?;
        }
        Ok(Resp {
            status,
            headers,
            body,
            truncated,
        })
    }

    fn get(&mut self, path: &str) -> std::io::Result<Resp> {
        self.send("GET", path, &[])?;
        self.read_one()
    }
}

#[test]
fn forty_thousand_cgi_headers_are_a_502_and_the_watchdog_lives_on() {
    let cases = [
        // 40,000 header names: the HeaderMap's capacity (32,768) was the only limit, and it
        // panics beyond; 40,000 values of one name went through.
        ("seq 40000 | sed 's/^/X-/;s/$/: 1/'; printf '\\nbody'", 502),
        ("yes 'X-A: 1' | head -n 40000; printf '\\nbody'", 502),
        ("yes 'X-A: 1' | head -n 101; printf '\\nbody'", 502),
        ("yes 'X-A: 1' | head -n 100; printf '\\nbody'", 200),
        // Short enough lines, but 80 KB of them: the block bound holds with newlines too.
        (
            "i=0; while [ $i -lt 40 ]; do printf 'X-%d: %2000s\\n' $i x; i=$((i+1)); done; printf '\\nbody'",
            502,
        ),
    ];
    for mode in MODES {
        for (script, want) in cases {
            let wd = cgi_wd(mode, script);
            let r = wd.get("/").unwrap();
            assert_eq!(r.status, want, "{mode}: {script}: {}", r.text());
            if want == 200 {
                assert_eq!(r.text(), "body", "{mode}");
            } else {
                assert!(
                    eventually(Duration::from_secs(2), || wd.log().contains("CGI header")),
                    "{mode}: no log line:\n{}",
                    wd.log()
                );
            }
            assert_eq!(wd.get("/_/health").unwrap().status, 200, "{mode}");
        }
    }
}

/// A function that lies about its length on `/lie*`, and answers honestly otherwise.
const LIAR: &str = r#"case "$Http_Path" in
  /lie0) printf 'Content-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled' ;;
  /lie99) printf 'Content-Length: 99\r\n\r\nshort' ;;
  /plus) printf 'Content-Length: +5\r\n\r\nhello' ;;
  /list) printf 'Content-Length: 5, 5\r\n\r\nhello' ;;
  /twice) printf 'Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello' ;;
  /word) printf 'Content-Length: five\r\n\r\nhello' ;;
  /huge) printf 'Content-Length: 99999999999999999999999\r\n\r\nhello' ;;
  /slow) printf 'Content-Length: 0\r\n\r\n'; sleep 0.5; printf 'late body' ;;
  /hop) printf 'Transfer-Encoding: chunked\r\nConnection: close\r\nKeep-Alive: timeout=1\r\nUpgrade: h2c\r\nProxy-Connection: close\r\nTE: trailers\r\nTrailer: X-T\r\nX-Kept: yes\r\n\r\nhop' ;;
  /honest) printf 'Content-Length: 5\r\n\r\nhello' ;;
  *) printf 'Content-Type: text/plain\r\n\r\nanswer %s' "$Http_Path" ;;
esac"#;

#[test]
fn a_lying_content_length_cannot_split_a_kept_alive_connection() {
    for mode in MODES {
        let wd = cgi_wd(mode, LIAR);
        for (i, path) in [
            "/lie0", "/lie99", "/plus", "/list", "/twice", "/word", "/huge",
        ]
        .iter()
        .enumerate()
        {
            let mut c = Conn::open(wd.port, Duration::from_secs(10)).unwrap();
            let first = c.get(path).unwrap();
            let second = c.get(&format!("/second{i}")).unwrap();
            assert_eq!(
                (second.status, second.text()),
                (200, format!("answer /second{i}")),
                "{mode} {path}: the second answer is the function's own"
            );
            if mode == "streaming" {
                // The whole output may or may not have arrived before the head went out:
                // buffered it is checked (502), streamed it is framed by the watchdog.
                assert!(
                    first.status == 502
                        || (first.status == 200 && first.header("content-length").is_none()),
                    "{mode} {path}: {first:?}"
                );
            } else {
                assert_eq!(first.status, 502, "{mode} {path}: {}", first.text());
            }
        }
        assert!(
            eventually(Duration::from_secs(2), || wd
                .log()
                .contains("Content-Length")),
            "{mode}: no log line:\n{}",
            wd.log()
        );

        let mut c = Conn::open(wd.port, Duration::from_secs(10)).unwrap();
        let r = c.get("/honest").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{mode}");
        let r = c.get("/hop").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hop"), "{mode}");
        assert_eq!(r.header("x-kept"), Some("yes"), "{mode}");
        for h in [
            "connection",
            "keep-alive",
            "upgrade",
            "proxy-connection",
            "te",
            "trailer",
        ] {
            assert_eq!(r.header(h), None, "{mode}: {h} passed on: {r:?}");
        }
        let r = c.get("/after-hop").unwrap();
        assert_eq!(
            r.text(),
            "answer /after-hop",
            "{mode}: Connection: close was obeyed"
        );
    }
    // Streamed output whose declared length is wrong is framed by the watchdog instead.
    let wd = cgi_wd("streaming", LIAR);
    let mut c = Conn::open(wd.port, Duration::from_secs(10)).unwrap();
    let r = c.get("/slow").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "late body"));
    assert!(!r.truncated);
    let r = c.get("/next").unwrap();
    assert_eq!(r.text(), "answer /next");
}

#[test]
fn cgi_status_outside_200_to_599_is_a_502() {
    let script = r#"printf 'Status: %s\r\n\r\nbody' "$Http_X_Status""#;
    for mode in MODES {
        let wd = cgi_wd(mode, script);
        for bad in [
            "100",
            "101 Switching Protocols",
            "199",
            "000",
            "0",
            "600",
            "999",
            "1000",
            "+200",
            "0200",
            "20",
            "abc",
            "",
        ] {
            let r = wd.request("GET", "/", &[("X-Status", bad)], b"").unwrap();
            assert_eq!(r.status, 502, "{mode}: Status {bad:?}: {}", r.text());
        }
        for (good, code) in [
            ("200 OK", 200),
            ("404", 404),
            ("599 Odd", 599),
            ("201", 201),
        ] {
            let r = wd.request("GET", "/", &[("X-Status", good)], b"").unwrap();
            assert_eq!(
                (r.status, r.text().as_str()),
                (code, "body"),
                "{mode}: {good:?}"
            );
        }
        assert!(
            wd.log().contains("CGI Status"),
            "{mode}: no log line:\n{}",
            wd.log()
        );
    }
}

#[test]
fn request_headers_cannot_spoof_the_watchdogs_own_variables() {
    for mode in MODES {
        // sh, so file mode's extra argument (the input file) is $0, not a command for env.
        let wd = Watchdog::start(&[("mode", mode)], &["sh", "-c", "env"]);
        let r = wd
            .request(
                "GET",
                "/real/path?real=1",
                &[
                    ("Method", "EVIL"),
                    ("Path", "/evil"),
                    ("Query", "evil=1"),
                    ("X-Call-Id", "good-id"),
                    ("X_Call_Id", "evil-id"),
                    ("X-Foo", "dash"),
                    ("X_Foo", "under"),
                    ("X_Lone", "under"),
                ],
                b"",
            )
            .unwrap();
        let env = r.text();
        let http: Vec<&str> = env.lines().filter(|l| l.starts_with("Http_")).collect();
        for want in [
            "Http_Method=GET",
            "Http_Path=/real/path",
            "Http_Query=real=1",
            "Http_X_Call_Id=good-id",
            "Http_X_Foo=dash",
        ] {
            assert!(http.contains(&want), "{mode}: missing {want} in {http:#?}");
        }
        assert_eq!(r.header("x-call-id"), Some("good-id"));
        assert!(
            !http
                .iter()
                .any(|l| l.contains("evil") || l.contains("EVIL") || l.contains("under")),
            "{mode}: spoofed: {http:#?}"
        );
        // No query: a Query header still cannot make one up, and the call id the function
        // sees is the one the watchdog made.
        let r = wd
            .request(
                "GET",
                "/p",
                &[("Query", "evil=1"), ("X_Call_Id", "evil-id")],
                b"",
            )
            .unwrap();
        let env = r.text();
        let made = r.header("x-call-id").unwrap();
        assert!(
            env.lines().any(|l| l == format!("Http_X_Call_Id={made}")),
            "{mode}: {env}"
        );
        assert!(!env.contains("Http_Query"), "{mode}: {env}");
        assert!(!env.contains("evil"), "{mode}: {env}");
    }
}

#[test]
fn out_of_descriptors_is_a_503_with_a_reason_never_a_502() {
    let mut wd = Watchdog::with(Opts {
        // Above the descriptor limit on purpose: the cap (auto: half the limit) would
        // otherwise keep the watchdog from ever running out.
        env: vec![
            ("mode", "streaming".to_string()),
            ("max_connections", "1000".to_string()),
        ],
        cmd: vec!["echo", "ok"],
        launcher: vec!["prlimit", "--nofile=40:40"],
        ..Opts::default()
    });
    let mut held = Vec::new();
    let mut seen_503 = None;
    for _ in 0..200 {
        let Ok(mut c) = Conn::open(wd.port, Duration::from_secs(3)) else {
            break;
        };
        match c.get("/") {
            Ok(r) if r.status == 503 => {
                seen_503 = Some(r.text());
                break;
            }
            Ok(r) => assert_eq!(r.status, 200, "{}", r.text()),
            // The accept stalled: the watchdog is out of descriptors for new connections.
            Err(_) => break,
        }
        held.push(c);
    }
    let reason = seen_503.unwrap_or_else(|| {
        panic!(
            "no 503 after {} connections; log:\n{}",
            held.len(),
            wd.log()
        )
    });
    assert!(reason.contains("descriptors"), "{reason}");
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || wd
            .get("/")
            .is_ok_and(|r| r.status == 200)),
        "no recovery: {}",
        wd.log()
    );
    assert!(wd.child.try_wait().unwrap().is_none());
    wd.wait_healthy(Duration::from_secs(1));
}

#[test]
fn a_daemon_holding_stdout_does_not_hold_the_response() {
    let mark = marker("daemon");
    for mode in MODES {
        for script in [
            "sleep 30 & echo hi".to_string(),
            format!("sh -c 'sleep 30; : {mark}' & echo hi"),
        ] {
            let wd = Watchdog::start(
                &[("mode", mode), ("exec_timeout", "20s")],
                &["sh", "-c", &script],
            );
            let t = Instant::now();
            let r = wd.get("/").unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "hi\n"), "{mode}");
            assert!(!r.truncated, "{mode}");
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{mode}: {:?}",
                t.elapsed()
            );
            // The daemon was part of the request: it goes with it.
            assert!(
                eventually(Duration::from_secs(5), || pids_with_marker(&mark)
                    .is_empty()),
                "{mode}: daemon survived: {:?}",
                pids_with_marker(&mark)
            );
        }
    }
}
