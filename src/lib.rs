//! fwatchdog: a tiny function watchdog. [`run`] starts the mode, serves on the listeners it
//! is given until told to stop, drains, and stops the mode.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod admission;
pub mod alloc;
pub mod body;
pub mod busy_poll;
pub mod cgi;
pub mod config;
pub mod error;
pub mod events;
pub mod health;
pub mod log;
pub mod memcpy;
pub mod metrics;
pub mod mode;
pub mod process;
pub mod secrets;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, ModeConfig};
use crate::health::Health;
use crate::mode::Function;
use crate::process::LogOptions;
use crate::server::App;

/// Why [`run`] stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A start-up problem attributable to a setting (exit code 2).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The function died or the drain was cut short (exit code 1).
    #[error("{0}")]
    Failed(String),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}

/// How long the watchdog waits, once draining, for traffic to stop before it exits.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// Where the watchdog serves: requests, and metrics when enabled.
pub struct Listeners {
    /// Function requests, health and readiness.
    pub http: TcpListener,
    /// `/metrics`, when `metrics_port` is set or a second listener was inherited.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `PORT` (and `metrics_port`) on all addresses, or takes the `inherited`
    /// listeners passed by whoever started the watchdog (see [`server::listeners`]): the
    /// first takes requests, a second serves metrics.
    pub async fn bind(
        config: &Config,
        inherited: Vec<std::net::TcpListener>,
    ) -> Result<Listeners, config::ConfigError> {
        let mut inherited = inherited.into_iter();
        let from_std = |l: std::net::TcpListener| {
            TcpListener::from_std(l).map_err(|e| {
                config::ConfigError::new("LISTEN_FDS", format!("cannot use listener: {e}"))
            })
        };
        let bind = |var: &'static str, port: u16| async move {
            TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| {
                config::ConfigError::new(var, format!("cannot listen on port {port}: {e}"))
            })
        };
        let http = match inherited.next() {
            Some(l) => from_std(l)?,
            None => bind("PORT", config.port).await?,
        };
        let metrics = match (inherited.next(), config.metrics_port) {
            (Some(l), _) => Some(from_std(l)?),
            (None, Some(port)) => Some(bind("metrics_port", port).await?),
            (None, None) => None,
        };
        Ok(Listeners { http, metrics })
    }
}

/// SIGTERM or SIGINT, whichever comes first: the `shutdown` the binary gives [`run`].
pub fn stop_signals() -> std::io::Result<impl Future<Output = &'static str>> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        }
    })
}

/// Runs the watchdog on `listeners` until `shutdown` resolves (with the reason it gives)
/// or the mode's long-lived function exits, then drains and stops the mode. `Ok` means a
/// clean drain.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = &'static str>,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let lock = (!config.suppress_lock).then(|| config.lock_path());
    let health = Health::new(config.max_inflight, lock);
    let shared = mode::Shared {
        health: health.clone(),
        log: LogOptions {
            prefix: config.prefix_logs,
            max_line: config.log_buffer_size,
            format: config.log_format,
        },
        metrics: metrics::Metrics::new(),
    };
    let auth = secrets::Auth::from_config(&config)?;
    let port = listeners
        .http
        .local_addr()
        .map_or(config.port, |a| a.port());
    let metrics_port = listeners
        .metrics
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    if let Some(listener) = listeners.metrics {
        tokio::spawn(shared.metrics.clone().serve(listener));
    }
    let function = Function::new(config.clone(), &shared)?;
    log_start(&config, port, metrics_port);
    function.start(&health)?;

    let app = Arc::new(App {
        config: config.clone(),
        health: health.clone(),
        function,
        auth,
        metrics: shared.metrics,
    });
    spawn_signal_forwarder(app.clone()).map_err(|e| RunError::Failed(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listeners.http,
        app.clone(),
        async {
            let _ = stop_rx.await;
        },
        config.write_timeout,
    ));

    let (reason, died) = tokio::select! {
        reason = shutdown => (reason, None),
        how = app.function.exited() => ("function exit", Some(how)),
    };
    let clean = match died {
        // Nothing new can be served once the function is gone, so no quiet period: requests
        // already in flight finish, then the platform restarts the container.
        Some(_) => drain(&health, Duration::ZERO, config.write_timeout, reason).await,
        None => {
            let window = config
                .healthcheck_interval
                .saturating_add(config.write_timeout);
            drain(&health, DRAIN_QUIET, window, reason).await
        }
    };
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Some(how) = died {
        return Err(RunError::Failed(format!("function process exited ({how})")));
    }
    // Only now, after the drain, do the mode's processes get SIGTERM (then SIGKILL).
    app.function.shutdown().await;
    if clean {
        tracing::info!("drained, exiting");
        Ok(())
    } else {
        Err(RunError::Failed(format!(
            "{} request(s) still in flight at the drain deadline",
            health.inflight()
        )))
    }
}

/// SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT would end the watchdog without a drain (their
/// default action), so a log-rotation signal or a stray `kill -HUP 1` became an outage.
/// The mode decides what they mean ([`Function::signal`]).
fn spawn_signal_forwarder(app: Arc<App>) -> std::io::Result<()> {
    use nix::sys::signal::Signal;
    let kinds = [
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
        (SignalKind::quit(), Signal::SIGQUIT),
    ];
    for (kind, sig) in kinds {
        let mut stream = signal(kind)?;
        let app = app.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                app.function.signal(sig);
            }
        });
    }
    Ok(())
}

/// Health turns 503 and the lock file goes at once; requests keep being served until nothing
/// is in flight and nothing new arrived for `quiet`, or at the latest after `window`.
/// Returns false when requests were still running.
async fn drain(health: &Health, quiet: Duration, window: Duration, reason: &str) -> bool {
    health.start_draining();
    let started = tokio::time::Instant::now();
    let deadline = started.checked_add(window).unwrap_or(started);
    tracing::info!(reason, inflight = health.inflight(), "draining");
    loop {
        let quiet = started.elapsed() >= quiet && health.since_last_arrival() >= quiet;
        if health.inflight() == 0 && quiet {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return health.inflight() == 0;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The start event and a summary of the effective settings. Secrets appear by name only:
/// their values are never read here.
fn log_start(config: &Config, port: u16, metrics_port: u16) {
    let secs = |d: Duration| humantime::format_duration(d).to_string();
    // Knative names the service, revision and configuration in the environment: the line
    // that says which one this is saves a lookup when reading logs of many revisions.
    let knative = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mode = config.mode.name(),
        port,
        metrics_port,
        k_service = knative("K_SERVICE"),
        k_revision = knative("K_REVISION"),
        k_configuration = knative("K_CONFIGURATION"),
        ignored_settings = (!config.ignored.is_empty()).then(|| config.ignored.join(",")),
        "fwatchdog listening"
    );
    tracing::info!(
        fprocess = config.function.fprocess().map(config::Argv::to_shell),
        upstream_url = match &config.function {
            ModeConfig::Http(h) => Some(match &h.upstream {
                config::Upstream::Tcp { authority, prefix } =>
                    format!("http://{authority}{prefix}"),
                config::Upstream::Unix(path) => format!("unix:{}", path.display()),
            }),
            _ => None,
        },
        workers = match &config.function {
            ModeConfig::Worker(w) => Some(w.workers),
            _ => None,
        },
        static_path = match &config.function {
            ModeConfig::Static(s) => Some(s.static_path.display().to_string()),
            _ => None,
        },
        read_timeout = secs(config.read_timeout),
        write_timeout = secs(config.write_timeout),
        exec_timeout = secs(config.exec_timeout.unwrap_or_default()),
        healthcheck_interval = secs(config.healthcheck_interval),
        busy_poll = secs(busy_poll::budget()),
        read_header_timeout = secs(config.read_header_timeout),
        idle_timeout = secs(config.idle_timeout),
        max_connections = config.max_connections,
        max_inflight = config.max_inflight,
        max_body_size = config.max_body_size,
        log_format = format!("{:?}", config.log_format).to_lowercase(),
        secrets = (!config.secrets.is_empty()).then(|| config.secrets.join(",")),
        api_key_secret = config.api_key_secret.as_deref(),
        hmac_secret = config.hmac_secret.as_deref(),
        "config"
    );
    if !config.ignored.is_empty() {
        tracing::warn!(
            mode = config.mode.name(),
            settings = config.ignored.join(","),
            "settings given that this mode does not read; they have no effect"
        );
    }
}
