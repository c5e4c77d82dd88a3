//! Operations: Prometheus metrics (names, labels, exact counts, the in-flight gauge, the
//! port being off or taken) and JSON logs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// One scrape, parsed: `name{sorted labels}` → value. Label order in the exposition is not
/// significant, so keys are rebuilt with labels sorted.
struct Scrape {
    text: String,
    content_type: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.get(&key(name, labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {}; scrape:\n{}", key(name, labels), self.text))
    }

    /// Every series of `name`, as label maps.
    fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut out = Vec::new();
        for line in self.text.lines().filter(|l| !l.starts_with('#')) {
            let (n, labels, v) = parse_sample(line);
            if n == name {
                out.push((labels, v));
            }
        }
        out
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value in {line:?}"));
    let mut labels = BTreeMap::new();
    let name = match series.split_once('{') {
        None => series.to_string(),
        Some((name, rest)) => {
            let rest = rest.strip_suffix('}').expect("closing brace");
            // Label values here never contain commas or quotes.
            for pair in rest.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label=value");
                labels.insert(k.to_string(), v.trim_matches('"').to_string());
            }
            name.to_string()
        }
    };
    (name, labels, value)
}

fn scrape_with(port: u16, headers: &[(&str, &str)]) -> Scrape {
    let r = request(port, "GET", "/metrics", headers, b"").expect("metrics answer");
    assert_eq!(r.status, 200);
    let text = r.text();
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, labels, v) = parse_sample(line);
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        samples.insert(key(&name, &pairs), v);
    }
    Scrape {
        text,
        content_type: r.header("content-type").unwrap_or("").to_string(),
        samples,
    }
}

fn scrape(port: u16) -> Scrape {
    scrape_with(port, &[])
}

/// Ports the process listens on (TCP, any address), from its socket fds and /proc/net/tcp*.
fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(ino) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.push(ino.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] (ADDR:PORT in hex), st is f[3] (0A = LISTEN), inode f[9].
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort();
    ports
}

const SCRIPT: &str = r#"case "$Http_Path" in
  /fail) echo "failing on purpose" >&2; exit 3 ;;
  /slow) sleep 1 ;;
esac
cat"#;

#[test]
fn metrics_count_requests_by_code_and_method() {
    let wd = Watchdog::start_metrics(
        &[("mode", "serializing"), ("max_inflight", "1")],
        &["sh", "-c", SCRIPT],
    );
    let mport = wd.metrics_port;
    let mut ports = listening_ports(wd.child.id());
    ports.dedup();
    assert_eq!(ports, {
        let mut p = vec![wd.port, mport];
        p.sort();
        p
    });

    for _ in 0..3 {
        let r = wd.post("/", b"x").unwrap();
        assert_eq!(r.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(wd.get("/").unwrap().status, 200);
    }
    assert_eq!(wd.post("/fail", b"x").unwrap().status, 500);

    // One request held in flight: the gauge shows it and the next request gets 429.
    let port = wd.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/slow", &[], b"").unwrap());
    assert!(
        eventually(Duration::from_secs(5), || {
            scrape(mport).get("http_requests_in_flight", &[]) == Some(1.0)
        }),
        "in-flight gauge never reached 1:\n{}",
        scrape(mport).text
    );
    assert_eq!(wd.post("/", b"x").unwrap().status, 429);
    assert_eq!(slow.join().unwrap().status, 200);

    // The timer stops when the body has been sent, which may be a moment after the client
    // has it; wait for the last one to land, then check everything exactly.
    assert!(eventually(Duration::from_secs(5), || {
        scrape(mport).get("http_requests_in_flight", &[]) == Some(0.0)
    }));
    let s = scrape(mport);
    assert_eq!(s.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let expected = [
        ("200", "post", 3.0),
        ("200", "get", 3.0),
        ("500", "post", 1.0),
        ("429", "post", 1.0),
    ];
    let series = s.series("http_requests_total");
    assert_eq!(
        series.len(),
        expected.len(),
        "unexpected series:\n{}",
        s.text
    );
    for (code, method, n) in expected {
        let l = [("code", code), ("method", method)];
        assert_eq!(s.value("http_requests_total", &l), n, "{code} {method}");
        assert_eq!(s.value("http_request_duration_seconds_count", &l), n);
        let inf = [("code", code), ("method", method), ("le", "+Inf")];
        assert_eq!(s.value("http_request_duration_seconds_bucket", &inf), n);
    }
    // The slow GET (over a second) is in none of the buckets up to 1 s.
    let le1 = [("code", "200"), ("method", "get"), ("le", "1")];
    assert!(s.value("http_request_duration_seconds_bucket", &le1) <= 2.0);
    let le10 = [("code", "200"), ("method", "get"), ("le", "10")];
    assert_eq!(s.value("http_request_duration_seconds_bucket", &le10), 3.0);
    assert!(
        s.value(
            "http_request_duration_seconds_sum",
            &[("code", "200"), ("method", "get")]
        ) >= 1.0
    );
    // Default buckets, as client_golang's DefBuckets.
    let les: Vec<String> = s
        .series("http_request_duration_seconds_bucket")
        .into_iter()
        .filter(|(l, _)| l["code"] == "500")
        .map(|(l, _)| l["le"].clone())
        .collect();
    assert_eq!(
        les,
        ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
    );

    assert_eq!(s.value("http_requests_in_flight", &[]), 0.0);
    assert_eq!(s.value("fwatchdog_function_timeouts_total", &[]), 0.0);
    assert_eq!(s.value("fwatchdog_function_restarts_total", &[]), 0.0);
    for line in [
        "# TYPE http_requests_total counter",
        "# TYPE http_request_duration_seconds histogram",
        "# TYPE http_requests_in_flight gauge",
        "# TYPE fwatchdog_function_timeouts_total counter",
        "# TYPE fwatchdog_function_restarts_total counter",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(
            s.text.lines().any(|l| l == line),
            "missing {line:?}:\n{}",
            s.text
        );
    }

    // Process metrics come from /proc at scrape time.
    assert!(s.value("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(s.value("process_open_fds", &[]) >= 3.0);
    assert!(s.value("process_max_fds", &[]) >= s.value("process_open_fds", &[]));
    assert!(s.value("process_cpu_seconds_total", &[]) >= 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = s.value("process_start_time_seconds", &[]);
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "start {started}, now {now}"
    );

    // Scrapes, probes and the metrics port itself are not function requests.
    assert_eq!(wd.get("/_/health").unwrap().status, 200);
    let again = scrape(mport);
    assert_eq!(again.series("http_requests_total").len(), expected.len());

    // The classic format whatever the scraper asks for, as of-watchdog.
    let om = scrape_with(
        mport,
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(om.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!om.text.contains("# EOF"));

    // Anything but GET /metrics on the metrics port.
    assert_eq!(request(mport, "GET", "/", &[], b"").unwrap().status, 404);
    assert_eq!(
        request(mport, "POST", "/metrics", &[], b"").unwrap().status,
        405
    );
}

#[test]
fn timeouts_are_counted() {
    let wd = Watchdog::start_metrics(
        &[("mode", "serializing"), ("exec_timeout", "300ms")],
        &["sleep", "5"],
    );
    let mport = wd.metrics_port;
    assert_eq!(wd.post("/", b"").unwrap().status, 504);
    assert_eq!(wd.post("/", b"").unwrap().status, 504);
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = scrape(mport);
            s.get("fwatchdog_function_timeouts_total", &[]) == Some(2.0)
                && s.get(
                    "http_requests_total",
                    &[("code", "504"), ("method", "post")],
                ) == Some(2.0)
        }),
        "{}",
        scrape(mport).text
    );
}

#[test]
fn streaming_timeouts_after_output_are_counted() {
    let wd = Watchdog::start_metrics(
        &[("exec_timeout", "500ms")],
        &["sh", "-c", "echo partial; sleep 5"],
    );
    let mport = wd.metrics_port;
    let r = wd.get("/").unwrap();
    assert!(r.truncated, "the stream is aborted");
    assert!(
        eventually(Duration::from_secs(3), || scrape(mport)
            .get("fwatchdog_function_timeouts_total", &[])
            == Some(1.0)),
        "{}",
        scrape(mport).text
    );
}

#[test]
fn metrics_port_zero_listens_nowhere() {
    let wd = Watchdog::start(&[("metrics_port", "0")], &["cat"]);
    assert_eq!(wd.post("/", b"x").unwrap().text(), "x");
    assert_eq!(listening_ports(wd.child.id()), vec![wd.port]);
}

#[test]
fn metrics_port_in_use_is_exit_2() {
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut wd = Watchdog::with(Opts {
        env: vec![("metrics_port", port.to_string())],
        cmd: vec!["cat"],
        wait_healthy: false,
        ..Opts::default()
    });
    let st = wd
        .wait_exit(Duration::from_secs(10))
        .expect("exits at once");
    assert_eq!(st.code(), Some(2), "{}", wd.log());
    let log = wd.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("metrics_port")).collect();
    assert_eq!(lines.len(), 1, "one line naming metrics_port:\n{log}");
    assert!(lines[0].contains(&port.to_string()), "{log}");
    drop(taken);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let secrets = scratch_dir("ops-secrets");
    std::fs::write(secrets.join("api-key"), "s3cr3t-value-never-logged\n").unwrap();
    let mut wd = Watchdog::start(
        &[
            ("mode", "serializing"),
            ("log_format", "json"),
            ("secret_mount_path", secrets.to_str().unwrap()),
            ("api_key_secret", "api-key"),
        ],
        &[
            "sh",
            "-c",
            "echo \"to stderr $Http_Path\" >&2; [ \"$Http_Path\" != /fail ] || exit 3; cat",
        ],
    );
    let auth = [
        ("Authorization", "Bearer s3cr3t-value-never-logged"),
        ("X-Call-Id", "call-json-1"),
    ];
    let r = wd.request("POST", "/hello?q=1", &auth, b"body").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body");
    assert_eq!(wd.request("POST", "/fail", &auth, b"").unwrap().status, 500);
    assert_eq!(wd.post("/no-auth", b"").unwrap().status, 401);
    assert!(eventually(Duration::from_secs(5), || wd
        .log()
        .contains("/no-auth")));
    wd.signal("TERM");
    let st = wd
        .wait_exit(Duration::from_secs(15))
        .expect("drains and exits");
    assert!(st.success(), "{}", wd.log());
    let log = wd.log();
    let _ = std::fs::remove_dir_all(&secrets);

    assert!(
        !log.contains("s3cr3t-value"),
        "secret value in the log:\n{log}"
    );
    let mut events = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nfull log:\n{log}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for k in ["timestamp", "level", "message"] {
            assert!(obj.contains_key(k), "{k} missing in {line}");
        }
        events.push(v);
    }
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool, what: &str| {
        events
            .iter()
            .find(|e| pred(e))
            .unwrap_or_else(|| panic!("no {what} event in:\n{log}"))
            .clone()
    };

    let start = find(&|e| e["message"] == "fwatchdog listening", "start");
    assert_eq!(start["mode"], "serializing");
    assert_eq!(start["port"], wd.port);
    let config = find(&|e| e["message"] == "config", "config");
    assert_eq!(
        config["api_key_secret"], "api-key",
        "secret named, not valued"
    );
    assert_eq!(config["exec_timeout"], "30s");

    let req = find(
        &|e| e["message"] == "request" && e["path"] == "/hello",
        "request",
    );
    assert_eq!(req["method"], "POST");
    assert_eq!(req["status"], 200);
    assert_eq!(req["call_id"], "call-json-1");
    assert!(req["duration"].as_f64().is_some_and(|d| d >= 0.0), "{req}");
    let failed = find(
        &|e| e["message"] == "request" && e["path"] == "/fail",
        "failed request",
    );
    assert_eq!(failed["status"], 500);
    let denied = find(
        &|e| e["message"] == "request" && e["path"] == "/no-auth",
        "401 request",
    );
    assert_eq!(denied["status"], 401);

    // The failing run's exit is logged as an event of its own.
    find(
        &|e| e.get("stream").is_none() && e.to_string().contains("exit status 3"),
        "function exit",
    );

    let stderr_line = find(&|e| e["message"] == "to stderr /hello", "function stderr");
    assert_eq!(stderr_line["stream"], "stderr");
    find(&|e| e["message"] == "draining", "draining");
}

#[test]
fn text_logs_stay_readable() {
    let mut wd = Watchdog::start(
        &[("mode", "serializing")],
        &["sh", "-c", "echo 'plain line' >&2; cat"],
    );
    assert_eq!(wd.post("/t", b"x").unwrap().status, 200);
    assert!(eventually(Duration::from_secs(5), || wd
        .log()
        .contains("path=\"/t\"")));
    wd.signal("TERM");
    wd.wait_exit(Duration::from_secs(15)).expect("exits");
    let log = wd.log();
    assert!(
        log.lines().any(|l| l.ends_with("stderr: plain line")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("INFO fwatchdog listening")),
        "{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with('{')), "{log}");
}

#[test]
fn abandoned_requests_are_counted_as_499() {
    use std::io::Write;
    let wd = Watchdog::start_metrics(&[("mode", "serializing")], &["sleep", "5"]);
    let mport = wd.metrics_port;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        scrape(mport).get("http_requests_in_flight", &[]) == Some(1.0)
    }));
    drop(s);
    assert!(
        eventually(Duration::from_secs(4), || {
            let m = scrape(mport);
            m.get("http_requests_total", &[("code", "499"), ("method", "get")]) == Some(1.0)
                && m.get("http_requests_in_flight", &[]) == Some(0.0)
        }),
        "{}",
        scrape(mport).text
    );
}

#[test]
fn startup_errors_are_json_with_json_logs() {
    let (code, err) = run_to_exit(
        &[
            ("fprocess", "cat"),
            ("log_format", "json"),
            ("exec_timeout", "soon"),
        ],
        &[],
    );
    assert_eq!(code, 2);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(v["variable"], "exec_timeout");
    assert_eq!(v["level"], "ERROR");
    assert!(v["message"].as_str().unwrap().contains("exec_timeout"));

    // A failure found later (the port is taken) is JSON too, after the start events.
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let (code, err) = run_to_exit(
        &[("fprocess", "cat"), ("log_format", "json"), ("PORT", &port)],
        &[],
    );
    assert_eq!(code, 2);
    let last: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).expect("JSON");
    assert_eq!(last["variable"], "PORT", "{err}");
    for line in err.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}
