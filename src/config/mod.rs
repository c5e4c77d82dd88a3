//! Configuration: every setting is read through a [`Lookup`], validated, and turned into a
//! typed [`Config`]. Nothing falls back silently: a bad value is a [`ConfigError`] naming
//! the variable, which `main` turns into exit code 2.

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
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "streaming" => Mode::Streaming,
            "serializing" => Mode::Serializing,
            "http" => Mode::Http,
            "file" => Mode::File,
            "static" => Mode::Static,
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

/// One documented setting: its env name, aliases, default and meaning (for `--help`).
pub struct Setting {
    /// The env name (flags use it with `_` turned into `-`).
    pub name: &'static str,
    /// Older names accepted too (the first one set wins after `name`).
    pub aliases: &'static [&'static str],
    /// The default, as shown in `--help`.
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// Every setting the watchdog reads, in `--help` order.
pub const SETTINGS: &[Setting] = &[
    Setting { name: "mode", aliases: &[], default: "streaming", help: "streaming | serializing | http | file | static" },
    Setting { name: "fprocess", aliases: &["function_process"], default: "-", help: "function command, split like a POSIX shell (or give it after --)" },
    Setting { name: "PORT", aliases: &["port"], default: "8080", help: "listen port (Knative's PORT wins over port)" },
    Setting { name: "read_timeout", aliases: &[], default: "30s", help: "max time to read a request's headers and body" },
    Setting { name: "read_header_timeout", aliases: &[], default: "10s", help: "max time for a new connection's first request head to arrive" },
    Setting { name: "idle_timeout", aliases: &[], default: "60s", help: "close a connection with nothing in flight after this long (HTTP/1.1 and HTTP/2)" },
    Setting { name: "max_connections", aliases: &[], default: "auto", help: "open client connections, new ones closed beyond (auto = half the descriptor limit, at most 10000)" },
    Setting { name: "LISTEN_FDS", aliases: &[], default: "-", help: "socket activation: serve descriptor 3 (and 4 for metrics) instead of binding ports" },
    Setting { name: "write_timeout", aliases: &[], default: "30s", help: "max time a write to the client may stall" },
    Setting { name: "exec_timeout", aliases: &[], default: "30s", help: "max run time of the function per request (0 = none)" },
    Setting { name: "healthcheck_interval", aliases: &[], default: "write_timeout", help: "drain window after SIGTERM" },
    Setting { name: "max_inflight", aliases: &[], default: "0", help: "concurrent requests, 429 beyond (0 = no limit)" },
    Setting { name: "max_header_bytes", aliases: &[], default: "65536", help: "request header block limit in bytes, 431 beyond (1 KiB to 1 MiB)" },
    Setting { name: "max_body_size", aliases: &[], default: "0", help: "request body limit in bytes, 413 beyond (0 = none when streamed, 64 MiB when held in memory)" },
    Setting { name: "upstream_url", aliases: &["http_upstream_url"], default: "-", help: "http mode: http://127.0.0.1:PORT, h2c://127.0.0.1:PORT or unix:/path.sock" },
    Setting { name: "ready_path", aliases: &[], default: "-", help: "http mode: upstream readiness path" },
    Setting { name: "buffer_http", aliases: &["http_buffer_req_body"], default: "false", help: "http mode: buffer bodies and send Content-Length" },
    Setting { name: "content_type", aliases: &[], default: "application/octet-stream", help: "fork modes: response Content-Type" },
    Setting { name: "cgi_headers", aliases: &[], default: "true", help: "fork and file modes: request metadata as Http_* env vars" },
    Setting { name: "cgi_response", aliases: &[], default: "false", help: "fork and file modes: stdout may start with CGI response headers" },
    Setting { name: "combine_output", aliases: &[], default: "false", help: "fork modes: stderr goes into the response too" },
    Setting { name: "prefix_logs", aliases: &[], default: "true", help: "prefix function log lines with time and stream" },
    Setting { name: "log_buffer_size", aliases: &[], default: "65536", help: "longest function log line kept whole; longer ones are split" },
    Setting { name: "log_format", aliases: &[], default: "text", help: "text | json (the watchdog's own logs)" },
    Setting { name: "suppress_lock", aliases: &[], default: "false", help: "do not write $TMPDIR/.lock" },
    Setting { name: "static_path", aliases: &[], default: "/home/app/public", help: "static mode: folder served" },
    Setting { name: "metrics_port", aliases: &[], default: "8081", help: "Prometheus /metrics port (0 = off)" },
    Setting { name: "RAW_BODY", aliases: &[], default: "false", help: "hand the body to the function byte for byte" },
    Setting { name: "secret_mount_path", aliases: &[], default: "/var/openfaas/secrets", help: "where secrets are read from" },
    Setting { name: "secrets", aliases: &[], default: "-", help: "comma list of secrets that must exist at start" },
    Setting { name: "api_key_secret", aliases: &[], default: "-", help: "secret whose value every request must present" },
    Setting { name: "hmac_secret", aliases: &[], default: "-", help: "secret that signs request bodies (X-Hub-Signature-256)" },
    Setting { name: "hmac_buffer_limit", aliases: &[], default: "134217728", help: "bytes all requests together may hold while their HMAC is checked (503 beyond)" },
    Setting { name: "TMPDIR", aliases: &[], default: "/tmp", help: "lock file and file-mode scratch space" },
    Setting { name: "busy_poll", aliases: &[], default: "auto", help: "keep polling this long before sleeping (e.g. 100us, max 1ms): less latency, more CPU; 0 = off; auto = 100us in http mode with 2+ CPUs" },
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How requests reach the function.
    pub mode: Mode,
    /// The function command (empty only in static mode).
    pub fprocess: Vec<String>,
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
    /// http mode: where the function listens.
    pub upstream: Option<Upstream>,
    /// http mode: speak HTTP/2 with prior knowledge to the upstream (`h2c://`).
    pub upstream_h2c: bool,
    /// http mode: readiness path on the upstream.
    pub ready_path: Option<String>,
    /// http mode: buffer request bodies.
    pub buffer_http: bool,
    /// Fork modes: response Content-Type.
    pub content_type: String,
    /// Fork modes: pass request metadata as `Http_*`.
    pub cgi_headers: bool,
    /// Fork modes: parse CGI headers from stdout.
    pub cgi_response: bool,
    /// Fork modes: stderr into the response.
    pub combine_output: bool,
    /// Prefix function log lines.
    pub prefix_logs: bool,
    /// Longest log line kept whole.
    pub log_buffer_size: usize,
    /// Own log format.
    pub log_format: LogFormat,
    /// Do not write the lock file.
    pub suppress_lock: bool,
    /// Static mode root.
    pub static_path: PathBuf,
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

/// Bodies held in memory are capped at this when `max_body_size` is 0.
pub const DEFAULT_BUFFERED_BODY_LIMIT: u64 = 64 * 1024 * 1024;

struct Reader<'a> {
    lookup: &'a dyn Lookup,
}

impl Reader<'_> {
    /// The value of `name` or the first of its aliases that is set, with the name it came from.
    fn raw(&self, name: &str) -> Option<(String, String)> {
        let setting = SETTINGS.iter().find(|s| s.name == name);
        let aliases = setting.map(|s| s.aliases).unwrap_or(&[]);
        std::iter::once(name)
            .chain(aliases.iter().copied())
            .find_map(|n| self.lookup.get(n).map(|v| (n.to_string(), v)))
    }

    fn string(&self, name: &str) -> Option<String> {
        self.raw(name).map(|(_, v)| v).filter(|v| !v.is_empty())
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => parse_bool(&v).ok_or_else(|| {
                ConfigError::new(&var, format!("{v:?} is not a boolean (use true or false)"))
            }),
        }
    }

    fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => parse_duration(&v).map_err(|r| ConfigError::new(&var, r)),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => v
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(&var, format!("{v:?} is not a valid number"))),
        }
    }
}

/// `true`/`1`/`yes`/`on` and `false`/`0`/`no`/`off`, any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Longest duration any setting or `X-Timeout` may give: long enough for any function,
/// short enough that every deadline computed from it fits an `Instant` (a bigger value used
/// to pass start-up and abort the process on the first request).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A bare number of seconds (`10`, `1.5`) or a humantime duration (`1m30s`, `250ms`), at
/// most [`MAX_DURATION`]. Input is bounded before any conversion, so no value panics.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if v.len() > 64 {
        return Err("is too long to be a duration".into());
    }
    let d = if let Some(d) = exact_seconds(v) {
        d
    } else if let Ok(secs) = v.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return Err(format!("{v:?} must be a number of seconds, not negative"));
        }
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(v));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| too_long(v))?
    } else {
        humantime::parse_duration(v).map_err(|e| format!("{v:?} is not a duration ({e})"))?
    };
    if d > MAX_DURATION {
        return Err(too_long(v));
    }
    Ok(d)
}

/// `123` or `123.456`: seconds read exactly (to the nanosecond), where going through an
/// `f64` would round `17481325.343` to `17481325.342999998`.
fn exact_seconds(v: &str) -> Option<Duration> {
    let (whole, frac) = match v.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (v, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let mut nanos = 0u32;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(Duration::new(secs, nanos))
}

fn too_long(v: &str) -> String {
    format!("{v:?} is longer than the 365 days allowed")
}

fn parse_upstream(var: &str, v: &str) -> Result<Upstream, ConfigError> {
    if let Some(path) = v.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(ConfigError::new(var, "unix: needs a socket path"));
        }
        return Ok(Upstream::Unix(PathBuf::from(path)));
    }
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("h2c://"))
        .ok_or_else(|| {
            ConfigError::new(
                var,
                format!("{v:?} must start with http://, h2c:// or unix:"),
            )
        })?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.parse::<http::uri::Authority>().is_err() {
        return Err(ConfigError::new(
            var,
            format!("{v:?} has no valid host:port"),
        ));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Upstream::Tcp {
        authority,
        prefix: prefix.to_string(),
    })
}

impl Config {
    /// Reads and validates every setting. `command` (from `-- CMD ARGS`) overrides `fprocess`.
    pub fn from_lookup(
        lookup: &dyn Lookup,
        command: Option<Vec<String>>,
    ) -> Result<Config, ConfigError> {
        let r = Reader { lookup };
        let mode = match r.raw("mode") {
            None => Mode::Streaming,
            Some((var, v)) => Mode::parse(v.trim()).ok_or_else(|| {
                ConfigError::new(
                    &var,
                    format!(
                        "unknown mode {v:?} (use streaming, serializing, http, file or static)"
                    ),
                )
            })?,
        };

        // function_process wins over fprocess when both are set, as in of-watchdog.
        let fprocess_raw = r
            .lookup
            .get("function_process")
            .filter(|v| !v.trim().is_empty())
            .map(|v| ("function_process", v))
            .or_else(|| r.string("fprocess").map(|v| ("fprocess", v)));
        let fprocess = match (command, fprocess_raw) {
            (Some(cmd), _) if !cmd.is_empty() => cmd,
            (_, Some((var, v))) => {
                let words = shell_words::split(&v)
                    .map_err(|e| ConfigError::new(var, format!("cannot split {v:?}: {e}")))?;
                if words.is_empty() {
                    return Err(ConfigError::new(var, "is empty"));
                }
                words
            }
            _ => Vec::new(),
        };
        if fprocess.is_empty() && mode != Mode::Static {
            return Err(ConfigError::new(
                "fprocess",
                "is required in this mode (set fprocess or give the command after --)",
            ));
        }

        let port = match r.raw("PORT") {
            None => 8080,
            Some((var, v)) => parse_port(&var, &v, false)?,
        };
        let metrics_port = match r.raw("metrics_port") {
            None => Some(8081),
            Some((var, v)) => Some(parse_port(&var, &v, true)?).filter(|p| *p != 0),
        };

        let read_timeout = r.duration("read_timeout", Duration::from_secs(30))?;
        let write_timeout = r.duration("write_timeout", Duration::from_secs(30))?;
        // A head is part of the request, so read_timeout bounds it too.
        let read_header_timeout = r
            .duration("read_header_timeout", Duration::from_secs(10))?
            .min(read_timeout);
        let idle_timeout = r.duration("idle_timeout", Duration::from_secs(60))?;
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
        let exec_timeout =
            Some(r.duration("exec_timeout", Duration::from_secs(30))?).filter(|d| !d.is_zero());
        let healthcheck_interval = r.duration("healthcheck_interval", write_timeout)?;
        let busy_poll = match r.raw("busy_poll") {
            None => BusyPoll::Auto,
            Some((_, v)) if v.trim().eq_ignore_ascii_case("auto") => BusyPoll::Auto,
            Some((var, v)) => {
                let d = parse_duration(&v).map_err(|why| ConfigError::new(&var, why))?;
                if d > Duration::from_millis(1) {
                    // Longer spins buy nothing (a sleeping thread wakes in tens of
                    // microseconds) and would hold timers back.
                    return Err(ConfigError::new(&var, "must be at most 1ms"));
                }
                BusyPoll::Budget(d)
            }
        };

        let upstream = match r.raw("upstream_url").filter(|(_, v)| !v.is_empty()) {
            Some((var, v)) => Some(parse_upstream(&var, v.trim())?),
            None => None,
        };
        if mode == Mode::Http && upstream.is_none() {
            return Err(ConfigError::new("upstream_url", "is required in http mode"));
        }
        let ready_path = match r.string("ready_path") {
            Some(p) if !p.starts_with('/') => {
                return Err(ConfigError::new(
                    "ready_path",
                    format!("{p:?} must start with /"),
                ))
            }
            other => other,
        };

        let log_format = match r.raw("log_format") {
            None => LogFormat::Text,
            Some((var, v)) => match v.trim() {
                "text" | "" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError::new(&var, format!("{v:?} is not text or json"))),
            },
        };
        let log_buffer_size: usize = r.number("log_buffer_size", 65536)?;
        if !(64..=MAX_LOG_LINE).contains(&log_buffer_size) {
            // Each log stream holds a buffer this big: a huge value would be an allocation
            // failure (an abort), not a setting.
            return Err(ConfigError::new(
                "log_buffer_size",
                format!("must be between 64 and {MAX_LOG_LINE}"),
            ));
        }
        let max_header_bytes: usize = r.number("max_header_bytes", 64 * 1024)?;
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            return Err(ConfigError::new(
                "max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        let max_connections = match r.raw("max_connections") {
            None => auto_max_connections(),
            Some((_, v)) if v.trim().eq_ignore_ascii_case("auto") => auto_max_connections(),
            Some((var, v)) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ConfigError::new(
                        &var,
                        format!("{v:?} is not a positive number or auto"),
                    ))
                }
            },
        };

        let secrets = r
            .string("secrets")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for name in secrets
            .iter()
            .map(|s| ("secrets", s.clone()))
            .chain(r.string("api_key_secret").map(|s| ("api_key_secret", s)))
            .chain(r.string("hmac_secret").map(|s| ("hmac_secret", s)))
        {
            if !valid_secret_name(&name.1) {
                return Err(ConfigError::new(
                    name.0,
                    format!("{:?} is not a valid secret name", name.1),
                ));
            }
        }

        Ok(Config {
            mode,
            fprocess,
            port,
            read_timeout,
            write_timeout,
            read_header_timeout,
            idle_timeout,
            max_connections,
            exec_timeout,
            healthcheck_interval,
            busy_poll,
            max_inflight: r.number("max_inflight", 0)?,
            max_body_size: r.number("max_body_size", 0)?,
            max_header_bytes,
            upstream_h2c: r
                .string("upstream_url")
                .is_some_and(|u| u.trim().starts_with("h2c://")),
            upstream,
            ready_path,
            buffer_http: r.bool("buffer_http", false)?,
            content_type: r
                .string("content_type")
                .unwrap_or_else(|| "application/octet-stream".to_string()),
            cgi_headers: r.bool("cgi_headers", true)?,
            cgi_response: r.bool("cgi_response", false)?,
            combine_output: r.bool("combine_output", false)?,
            prefix_logs: r.bool("prefix_logs", true)?,
            log_buffer_size,
            log_format,
            suppress_lock: r.bool("suppress_lock", false)?,
            static_path: PathBuf::from(
                r.string("static_path")
                    .unwrap_or_else(|| "/home/app/public".into()),
            ),
            metrics_port,
            raw_body: r.bool("RAW_BODY", false)?,
            secret_mount_path: PathBuf::from(
                r.string("secret_mount_path")
                    .unwrap_or_else(|| "/var/openfaas/secrets".into()),
            ),
            secrets,
            api_key_secret: r.string("api_key_secret"),
            hmac_secret: r.string("hmac_secret"),
            hmac_buffer_limit: r.number("hmac_buffer_limit", 128 * 1024 * 1024)?,
            tmpdir: PathBuf::from(r.string("TMPDIR").unwrap_or_else(|| "/tmp".into())),
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

/// A secret name is a single path component.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn parse_port(var: &str, v: &str, allow_zero: bool) -> Result<u16, ConfigError> {
    match v.trim().parse::<u16>() {
        Ok(0) if !allow_zero => Err(ConfigError::new(var, "0 is not a valid port")),
        Ok(p) => Ok(p),
        Err(_) => Err(ConfigError::new(var, format!("{v:?} is not a port number"))),
    }
}

/// `--help` text: every setting with its env name and default.
pub fn help_text() -> String {
    let mut out = String::from(
        "fwatchdog: turns any program into an HTTP function (Knative, OpenFaaS)\n\n\
         Usage: fwatchdog [FLAGS] [-- COMMAND ARGS...]\n\n\
         Every setting is an environment variable; a flag --name VALUE (or --name=VALUE,\n\
         with _ written as -) overrides it. COMMAND after -- overrides fprocess.\n\n\
         Flags:\n  --help             this text\n  --version          print the version\n  \
         --run-healthcheck  exit 0 if $TMPDIR/.lock exists, else 1\n\nSettings (env name, default, meaning):\n",
    );
    for s in SETTINGS {
        let names = std::iter::once(s.name)
            .chain(s.aliases.iter().copied())
            .collect::<Vec<_>>()
            .join(" / ");
        out.push_str(&format!("  {names:<40} {:<26} {}\n", s.default, s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&map, None)
    }

    #[test]
    fn defaults() {
        let c = cfg(&[("fprocess", "cat")]).unwrap();
        assert_eq!(c.mode, Mode::Streaming);
        assert_eq!(c.port, 8080);
        assert_eq!(c.exec_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.healthcheck_interval, Duration::from_secs(30));
        assert_eq!(c.metrics_port, Some(8081));
        assert!(c.cgi_headers && !c.cgi_response && c.prefix_logs);
    }

    #[test]
    fn shell_words_and_alias() {
        let c = cfg(&[("fprocess", "sh -c 'echo \"a b\"' x\\ y")]).unwrap();
        assert_eq!(c.fprocess, vec!["sh", "-c", "echo \"a b\"", "x y"]);
        let c = cfg(&[("fprocess", "cat"), ("function_process", "wc -c")]).unwrap();
        assert_eq!(c.fprocess, vec!["wc", "-c"]);
    }

    #[test]
    fn port_precedence() {
        let c = cfg(&[("fprocess", "cat"), ("port", "9000"), ("PORT", "9001")]).unwrap();
        assert_eq!(c.port, 9001);
        let c = cfg(&[("fprocess", "cat"), ("port", "9000")]).unwrap();
        assert_eq!(c.port, 9000);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        let c = cfg(&[("fprocess", "cat"), ("exec_timeout", "0")]).unwrap();
        assert_eq!(c.exec_timeout, None);
    }

    #[test]
    fn busy_poll_is_auto_unless_given_a_duration() {
        let bp = |v: Option<&str>| {
            let mut pairs = vec![("fprocess", "cat")];
            pairs.extend(v.map(|v| ("busy_poll", v)));
            cfg(&pairs).unwrap().busy_poll
        };
        assert_eq!(bp(None), BusyPoll::Auto);
        assert_eq!(bp(Some(" AUTO ")), BusyPoll::Auto);
        assert_eq!(bp(Some("0")), BusyPoll::Budget(Duration::ZERO));
        assert_eq!(
            bp(Some("50us")),
            BusyPoll::Budget(Duration::from_micros(50))
        );
    }

    #[test]
    fn errors_name_the_variable() {
        for (pairs, var) in [
            (vec![("fprocess", "cat"), ("mode", "afterburn")], "mode"),
            (
                vec![("fprocess", "cat"), ("exec_timeout", "soon")],
                "exec_timeout",
            ),
            (vec![("fprocess", "cat"), ("port", "abc")], "port"),
            (
                vec![("fprocess", "cat"), ("cgi_headers", "maybe")],
                "cgi_headers",
            ),
            (vec![("mode", "http"), ("fprocess", "x")], "upstream_url"),
            (
                vec![
                    ("mode", "http"),
                    ("fprocess", "x"),
                    ("upstream_url", "ftp://x"),
                ],
                "upstream_url",
            ),
            (vec![("fprocess", "'unterminated")], "fprocess"),
            (vec![], "fprocess"),
            (
                vec![("fprocess", "cat"), ("api_key_secret", "../x")],
                "api_key_secret",
            ),
        ] {
            let err = cfg(&pairs).unwrap_err();
            assert_eq!(err.var, var, "{pairs:?} -> {err}");
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn upstreams() {
        assert_eq!(
            parse_upstream("u", "http://127.0.0.1:5000").unwrap(),
            Upstream::Tcp {
                authority: "127.0.0.1:5000".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            parse_upstream("u", "http://localhost/api/").unwrap(),
            Upstream::Tcp {
                authority: "localhost:80".into(),
                prefix: "/api".into()
            }
        );
        assert_eq!(
            parse_upstream("u", "unix:/tmp/s.sock").unwrap(),
            Upstream::Unix("/tmp/s.sock".into())
        );
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../../README.md");
        for s in SETTINGS {
            for name in std::iter::once(s.name).chain(s.aliases.iter().copied()) {
                assert!(
                    readme.contains(&format!("`{name}`")),
                    "README lacks setting {name}"
                );
            }
        }
    }

    #[test]
    fn help_lists_every_setting() {
        let h = help_text();
        for s in SETTINGS {
            assert!(h.contains(s.name), "{}", s.name);
        }
    }
}
