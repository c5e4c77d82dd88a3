//! The exposition against a stored of-watchdog 0.11.6 scrape, the content type, the bounded
//! method label, and when recording starts.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// `/metrics` of of-watchdog 0.11.6 (serializing mode, `max_inflight=1`) after requests that
/// gave 200 for GET, POST, PUT, PROPFIND and BREW, 500 for a failing POST and 429 for a POST
/// over the limit. Only its structure is compared: values differ from run to run.
const OF_WATCHDOG: &str = include_str!("../../tests/data/of-watchdog-0.11.6.metrics.txt");

/// One metric family of an exposition: its `# HELP` and `# TYPE` lines as written, and each
/// sample line without its value (name and labels, in the order written).
#[derive(Debug, Default, PartialEq)]
struct Family {
    help: String,
    type_line: String,
    series: Vec<String>,
}

/// Families by name. Panics on a sample before any `# TYPE`, which neither encoder writes.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            current = rest.split(' ').next().unwrap().to_string();
            out.entry(current.clone()).or_default().help = line.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap().to_string();
            out.entry(current.clone()).or_default().type_line = line.to_string();
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, _value) = line.rsplit_once(' ').expect("sample has a value");
            out.get_mut(&current)
                .unwrap_or_else(|| panic!("sample outside a family: {line:?}"))
                .series
                .push(series.to_string());
        }
    }
    out
}

/// `name{label=value,...}` → (name, label name → value).
fn split_series(series: &str) -> (&str, BTreeMap<&str, &str>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, BTreeMap::new());
    };
    let labels = rest
        .strip_suffix('}')
        .expect("closing brace")
        .split(',')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("label=value");
            (k, v.trim_matches('"'))
        })
        .collect();
    (name, labels)
}

/// A request in method label `method` (an invented method for `unknown`).
fn method_for(label: &str) -> Method {
    let name = if label == "unknown" {
        "PROPFIND".to_string()
    } else {
        label.to_ascii_uppercase()
    };
    let method = Method::from_bytes(name.as_bytes()).unwrap();
    assert_eq!(MethodLabel::of(&method).as_str(), label);
    method
}

fn enabled() -> Arc<Metrics> {
    let m = Metrics::new();
    m.enabled.store(true, Ordering::Relaxed);
    m
}

fn record(m: &Arc<Metrics>, method: &Method, status: u16) {
    let mut t = m.start(method);
    t.set_status(status);
}

/// Every family of of-watchdog's scrape that we export has the same `# HELP` and `# TYPE`
/// lines and, after the same requests, the same series in the same order, byte for byte up
/// to the value: names, label names, label order, `code`/`method` values and `le` bounds.
#[test]
fn exposition_matches_of_watchdog_scrape() {
    let theirs = families(OF_WATCHDOG);
    let m = enabled();
    for series in &theirs["http_requests_total"].series {
        let (_, labels) = split_series(series);
        record(
            &m,
            &method_for(labels["method"]),
            labels["code"].parse().unwrap(),
        );
    }
    let ours = families(&m.encode());

    let shared: BTreeSet<&str> = theirs
        .keys()
        .filter(|name| ours.contains_key(*name))
        .map(String::as_str)
        .collect();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_flight",
        "process_cpu_seconds_total",
        "process_max_fds",
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    ] {
        assert!(shared.contains(name), "{name} is not in both expositions");
    }
    for name in shared {
        assert_eq!(ours[name], theirs[name], "family {name}");
    }
}

/// The test above must be able to fail: its input holds buckets and both label names.
#[test]
fn stored_scrape_has_the_request_series() {
    let theirs = families(OF_WATCHDOG);
    let buckets: Vec<_> = theirs["http_request_duration_seconds"]
        .series
        .iter()
        .map(|s| split_series(s))
        .filter(|(name, l)| {
            *name == "http_request_duration_seconds_bucket"
                && l["code"] == "500"
                && l["method"] == "post"
        })
        .map(|(_, l)| l["le"].to_string())
        .collect();
    let expected: Vec<String> = DEFAULT_BUCKETS
        .iter()
        .map(f64::to_string)
        .chain(["+Inf".to_string()])
        .collect();
    assert_eq!(buckets, expected);
    assert!(theirs["http_requests_total"].series.len() >= 4);
}

/// Our own families, and the process collector's thread count, which client_golang leaves
/// to its Go collector (`go_threads`).
#[test]
fn own_families_are_typed_counters() {
    let ours = families(&Metrics::new().encode());
    for (name, type_line) in [
        (
            "fwatchdog_function_timeouts_total",
            "# TYPE fwatchdog_function_timeouts_total counter",
        ),
        (
            "fwatchdog_function_restarts_total",
            "# TYPE fwatchdog_function_restarts_total counter",
        ),
        ("process_threads", "# TYPE process_threads gauge"),
    ] {
        assert_eq!(ours[name].type_line, type_line);
        assert_eq!(ours[name].series, [name]);
    }
    assert_eq!(
        ours["http_requests_in_flight"].series,
        ["http_requests_in_flight"]
    );
    // Families with labels appear with their first series, as in client_golang.
    assert!(!ours.contains_key("http_requests_total"));
    assert!(!ours.contains_key("http_request_duration_seconds"));
}

/// The classic format is served whatever the scraper asks for, as promhttp does.
#[test]
fn serves_the_classic_format_only() {
    assert!(TEXT_CONTENT_TYPE.starts_with(prometheus::TEXT_FORMAT));
    let m = enabled();
    record(&m, &Method::GET, 200);
    for accept in [
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "text/plain",
        "*/*",
    ] {
        let req = Request::get("/metrics")
            .header(header::ACCEPT, accept)
            .body(())
            .unwrap();
        let resp = m.respond(&req);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
    let text = m.encode();
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(
        text.contains("le=\"1\"") && !text.contains("le=\"1.0\""),
        "{text}"
    );

    let other = Request::get("/").body(()).unwrap();
    assert_eq!(m.respond(&other).status(), StatusCode::NOT_FOUND);
    let post = Request::post("/metrics").body(()).unwrap();
    let resp = m.respond(&post);
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
}

/// A client sending a thousand made-up methods adds one `unknown` series, not a thousand.
#[test]
fn invented_methods_cannot_grow_the_label_set() {
    let m = enabled();
    for i in 0..1000 {
        let method = Method::from_bytes(format!("X-{i}").as_bytes()).unwrap();
        record(&m, &method, 200);
    }
    // promhttp accepts lower-case spellings of known methods as the same label.
    record(&m, &Method::from_bytes(b"get").unwrap(), 200);
    record(&m, &Method::GET, 200);
    let text = m.encode();
    let series = &families(&text)["http_requests_total"].series;
    assert_eq!(
        series,
        &[
            "http_requests_total{code=\"200\",method=\"get\"}",
            "http_requests_total{code=\"200\",method=\"unknown\"}",
        ],
        "{text}"
    );
    assert!(text.contains("http_requests_total{code=\"200\",method=\"unknown\"} 1000\n"));
}

#[test]
fn method_labels_match_promhttp() {
    assert_eq!(MethodLabel::of(&Method::POST).as_str(), "post");
    assert_eq!(MethodLabel::of(&Method::GET).as_str(), "get");
    let odd = Method::from_bytes(b"PROPFIND").unwrap();
    assert_eq!(MethodLabel::of(&odd).as_str(), "unknown");
}

#[test]
fn records_only_once_enabled() {
    let m = Metrics::new();
    drop(m.start(&Method::GET));
    m.timeout();
    assert!(!m.encode().contains("http_requests_total{"));
    assert!(m.encode().contains("fwatchdog_function_timeouts_total 0\n"));
    m.enabled.store(true, Ordering::Relaxed);
    let mut t = m.start(&Method::POST);
    assert!(m.encode().contains("http_requests_in_flight 1\n"));
    t.set_status(201);
    drop(t);
    // Dropped without a status: the client went away.
    drop(m.start(&Method::GET));
    m.timeout();
    m.restart();
    let text = m.encode();
    assert!(text.contains("http_requests_in_flight 0\n"), "{text}");
    assert!(text.contains("http_requests_total{code=\"201\",method=\"post\"} 1\n"));
    assert!(text.contains("http_requests_total{code=\"499\",method=\"get\"} 1\n"));
    let bucket = "http_request_duration_seconds_bucket{code=\"201\",method=\"post\",le=";
    for le in ["0.005", "1", "10", "+Inf"] {
        assert!(text.contains(&format!("{bucket}\"{le}\"}} 1\n")), "{text}");
    }
    assert!(text.contains("fwatchdog_function_timeouts_total 1\n"));
    assert!(text.contains("fwatchdog_function_restarts_total 1\n"));
}

/// Cost of the request path with metrics on and off; run with
/// `cargo test --release --lib hot_path -- --ignored --nocapture`.
#[test]
#[ignore]
fn hot_path() {
    let n = 2_000_000u32;
    let m = Metrics::new();
    for enabled in [false, true] {
        m.enabled.store(enabled, Ordering::Relaxed);
        let started = std::time::Instant::now();
        for i in 0..n {
            let method = if i % 2 == 0 {
                Method::GET
            } else {
                Method::POST
            };
            record(&m, &method, if i % 10 == 0 { 500 } else { 200 });
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(n);
        println!("metrics enabled={enabled}: {per:.1} ns per request");
    }
}
