//! Prometheus metrics on `metrics_port`. (Skeleton: completed in the metrics issue.)

use std::sync::Arc;

use http::Method;
use tokio::net::TcpListener;

/// The metric families the watchdog publishes.
#[derive(Default)]
pub struct Metrics {}

impl Metrics {
    /// A new registry.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts a function request as in flight until the returned timer is dropped.
    pub fn start(self: &Arc<Self>, method: &Method) -> RequestTimer {
        RequestTimer {
            _metrics: self.clone(),
            _method: method.clone(),
            status: 0,
        }
    }

    /// A function run hit its timeout.
    pub fn timeout(&self) {}

    /// The http-mode function process was (re)started.
    pub fn restart(&self) {}

    /// Serves `/metrics` on `listener` forever.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        drop(listener);
    }
}

/// Records one request's code, method and duration when dropped (after its body was sent).
pub struct RequestTimer {
    _metrics: Arc<Metrics>,
    _method: Method,
    status: u16,
}

impl RequestTimer {
    /// The response status, known once the handler returned.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}
