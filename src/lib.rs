//! fwatchdog: a tiny function watchdog. [`run`] starts the function (in http mode), binds,
//! serves until SIGTERM, drains, and stops the function.

pub mod admission;
pub mod body;
pub mod busy_poll;
pub mod cgi;
pub mod config;
pub mod error;
pub mod health;
pub mod log;
/// The stderr log buffer under its old name (it is [`log::buffer`] now).
pub use log::buffer as logbuf;
pub mod metrics;
pub mod mode;
pub mod process;
pub mod secrets;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, LogFormat};
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

/// Runs the watchdog until it is told to stop. `Ok` means a clean drain. `inherited` are
/// listeners passed by whoever started the watchdog (see [`listeners`]): the first takes
/// requests instead of binding `PORT`, a second serves metrics instead of `metrics_port`.
pub async fn run(config: Config, inherited: Vec<std::net::TcpListener>) -> Result<(), RunError> {
    let config = Arc::new(config);
    let mut inherited = inherited.into_iter();
    let from_std = |l: std::net::TcpListener, var: &str| {
        TcpListener::from_std(l)
            .map_err(|e| config::ConfigError::new(var, format!("cannot use listener: {e}")))
    };
    let listener = match inherited.next() {
        Some(l) => from_std(l, "LISTEN_FDS")?,
        None => TcpListener::bind(("0.0.0.0", config.port))
            .await
            .map_err(|e| {
                config::ConfigError::new(
                    "PORT",
                    format!("cannot listen on port {}: {e}", config.port),
                )
            })?,
    };
    let metrics_listener = match (inherited.next(), config.metrics_port) {
        (Some(l), _) => Some(from_std(l, "LISTEN_FDS")?),
        (None, Some(port)) => Some(TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| {
            config::ConfigError::new("metrics_port", format!("cannot listen on port {port}: {e}"))
        })?),
        (None, None) => None,
    };
    let lock = (!config.suppress_lock).then(|| config.lock_path());
    let health = Health::new(config.max_inflight, lock);
    let log = LogOptions {
        prefix: config.prefix_logs,
        max_line: config.log_buffer_size,
        format: config.log_format,
    };
    let auth = secrets::Auth::from_config(&config)?;
    let metrics = metrics::Metrics::new();
    let port = listener.local_addr().map_or(config.port, |a| a.port());
    let metrics_port = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    if let Some(listener) = metrics_listener {
        tokio::spawn(metrics.clone().serve(listener));
    }
    let function = Function::new(config.clone(), &health, log)?;
    log_start(&config, port, metrics_port);
    let lock_error = |e: std::io::Error| {
        config::ConfigError::new(
            "TMPDIR",
            format!(
                "cannot write lock file {}: {e}",
                config.lock_path().display()
            ),
        )
    };
    let mut supervisor = match &function {
        Function::Proxy(proxy) => {
            // Ready (and the lock file) come later, once the upstream answers; find out now
            // whether the lock file can be written at all.
            health.check_lock_writable().map_err(lock_error)?;
            Some(proxy.start().map_err(|e| {
                config::ConfigError::new(
                    "fprocess",
                    format!("cannot start {:?}: {e}", config.fprocess[0]),
                )
            })?)
        }
        _ => {
            health.set_ready().map_err(lock_error)?;
            None
        }
    };

    let app = Arc::new(App {
        config: config.clone(),
        health: health.clone(),
        function,
        auth,
        metrics,
    });
    spawn_signal_forwarder(supervisor.as_ref().map(|s| s.pgid))
        .map_err(|e| RunError::Failed(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RunError::Failed(e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| RunError::Failed(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        app.clone(),
        async {
            let _ = stop_rx.await;
        },
        config.write_timeout,
    ));

    let function_exit = async {
        match supervisor.as_mut() {
            Some(s) => (&mut s.exited).await.unwrap_or_default(),
            None => std::future::pending().await,
        }
    };
    let (reason, died) = tokio::select! {
        _ = sigterm.recv() => ("SIGTERM", None),
        _ = sigint.recv() => ("SIGINT", None),
        how = function_exit => ("function exit", Some(how)),
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
    if let Some(s) = supervisor {
        // Only now, after the drain, does the function's group get SIGTERM (then SIGKILL).
        let _ = s.stop.send(());
        let _ = s.done.await;
    }
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
/// They are passed to the function's process group where a long-lived function exists
/// (http mode), as tini and dumb-init do, and otherwise logged and ignored: a fork-mode
/// function lives for one request and has nothing to reload.
fn spawn_signal_forwarder(pgid: Option<i32>) -> std::io::Result<()> {
    use nix::sys::signal::Signal;
    let kinds = [
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
        (SignalKind::quit(), Signal::SIGQUIT),
    ];
    for (kind, sig) in kinds {
        let mut stream = signal(kind)?;
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                match pgid {
                    Some(pg) => {
                        let sent = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), sig);
                        tracing::info!(signal = %sig, ok = sent.is_ok(), "forwarded to the function's process group");
                    }
                    None => {
                        tracing::info!(signal = %sig, "ignored (no long-lived function to forward it to)")
                    }
                }
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
        mode = format!("{:?}", config.mode).to_lowercase(),
        port,
        metrics_port,
        k_service = knative("K_SERVICE"),
        k_revision = knative("K_REVISION"),
        k_configuration = knative("K_CONFIGURATION"),
        "fwatchdog listening"
    );
    tracing::info!(
        fprocess = shell_words::join(&config.fprocess),
        upstream_url = config.upstream.as_ref().map(|u| match u {
            config::Upstream::Tcp { authority, prefix } => format!("http://{authority}{prefix}"),
            config::Upstream::Unix(path) => format!("unix:{}", path.display()),
        }),
        static_path =
            (config.mode == config::Mode::Static).then(|| config.static_path.display().to_string()),
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
}

/// Installs the tracing subscriber for the watchdog's own log lines (stderr).
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(|| logbuf::Writer)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
