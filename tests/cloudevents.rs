//! cloudevents=true with the real binary, per mode, against a CloudEvents client no one
//! here wrote: tests/cloudevents_client.py drives the Python SDK (PyPI `cloudevents`)
//! against tests/cloudevents_fn.py behind the watchdog. Without the package these tests say
//! SKIPPED; with FWATCHDOG_REQUIRE_CE=1 (as in CI) they fail instead. The rest (the
//! default leaves events alone, the trace context without CloudEvents) needs no client.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloudevents_client.py");
const FUNCTION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloudevents_fn.py");
const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream.py");
const SOURCE: &str = "/fwd-test/source";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// True when the client can run; otherwise SKIPPED, or a failure under FWATCHDOG_REQUIRE_CE=1.
fn client_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cloudevents"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("FWATCHDOG_REQUIRE_CE").as_deref() == Ok("1") {
            panic!("FWATCHDOG_REQUIRE_CE=1 but python3 cannot import cloudevents (pip install cloudevents)");
        }
        eprintln!(
            "SKIPPED: the CloudEvents client checks need the Python package cloudevents \
             (pip install cloudevents); FWATCHDOG_REQUIRE_CE=1 makes this a failure"
        );
    }
    ok
}

/// Starts the watchdog in `mode` with the test function (or the upstream in http mode) and
/// runs every client check against it.
fn run_client(mode: &str, extra: &[(&str, &str)]) {
    if !client_available() {
        return;
    }
    let dir = scratch_dir("ce");
    let log: PathBuf = dir.join("runs.log");
    let mut env: Vec<(&str, String)> = vec![
        ("mode", mode.into()),
        ("cloudevents", "true".into()),
        ("ce_source", SOURCE.into()),
        ("exec_timeout", "2s".into()),
        ("max_inflight", "2".into()),
        ("FN_RUN_LOG", log.display().to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let up_l = listener();
    let upstream_url = format!("http://127.0.0.1:{}", up_l.local_addr().unwrap().port());
    let cmd: Vec<&str> = match mode {
        "http" => {
            env.push(("upstream_url", upstream_url));
            vec!["python3", UPSTREAM, "fd:10"]
        }
        "worker" => vec!["python3", FUNCTION, "--worker"],
        _ => {
            env.push(("cgi_response", "true".into()));
            vec!["python3", FUNCTION]
        }
    };
    let wd = Watchdog::with(Opts {
        env,
        cmd,
        upstream: (mode == "http").then_some(&up_l),
        ..Opts::default()
    });
    let out = Command::new("python3")
        .arg(CLIENT)
        .args([
            "--port",
            &wd.port.to_string(),
            "--mode",
            mode,
            "--source",
            SOURCE,
        ])
        .arg("--log")
        .arg(&log)
        .output()
        .expect("run the CloudEvents client");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "CloudEvents checks failed in {mode} mode:\n{text}\nwatchdog log:\n{}",
        wd.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn streaming_mode_with_the_cloudevents_client() {
    run_client("streaming", &[]);
}

#[test]
fn serializing_mode_with_the_cloudevents_client() {
    run_client("serializing", &[]);
}

#[test]
fn file_mode_with_the_cloudevents_client() {
    run_client("file", &[]);
}

#[test]
fn worker_mode_with_the_cloudevents_client() {
    run_client("worker", &[("workers", "2")]);
}

#[test]
fn http_mode_with_the_cloudevents_client() {
    run_client("http", &[]);
}

/// A function that prints its CE_* and trace variables, one per line, and its body.
const PRINT_ENV: &str = "env | grep -E '^(CE_|TRACE|Http_Ce_)' | sort; printf 'body='; cat";

#[test]
fn by_default_an_event_is_a_plain_request() {
    let wd = Watchdog::start(&[], &["sh", "-c", PRINT_ENV]);
    let r = wd
        .request(
            "POST",
            "/",
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            b"data",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("Http_Ce_Id=1") && text.ends_with("body=data"),
        "{text}"
    );
    assert!(!text.contains("CE_ID"), "{text}");
    assert!(r.header("ce-id").is_none());
    let r = wd
        .request(
            "OPTIONS",
            "/",
            &[("Content-Type", "application/cloudevents+json")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("allow").is_none(),
        "the function answered, not the probe"
    );
}

#[test]
fn the_trace_context_reaches_functions_without_cloudevents() {
    let wd = Watchdog::start(&[("mode", "serializing")], &["sh", "-c", PRINT_ENV]);
    let r = wd
        .request(
            "POST",
            "/",
            &[
                ("traceparent", TRACEPARENT),
                ("tracestate", "a=1"),
                ("tracestate", "b=2"),
            ],
            b"x",
        )
        .unwrap();
    let text = r.text();
    assert!(
        text.contains(&format!("TRACEPARENT={TRACEPARENT}\n")),
        "{text}"
    );
    assert!(text.contains("TRACESTATE=a=1,b=2\n"), "{text}");
    // Not one the recommendation accepts: neither is passed.
    let r = wd
        .request(
            "POST",
            "/",
            &[("traceparent", "00-zz-yy-01"), ("tracestate", "a=1")],
            b"x",
        )
        .unwrap();
    assert!(!r.text().contains("TRACE"), "{}", r.text());
}

#[test]
fn worker_heads_carry_the_trace_context_even_without_cgi_headers() {
    let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/worker.py");
    let wd = Watchdog::start(
        &[
            ("mode", "worker"),
            ("workers", "1"),
            ("cgi_headers", "false"),
        ],
        &["python3", worker],
    );
    let r = wd
        .request("GET", "/head", &[("traceparent", TRACEPARENT)], b"")
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(head["env"]["TRACEPARENT"], TRACEPARENT, "{head}");
    assert!(head["env"].get("Http_Method").is_none(), "{head}");
}

#[test]
fn a_bad_ce_source_stops_the_watchdog_naming_it() {
    let (code, err) = run_to_exit(
        &[
            ("fprocess", "cat"),
            ("cloudevents", "true"),
            ("ce_source", "/a\u{7}b"),
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ce_source"), "{err}");
}
