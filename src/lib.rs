//! fwatchdog: a tiny function watchdog. [`run`] starts the function (in http mode), binds,
//! serves until SIGTERM, drains, and stops the function.

pub mod admission;
pub mod body;
pub mod cgi;
pub mod config;
pub mod error;
pub mod function;
pub mod health;
pub mod metrics;
pub mod process;
pub mod reaper;
pub mod secrets;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, LogFormat};
use crate::function::Function;
use crate::health::Health;
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

/// Runs the watchdog until it is told to stop. `Ok` means a clean drain.
pub async fn run(config: Config) -> Result<(), RunError> {
    let config = Arc::new(config);
    let listener = TcpListener::bind(("0.0.0.0", config.port))
        .await
        .map_err(|e| {
            config::ConfigError::new(
                "PORT",
                format!("cannot listen on port {}: {e}", config.port),
            )
        })?;
    let lock = (!config.suppress_lock).then(|| config.lock_path());
    let health = Health::new(config.max_inflight, lock);
    let log = LogOptions {
        prefix: config.prefix_logs,
        max_line: config.log_buffer_size,
        format: config.log_format,
    };
    let auth = secrets::Auth::from_config(&config)?;
    let metrics = metrics::Metrics::new();
    if let Some(port) = config.metrics_port {
        let listener = TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| {
            config::ConfigError::new("metrics_port", format!("cannot listen on port {port}: {e}"))
        })?;
        tokio::spawn(metrics.clone().serve(listener));
    }
    let function = Function::new(config.clone(), log)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mode = ?config.mode,
        port = config.port,
        fprocess = ?config.fprocess,
        exec_timeout = ?config.exec_timeout,
        "fwatchdog listening"
    );
    health.set_ready().map_err(|e| {
        config::ConfigError::new(
            "TMPDIR",
            format!(
                "cannot write lock file {}: {e}",
                config.lock_path().display()
            ),
        )
    })?;

    let app = Arc::new(App {
        config: config.clone(),
        health: health.clone(),
        function,
        auth,
        metrics,
    });
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

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    let clean = drain(&health, &config, signal_name).await;
    let _ = stop_tx.send(());
    let _ = server.await;
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

/// Health turns 503 and the lock file goes at once; requests keep being served until nothing
/// is in flight and nothing new arrived for [`DRAIN_QUIET`], or at the latest
/// `healthcheck_interval + write_timeout`. Returns false when requests were still running.
async fn drain(health: &Health, config: &Config, signal_name: &str) -> bool {
    health.start_draining();
    let started = tokio::time::Instant::now();
    let deadline = started + config.healthcheck_interval + config.write_timeout;
    tracing::info!(
        signal = signal_name,
        inflight = health.inflight(),
        "draining"
    );
    loop {
        let quiet = started.elapsed() >= DRAIN_QUIET && health.since_last_arrival() >= DRAIN_QUIET;
        if health.inflight() == 0 && quiet {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return health.inflight() == 0;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Installs the tracing subscriber for the watchdog's own log lines (stderr).
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
