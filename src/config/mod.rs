//! Configuration: every setting in the one table ([`table`]) is read through a [`Lookup`],
//! validated, and turned into a typed [`Config`]: the settings every mode reads, and the
//! chosen mode's own in a type of their own ([`ModeConfig`]). Nothing falls back silently:
//! a bad value is a [`ConfigError`] naming the variable, which `main` turns into exit code
//! 2; a setting given that the chosen mode does not read is listed in [`Config::ignored`]
//! and warned about at start.

mod cloudevents;
mod modes;
mod parse;
pub mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where setting values come from. The process environment in `main`, a map in tests, so
/// tests never mutate the process environment.
pub trait Lookup {
    /// The raw value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Command-line overrides layered over another lookup: `--exec-timeout 5s` wins over
/// `exec_timeout=10s` in the environment.
pub struct Layered<'a> {
    /// Values given on the command line, keyed by env name.
    pub flags: &'a HashMap<String, String>,
    /// What to consult when a flag is absent.
    pub base: &'a dyn Lookup,
}

impl Lookup for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.flags
            .get(name)
            .cloned()
            .or_else(|| self.base.get(name))
    }
}

/// A setting that could not be accepted. The message always starts with the variable name.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The env name of the offending setting.
    pub var: String,
    /// What is wrong with it, in a few words.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `var`.
    pub fn new(var: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_string(),
            reason: reason.into(),
        }
    }
}

/// The `busy_poll` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPoll {
    /// Chosen at start from the mode and the CPUs available (see `busy_poll::resolve`).
    Auto,
    /// This long (zero: off).
    Budget(Duration),
}

/// How requests reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fork per request, body piped through without buffering.
    Streaming,
    /// Fork per request, body and output buffered; exit code decides 200/500.
    Serializing,
    /// One long-lived upstream process behind a reverse proxy.
    Http,
    /// Fork per request with the body written to a file whose path is the last argument.
    File,
    /// Serve files from `static_path`.
    Static,
    /// A pool of long-lived processes speaking the worker protocol over pipes.
    Worker,
}

impl Mode {
    /// The mode's name as `mode=` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Streaming => "streaming",
            Mode::Serializing => "serializing",
            Mode::Http => "http",
            Mode::File => "file",
            Mode::Static => "static",
            Mode::Worker => "worker",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "streaming" => Mode::Streaming,
            "serializing" => Mode::Serializing,
            "http" => Mode::Http,
            "file" => Mode::File,
            "static" => Mode::Static,
            "worker" => Mode::Worker,
            _ => return None,
        })
    }

    /// True for modes that start a process per request.
    pub fn forks_per_request(self) -> bool {
        matches!(self, Mode::Streaming | Mode::Serializing | Mode::File)
    }
}

/// Format of the watchdog's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the http-mode upstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `http://host:port[/prefix]`.
    Tcp {
        /// `host:port` to connect to.
        authority: String,
        /// Path prefix prepended to every request path (no trailing slash).
        prefix: String,
    },
    /// `unix:/path/to.sock`.
    Unix(PathBuf),
}

pub use cloudevents::CloudEvents;
pub use modes::{Argv, ForkConfig, HttpConfig, ModeConfig, StaticConfig, WorkerConfig};
pub use parse::{parse_bool, parse_duration, MAX_DURATION};
pub use table::{help_text, Setting, SETTINGS};

use parse::{parse_port, parse_upstream, valid_secret_name, Reader};
use table as t;

/// The validated configuration: what every mode reads, then the mode's own settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How requests reach the function.
    pub mode: Mode,
    /// The mode's own settings.
    pub function: ModeConfig,
    /// Settings that were given but that this mode does not read, by name.
    pub ignored: Vec<&'static str>,
    /// Listen port.
    pub port: u16,
    /// Max time to read headers and body.
    pub read_timeout: Duration,
    /// Max time a write to the client may stall.
    pub write_timeout: Duration,
    /// Max time for a new connection's first request head.
    pub read_header_timeout: Duration,
    /// Max time a connection stays open with nothing in flight.
    pub idle_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Per-request run time limit; `None` = no limit.
    pub exec_timeout: Option<Duration>,
    /// Drain window after SIGTERM.
    pub healthcheck_interval: Duration,
    /// Concurrent request limit; 0 = none.
    pub max_inflight: usize,
    /// Body limit in bytes; 0 = default for the mode.
    pub max_body_size: u64,
    /// Request header block limit in bytes.
    pub max_header_bytes: usize,
    /// Prefix function log lines.
    pub prefix_logs: bool,
    /// Longest log line kept whole.
    pub log_buffer_size: usize,
    /// Own log format.
    pub log_format: LogFormat,
    /// Do not write the lock file.
    pub suppress_lock: bool,
    /// Metrics port; `None` = off.
    pub metrics_port: Option<u16>,
    /// RAW_BODY as a boolean (the raw value is passed to the function unchanged via its env).
    pub raw_body: bool,
    /// Secrets folder.
    pub secret_mount_path: PathBuf,
    /// Secrets required at start.
    pub secrets: Vec<String>,
    /// Name of the API-key secret.
    pub api_key_secret: Option<String>,
    /// Name of the HMAC secret.
    pub hmac_secret: Option<String>,
    /// Bytes all requests together may hold while their HMAC is checked.
    pub hmac_buffer_limit: u64,
    /// Scratch folder (`TMPDIR`, default `/tmp`).
    pub tmpdir: PathBuf,
    /// How long an idle runtime thread keeps polling before it sleeps, or `auto`.
    pub busy_poll: BusyPoll,
    /// CloudEvents decoding and replies; `None` when `cloudevents` is off.
    pub cloudevents: Option<CloudEvents>,
}

/// Longest `log_buffer_size` accepted (16 MiB).
pub const MAX_LOG_LINE: usize = 16 * 1024 * 1024;

/// `max_connections=auto`: half the open-descriptor limit (the rest is for the function's
/// pipes, its upstream connections and files), at most 10,000.
pub fn auto_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 10_000)
}

/// Most workers `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// `workers=auto`: one per CPU the watchdog may use (affinity and cgroup quota counted,
/// as `busy_poll=auto` counts them).
pub fn auto_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Bodies held in memory are capped at this when `max_body_size` is 0.
pub const DEFAULT_BUFFERED_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// `true` when `value` lies in `range`, with the message otherwise.
fn within<T: PartialOrd + std::fmt::Display>(
    var: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            var,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

impl Config {
    /// Reads and validates every setting. `command` (from `-- CMD ARGS`) overrides `fprocess`.
    pub fn from_lookup(
        lookup: &dyn Lookup,
        command: Option<Vec<String>>,
    ) -> Result<Config, ConfigError> {
        let r = Reader { lookup };
        let classic = r.required(&t::COMPAT, |v| match v {
            "none" | "" => Ok(false),
            "classic" => Ok(true),
            _ => Err(format!("unknown compat {v:?} (use classic or none)")),
        })?;
        // The classic watchdog buffers: with compat=classic an unset mode is serializing.
        let mode = if classic && r.raw(&t::MODE).is_none() {
            Mode::Serializing
        } else {
            r.required_mode()?
        };
        let function = match mode {
            Mode::Streaming | Mode::Serializing | Mode::File => ModeConfig::Fork(ForkConfig {
                fprocess: read_fprocess(&r, command)?,
                // Classic: no configured Content-Type means the request's is echoed.
                content_type: match (classic, r.raw(&t::CONTENT_TYPE)) {
                    (true, None) => String::new(),
                    _ => r.string(&t::CONTENT_TYPE).unwrap_or_default(),
                },
                cgi_headers: r.bool(&t::CGI_HEADERS)?,
                cgi_response: r.bool(&t::CGI_RESPONSE)?,
                // Classic's combine_output defaults to true.
                combine_output: match (classic, r.raw(&t::COMBINE_OUTPUT)) {
                    (true, None) => true,
                    _ => r.bool(&t::COMBINE_OUTPUT)?,
                },
                classic,
            }),
            Mode::Http => {
                let fprocess = read_fprocess(&r, command)?;
                let (var, url) = r
                    .raw(&t::UPSTREAM_URL)
                    .filter(|(_, v)| !v.trim().is_empty())
                    .ok_or_else(|| ConfigError::new("upstream_url", "is required in http mode"))?;
                let upstream =
                    parse_upstream(url.trim()).map_err(|why| ConfigError::new(var, why))?;
                let ready_path = match r.string(&t::READY_PATH) {
                    Some(p) if !p.starts_with('/') => {
                        return Err(ConfigError::new(
                            "ready_path",
                            format!("{p:?} must start with /"),
                        ))
                    }
                    other => other,
                };
                ModeConfig::Http(HttpConfig {
                    fprocess,
                    upstream,
                    upstream_h2c: url.trim().starts_with("h2c://"),
                    ready_path,
                    buffer_http: r.bool(&t::BUFFER_HTTP)?,
                })
            }
            Mode::Static => ModeConfig::Static(StaticConfig {
                static_path: PathBuf::from(r.string(&t::STATIC_PATH).unwrap_or_default()),
            }),
            Mode::Worker => ModeConfig::Worker(WorkerConfig {
                fprocess: read_fprocess(&r, command)?,
                workers: r.number_or_auto(
                    &t::WORKERS,
                    auto_workers,
                    |n: &usize| (1..=MAX_WORKERS).contains(n),
                    "a number from 1 to 1024",
                )?,
                worker_max_requests: r.number(&t::WORKER_MAX_REQUESTS)?,
                content_type: r.string(&t::CONTENT_TYPE).unwrap_or_default(),
                cgi_headers: r.bool(&t::CGI_HEADERS)?,
            }),
        };
        let ignored = SETTINGS
            .iter()
            .filter(|s| !s.applies_to(mode))
            .filter(|s| r.raw(s).is_some_and(|(_, v)| !v.trim().is_empty()))
            .map(|s| s.name)
            .collect();

        let port = r.required_port(&t::PORT, false)?;
        let metrics_port = Some(r.required_port(&t::METRICS_PORT, true)?).filter(|p| *p != 0);

        let read_timeout = r.duration(&t::READ_TIMEOUT)?;
        let write_timeout = r.duration(&t::WRITE_TIMEOUT)?;
        // A head is part of the request, so read_timeout bounds it too.
        let read_header_timeout = r.duration(&t::READ_HEADER_TIMEOUT)?.min(read_timeout);
        let idle_timeout = r.duration(&t::IDLE_TIMEOUT)?;
        for (name, d) in [
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout),
            ("read_header_timeout", read_header_timeout),
            ("idle_timeout", idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(name, "must be greater than 0"));
            }
        }
        let exec_timeout = Some(r.duration(&t::EXEC_TIMEOUT)?).filter(|d| !d.is_zero());
        // The table's default names another setting (as ce_source's names its source).
        let healthcheck_interval = match r.raw(&t::HEALTHCHECK_INTERVAL) {
            None => write_timeout,
            Some(_) => r.duration(&t::HEALTHCHECK_INTERVAL)?,
        };
        let busy_poll = r.required(&t::BUSY_POLL, |v| {
            if v.eq_ignore_ascii_case("auto") {
                return Ok(BusyPoll::Auto);
            }
            let d = parse_duration(v)?;
            if d > Duration::from_millis(1) {
                // Longer spins buy nothing (a sleeping thread wakes in tens of
                // microseconds) and would hold timers back.
                return Err("must be at most 1ms".into());
            }
            Ok(BusyPoll::Budget(d))
        })?;

        let log_format = r.required(&t::LOG_FORMAT, |v| match v {
            "text" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{v:?} is not text or json")),
        })?;
        // Each log stream holds a buffer this big: a huge value would be an allocation
        // failure (an abort), not a setting.
        let log_buffer_size = within(
            "log_buffer_size",
            r.number(&t::LOG_BUFFER_SIZE)?,
            64..=MAX_LOG_LINE,
        )?;
        let max_header_bytes = within(
            "max_header_bytes",
            r.number(&t::MAX_HEADER_BYTES)?,
            1024..=1024 * 1024,
        )?;
        let max_connections = r.number_or_auto(
            &t::MAX_CONNECTIONS,
            auto_max_connections,
            |n: &usize| *n > 0,
            "a positive number",
        )?;

        let secrets = r
            .string(&t::SECRETS)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let api_key_secret = r.string(&t::API_KEY_SECRET);
        let hmac_secret = r.string(&t::HMAC_SECRET);
        for (var, name) in secrets
            .iter()
            .map(|s| ("secrets", s))
            .chain(api_key_secret.iter().map(|s| ("api_key_secret", s)))
            .chain(hmac_secret.iter().map(|s| ("hmac_secret", s)))
        {
            if !valid_secret_name(name) {
                return Err(ConfigError::new(
                    var,
                    format!("{name:?} is not a valid secret name"),
                ));
            }
        }

        Ok(Config {
            mode,
            function,
            ignored,
            port,
            read_timeout,
            write_timeout,
            read_header_timeout,
            idle_timeout,
            max_connections,
            exec_timeout,
            healthcheck_interval,
            busy_poll,
            max_inflight: r.number(&t::MAX_INFLIGHT)?,
            max_body_size: r.number(&t::MAX_BODY_SIZE)?,
            max_header_bytes,
            prefix_logs: r.bool(&t::PREFIX_LOGS)?,
            log_buffer_size,
            log_format,
            suppress_lock: r.bool(&t::SUPPRESS_LOCK)?,
            metrics_port,
            raw_body: r.bool(&t::RAW_BODY)?,
            secret_mount_path: PathBuf::from(r.string(&t::SECRET_MOUNT_PATH).unwrap_or_default()),
            secrets,
            api_key_secret,
            hmac_secret,
            hmac_buffer_limit: r.number(&t::HMAC_BUFFER_LIMIT)?,
            tmpdir: PathBuf::from(r.string(&t::TMPDIR).unwrap_or_default()),
            cloudevents: cloudevents::read(&r, mode)?,
        })
    }

    /// The body limit where the body must be held in memory.
    pub fn buffered_body_limit(&self) -> u64 {
        if self.max_body_size == 0 {
            DEFAULT_BUFFERED_BODY_LIMIT
        } else {
            self.max_body_size
        }
    }

    /// The lock file written once ready.
    pub fn lock_path(&self) -> PathBuf {
        self.tmpdir.join(".lock")
    }
}

/// The command: `-- CMD ARGS` wins, then `function_process` (as in of-watchdog), then
/// `fprocess`, split like a POSIX shell.
fn read_fprocess(r: &Reader<'_>, command: Option<Vec<String>>) -> Result<Argv, ConfigError> {
    if let Some(argv) = command.and_then(Argv::new) {
        return Ok(argv);
    }
    let given = ["function_process", "fprocess"].into_iter().find_map(|n| {
        r.lookup
            .get(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n, v))
    });
    let Some((var, v)) = given else {
        return Err(ConfigError::new(
            "fprocess",
            "is required in this mode (set fprocess or give the command after --)",
        ));
    };
    let words = shell_words::split(&v)
        .map_err(|e| ConfigError::new(var, format!("cannot split {v:?}: {e}")))?;
    Argv::new(words).ok_or_else(|| ConfigError::new(var, "is empty"))
}

impl Reader<'_> {
    fn required_mode(&self) -> Result<Mode, ConfigError> {
        self.required(&t::MODE, |v| {
            Mode::parse(v).ok_or_else(|| {
                format!(
                    "unknown mode {v:?} (use streaming, serializing, http, file, static or worker)"
                )
            })
        })
    }

    fn required_port(&self, s: &Setting, allow_zero: bool) -> Result<u16, ConfigError> {
        self.required(s, |v| parse_port(v, allow_zero))
    }
}
