//! Prometheus metrics on `metrics_port`, with of-watchdog's names and labels so existing
//! dashboards and alerts keep working: `http_requests_total{code,method}`,
//! `http_request_duration_seconds{code,method}` and `http_requests_in_flight`, plus our own
//! `fwatchdog_function_timeouts_total`, `fwatchdog_function_restarts_total` and a few process
//! metrics read from `/proc/self` at scrape time.
//!
//! The metric values live in `prometheus-client` types; the request path only touches
//! atomics, one read-locked map lookup per family keyed by two small integers, and the
//! histogram's uncontended mutex. Nothing is recorded until [`Metrics::serve`] has been
//! called, so `metrics_port=0` costs one relaxed atomic load per request.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::body::{self, Body};

/// client_golang's `prometheus.DefBuckets`, which of-watchdog uses for request durations.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Content type of the classic Prometheus text format. It is the only format served,
/// whatever the scraper's `Accept` says: of-watchdog (promhttp's default) does the same, and
/// OpenMetrics would spell bucket bounds differently (`le="1.0"` for `le="1"`), which would
/// split series across a swap of watchdogs on Prometheus 2.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `method` label: the lower-case method for the methods client_golang's promhttp knows,
/// `unknown` for anything else, so a client inventing methods cannot grow the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// `get`
    Get,
    /// `put`
    Put,
    /// `head`
    Head,
    /// `post`
    Post,
    /// `delete`
    Delete,
    /// `connect`
    Connect,
    /// `options`
    Options,
    /// `notify`
    Notify,
    /// `trace`
    Trace,
    /// `patch`
    Patch,
    /// Any other method.
    Unknown,
}

impl MethodLabel {
    /// Maps a request method to its label, as promhttp's `sanitizeMethod` does.
    pub fn of(method: &Method) -> MethodLabel {
        match method.as_str() {
            "GET" | "get" => MethodLabel::Get,
            "PUT" | "put" => MethodLabel::Put,
            "HEAD" | "head" => MethodLabel::Head,
            "POST" | "post" => MethodLabel::Post,
            "DELETE" | "delete" => MethodLabel::Delete,
            "CONNECT" | "connect" => MethodLabel::Connect,
            "OPTIONS" | "options" => MethodLabel::Options,
            "NOTIFY" | "notify" => MethodLabel::Notify,
            "TRACE" | "trace" => MethodLabel::Trace,
            "PATCH" | "patch" => MethodLabel::Patch,
            _ => MethodLabel::Unknown,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "get",
            MethodLabel::Put => "put",
            MethodLabel::Head => "head",
            MethodLabel::Post => "post",
            MethodLabel::Delete => "delete",
            MethodLabel::Connect => "connect",
            MethodLabel::Options => "options",
            MethodLabel::Notify => "notify",
            MethodLabel::Trace => "trace",
            MethodLabel::Patch => "patch",
            MethodLabel::Unknown => "unknown",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// `{code, method}`: a plain `Copy` key, so looking up a request's series hashes three bytes
/// and allocates nothing. Field order is the label order (alphabetical, as promhttp prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The response status code (`499` when the client went away before an answer).
    pub code: u16,
    /// The request method.
    pub method: MethodLabel,
}

/// Status recorded for a request whose handler was dropped before it produced a response
/// (the client hung up). nginx's "client closed request"; promhttp has no equivalent because
/// Go handlers are never cancelled.
pub const CLIENT_CLOSED: u16 = 499;

fn new_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

/// The metric families the watchdog publishes.
pub struct Metrics {
    registry: Registry,
    /// Set once a listener serves the metrics; until then nothing is recorded.
    enabled: AtomicBool,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    timeouts: Counter,
    restarts: Counter,
}

impl Metrics {
    /// A new registry with every family registered (all zero, no series yet).
    pub fn new() -> Arc<Metrics> {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram,
        );
        let in_flight = Gauge::default();
        let timeouts = Counter::default();
        let restarts = Counter::default();
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it to the samples
        // (and `to_prometheus_text` to the family name for the classic format). The registry
        // ends every help text with a full stop itself. Families with labels print nothing
        // until their first series exists, as in client_golang.
        registry.register(
            "http_requests",
            "Total function requests by status code and method",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Function request duration in seconds, until the response body was sent",
            durations.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Function requests currently being served",
            in_flight.clone(),
        );
        registry.register(
            "fwatchdog_function_timeouts",
            "Function runs stopped by exec_timeout",
            timeouts.clone(),
        );
        registry.register(
            "fwatchdog_function_restarts",
            "Restarts of the long-lived function process by the watchdog",
            restarts.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector::new()));
        Arc::new(Metrics {
            registry,
            enabled: AtomicBool::new(false),
            requests,
            durations,
            in_flight,
            timeouts,
            restarts,
        })
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counts a function request as in flight until the returned timer is dropped.
    pub fn start(self: &Arc<Self>, method: &Method) -> RequestTimer {
        if !self.enabled() {
            return RequestTimer {
                live: None,
                status: 0,
            };
        }
        self.in_flight.inc();
        RequestTimer {
            live: Some(Live {
                metrics: self.clone(),
                method: MethodLabel::of(method),
                started: Instant::now(),
            }),
            status: 0,
        }
    }

    /// A function run hit its timeout.
    pub fn timeout(&self) {
        if self.enabled() {
            self.timeouts.inc();
        }
    }

    /// The watchdog started a long-lived function process again after it had exited (not
    /// its first start), so `fwatchdog_function_restarts_total` counts restarts only.
    pub fn restart(&self) {
        if self.enabled() {
            self.restarts.inc();
        }
    }

    /// The current exposition in the classic Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; an encoder error would only drop the rest.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        to_prometheus_text(&out)
    }

    /// Serves `GET /metrics` on `listener` until the runtime stops. Recording starts as soon
    /// as this is called (not when the returned future is first polled), so no request that
    /// arrives after start-up is missed.
    pub fn serve(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.enabled.store(true, Ordering::Relaxed);
        async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let resp = metrics.respond(&req);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        // A scraper that never finishes its headers must not hold a task.
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), svc);
                    let _ = conn.await;
                });
            }
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.uri().path() != "/metrics" {
            return body::text_response(
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = body::text_response(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let mut resp = Response::new(body::full(self.encode()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(TEXT_CONTENT_TYPE),
        );
        resp
    }
}

/// Turns the OpenMetrics text prometheus-client writes into the classic text format as
/// client_golang writes it. They differ only where this touches: counter families are named
/// with their `_total` suffix in `# HELP`/`# TYPE` (without the rename a classic parser
/// would see samples that match no `# TYPE` and store them untyped), there is no `# UNIT`
/// or `# EOF` line, and whole bucket bounds have no `.0` (`le="1"`, as of-watchdog
/// publishes them, so dashboards that select a bucket by its bound keep matching).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name);
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((kind, rest)) = meta {
            if let Some((name, tail)) = rest.split_once(' ') {
                if counters.contains(&name) {
                    let _ = writeln!(out, "{kind}{name}_total {tail}");
                    continue;
                }
            }
        }
        push_sample(&mut out, line);
        out.push('\n');
    }
    out
}

/// Appends a sample line, writing a whole-number `le` bound without its `.0`.
fn push_sample(out: &mut String, line: &str) {
    if let Some(at) = line.find("le=\"") {
        let value_start = at + 4;
        if let Some(len) = line[value_start..].find('"') {
            let value = &line[value_start..value_start + len];
            if let Some(whole) = value.strip_suffix(".0") {
                if whole.bytes().all(|b| b.is_ascii_digit()) {
                    out.push_str(&line[..value_start]);
                    out.push_str(whole);
                    out.push_str(&line[value_start + len..]);
                    return;
                }
            }
        }
    }
    out.push_str(line);
}

struct Live {
    metrics: Arc<Metrics>,
    method: MethodLabel,
    started: Instant,
}

/// Records one request's code, method and duration when dropped (after its body was sent),
/// and holds its place in `http_requests_in_flight` until then.
pub struct RequestTimer {
    /// `None` when metrics are off: dropping the timer then does nothing.
    live: Option<Live>,
    status: u16,
}

impl RequestTimer {
    /// The response status, known once the handler returned.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        let m = &live.metrics;
        m.in_flight.dec();
        let labels = RequestLabels {
            code: if self.status == 0 {
                CLIENT_CLOSED
            } else {
                self.status
            },
            method: live.method,
        };
        m.requests.get_or_create(&labels).inc();
        m.durations
            .get_or_create(&labels)
            .observe(live.started.elapsed().as_secs_f64());
    }
}

/// The process metrics client_golang's process collector exports, read from `/proc/self` on
/// each scrape (a handful of small reads, nothing on the request path).
#[derive(Debug)]
struct ProcessCollector {
    ticks_per_sec: f64,
    page_size: u64,
    /// Seconds since the epoch when this process started (fixed, so read once).
    start_time: Option<f64>,
}

impl ProcessCollector {
    fn new() -> ProcessCollector {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
        let ticks_per_sec = if ticks > 0 { ticks as f64 } else { 100.0 };
        let page_size = if page > 0 { page as u64 } else { 4096 };
        let start_time = (|| {
            let stat = read_self_stat()?;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
            Some(boot + stat.start_ticks as f64 / ticks_per_sec)
        })();
        ProcessCollector {
            ticks_per_sec,
            page_size,
            start_time,
        }
    }
}

struct SelfStat {
    cpu_ticks: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
    threads: u64,
}

/// Fields of `/proc/self/stat` (see proc(5)); they are counted after the `(comm)` field,
/// whose text may itself contain spaces or parentheses.
fn read_self_stat() -> Option<SelfStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(SelfStat {
        cpu_ticks: num(14)? + num(15)?,
        threads: num(20)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

fn encode_gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(stat) = read_self_stat() {
            let cpu = ConstCounter::new(stat.cpu_ticks as f64 / self.ticks_per_sec);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            encode_gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stat.rss_pages * self.page_size,
            )?;
            encode_gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.vsize,
            )?;
            encode_gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process.",
                stat.threads,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is itself one of the entries; leave it out.
            let open = dir.count().saturating_sub(1);
            encode_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                open as u64,
            )?;
        }
        if let Some(max) = max_open_files() {
            encode_gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        if let Some(start) = self.start_time {
            encode_gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                start,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!m.encode().contains("http_requests_total{"));
        m.enabled.store(true, Ordering::Relaxed);
        let mut t = m.start(&Method::POST);
        assert!(m.encode().contains("http_requests_in_flight 1\n"));
        t.set_status(201);
        drop(t);
        drop(m.start(&Method::GET));
        let text = m.encode();
        assert!(text.contains("http_requests_in_flight 0\n"), "{text}");
        assert!(
            text.contains("# TYPE http_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE http_request_duration_seconds histogram\n"));
        assert!(text.contains("http_requests_total{code=\"201\",method=\"post\"} 1\n"));
        assert!(text.contains("http_requests_total{code=\"499\",method=\"get\"} 1\n"));
        assert!(text.contains("{le=\"0.005\",code=\"201\",method=\"post\"} 1\n"));
        // Whole bounds as client_golang writes them.
        assert!(
            text.contains("{le=\"1\",code=\"201\",method=\"post\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("{le=\"10\",code=\"201\",method=\"post\"} 1\n"));
        assert!(text.contains("{le=\"2.5\",code=\"201\",method=\"post\"} 1\n"));
        assert!(text.contains("{le=\"+Inf\",code=\"201\",method=\"post\"} 1\n"));
    }

    #[test]
    fn classic_format_names_counters_with_total() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            !text.contains("http_requests_total"),
            "no series yet: {text}"
        );
        assert!(text.contains("# TYPE fwatchdog_function_timeouts_total counter\n"));
        assert!(text.contains("fwatchdog_function_timeouts_total 0\n"));
        assert!(text.contains("# TYPE http_requests_in_flight gauge\n"));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
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
                let mut t = m.start(&method);
                t.set_status(if i % 10 == 0 { 500 } else { 200 });
                drop(t);
            }
            let per = started.elapsed().as_nanos() as f64 / f64::from(n);
            println!("metrics enabled={enabled}: {per:.1} ns per request");
        }
    }
}
