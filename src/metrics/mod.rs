//! Prometheus metrics on `metrics_port`, with of-watchdog's names, labels, help texts and
//! buckets so existing dashboards and alerts keep working across a swap of watchdogs:
//! `http_requests_total{code,method}`, `http_request_duration_seconds{code,method}` and
//! `http_requests_in_flight`, plus our own `fwatchdog_function_timeouts_total`,
//! `fwatchdog_function_restarts_total` and the process metrics.
//!
//! Everything is the `prometheus` crate used as designed: its metric types, its registry,
//! its process collector (`process` feature) and its `TextEncoder`, which writes the classic
//! text format (version 0.0.4) as client_golang does. That format, not OpenMetrics, is what
//! of-watchdog serves: OpenMetrics spells bucket bounds `le="1.0"` where classic has
//! `le="1"`, and Prometheus 2 keeps those as different series, so a swap would split every
//! dashboard that selects a bucket.
//!
//! The process collector is the library's, with its limits: it reads `/proc/self` at
//! scrape time into integer metrics, so `process_cpu_seconds_total` and
//! `process_start_time_seconds` move in whole seconds (client_golang's have 10 ms), it adds
//! `process_threads`, and it has no `process_virtual_memory_max_bytes` or
//! `process_network_*_bytes_total`. The names and help texts it does export are
//! client_golang's.
//!
//! The request path only touches atomics and, per family, one read-locked hash lookup of
//! the `{code, method}` child. Nothing is recorded until [`Metrics::serve`] has been called,
//! so `metrics_port=0` costs one relaxed atomic load per request.

mod method;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::body::{self, Body};

pub use method::MethodLabel;

/// client_golang's `prometheus.DefBuckets`, which of-watchdog uses for request durations.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Content type of the classic Prometheus text format: the encoder's own
/// [`prometheus::TEXT_FORMAT`] with the charset promhttp adds. It is the only format served,
/// whatever the scraper's `Accept` says, as of-watchdog does (promhttp without OpenMetrics).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status recorded for a request whose handler was dropped before it produced a response
/// (the client hung up). nginx's "client closed request"; promhttp has no equivalent because
/// Go handlers are never cancelled.
pub const CLIENT_CLOSED: u16 = 499;

/// Label names of the request families, in promhttp's (sorted) order.
const REQUEST_LABELS: [&str; 2] = ["code", "method"];

/// The metric families the watchdog publishes.
pub struct Metrics {
    registry: Registry,
    /// Set once a listener serves the metrics; until then nothing is recorded.
    enabled: AtomicBool,
    requests: IntCounterVec,
    durations: HistogramVec,
    in_flight: IntGauge,
    timeouts: IntCounter,
    restarts: IntCounter,
    workers_started: IntCounter,
    workers_busy: IntGauge,
    worker_wait: prometheus::Histogram,
}

impl Metrics {
    /// A new registry with every family registered (all zero, no series yet).
    pub fn new() -> Arc<Metrics> {
        // Help texts of the request families are of-watchdog's (metrics/http.go), byte for
        // byte, so a scrape of either watchdog carries the same metadata.
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "total HTTP requests processed"),
            &REQUEST_LABELS,
        )
        .expect("valid counter options");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Seconds spent serving HTTP requests.",
            )
            .buckets(DEFAULT_BUCKETS.to_vec()),
            &REQUEST_LABELS,
        )
        .expect("valid histogram options");
        let in_flight = IntGauge::new("http_requests_in_flight", "total HTTP requests in-flight")
            .expect("valid gauge options");
        let timeouts = IntCounter::new(
            "fwatchdog_function_timeouts_total",
            "Function runs stopped by exec_timeout.",
        )
        .expect("valid counter options");
        let restarts = IntCounter::new(
            "fwatchdog_function_restarts_total",
            "Restarts of the long-lived function process by the watchdog.",
        )
        .expect("valid counter options");

        let workers_started = IntCounter::new(
            "fwatchdog_workers_started_total",
            "Worker processes started (worker mode), the first ones included.",
        )
        .expect("valid counter options");
        let workers_busy = IntGauge::new(
            "fwatchdog_workers_busy",
            "Worker processes handling a request now (worker mode).",
        )
        .expect("valid gauge options");
        let worker_wait = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "fwatchdog_worker_queue_wait_seconds",
                "Seconds a request waited for a free worker (worker mode).",
            )
            .buckets(DEFAULT_BUCKETS.to_vec()),
        )
        .expect("valid histogram options");

        let registry = Registry::new();
        // Registration fails only on a clash of names or descriptors, which would be a bug
        // in the constants above (the unit tests build this registry).
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        register(Box::new(requests.clone()));
        register(Box::new(durations.clone()));
        register(Box::new(in_flight.clone()));
        register(Box::new(timeouts.clone()));
        register(Box::new(restarts.clone()));
        register(Box::new(workers_started.clone()));
        register(Box::new(workers_busy.clone()));
        register(Box::new(worker_wait.clone()));
        register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Arc::new(Metrics {
            registry,
            enabled: AtomicBool::new(false),
            requests,
            durations,
            in_flight,
            timeouts,
            restarts,
            workers_started,
            workers_busy,
            worker_wait,
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

    /// A worker process was started (worker mode).
    pub fn worker_started(&self) {
        if self.enabled() {
            self.workers_started.inc();
        }
    }

    /// A worker was taken for a request after waiting `waited` for it.
    pub fn worker_taken(&self, waited: std::time::Duration) {
        if self.enabled() {
            self.workers_busy.inc();
            self.worker_wait.observe(waited.as_secs_f64());
        }
    }

    /// A worker is done with its request (given back, or lost).
    pub fn worker_done(&self) {
        if self.enabled() {
            self.workers_busy.dec();
        }
    }

    /// The current exposition in the classic Prometheus text format (version 0.0.4).
    /// Families with labels print nothing until their first series exists, as in
    /// client_golang.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Encoding fails only on an invalid family (a bug caught by the unit tests);
        // the scrape then stops there rather than taking the watchdog down.
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
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

    /// The metrics listener's answer; generic over the body so tests can call it.
    fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.uri().path() != "/metrics" {
            return body::text_response(
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return crate::error::Error::MethodNotAllowed {
                allow: "GET, HEAD",
                why: "use GET or HEAD",
            }
            .into_response();
        }
        let mut resp = Response::new(body::full(self.encode()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(TEXT_CONTENT_TYPE),
        );
        resp
    }
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
        let code = if self.status == 0 {
            CLIENT_CLOSED
        } else {
            self.status
        };
        // `http`'s static digits for a real status, so recording allocates nothing; any
        // other number (not a status hyper produces) is written out as promhttp would.
        let status = StatusCode::from_u16(code);
        let other;
        let code = match &status {
            Ok(s) => s.as_str(),
            Err(_) => {
                other = code.to_string();
                &other
            }
        };
        let labels = [code, live.method.as_str()];
        m.requests.with_label_values(&labels).inc();
        m.durations
            .with_label_values(&labels)
            .observe(live.started.elapsed().as_secs_f64());
    }
}
