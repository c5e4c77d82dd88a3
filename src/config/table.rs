//! The one table of settings: each setting's name, aliases, default, help line and the
//! modes it applies to. `--help`, `docs/configuration.md` (checked by a test) and the
//! reader in `mod.rs` all come from it; the reader takes a `&Setting`, never a name, so a
//! misspelt name is a compile error rather than a silent default, and a default is parsed
//! from the same string `--help` shows.

use super::Mode;

/// One documented setting.
pub struct Setting {
    /// The env name (flags use it with `_` turned into `-`).
    pub name: &'static str,
    /// Older names accepted too (the first one set wins after `name`).
    pub aliases: &'static [&'static str],
    /// The default, as shown in `--help` and parsed when the setting is not given (`-`:
    /// none).
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The modes that read it; given in another mode it is named in a start-up warning.
    pub applies: &'static [Mode],
}

impl Setting {
    /// This setting's name and then its aliases.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    /// True when `mode` reads this setting.
    pub fn applies_to(&self, mode: Mode) -> bool {
        self.applies.contains(&mode)
    }

    /// The modes column of the docs: `all`, or the modes by name.
    pub fn modes_text(&self) -> String {
        if self.applies.len() == ALL.len() {
            return "all".into();
        }
        let names: Vec<&str> = self.applies.iter().map(|m| m.name()).collect();
        names.join(", ")
    }
}

const ALL: &[Mode] = &[
    Mode::Streaming,
    Mode::Serializing,
    Mode::Http,
    Mode::File,
    Mode::Static,
    Mode::Worker,
];
/// Modes that run the function's command.
const PROCESS: &[Mode] = &[
    Mode::Streaming,
    Mode::Serializing,
    Mode::Http,
    Mode::File,
    Mode::Worker,
];
/// Modes that start a process per request and read its output.
const FORK: &[Mode] = &[Mode::Streaming, Mode::Serializing, Mode::File];
/// Modes whose function's answer gets `content_type` and the request's metadata.
const FORK_OR_WORKER: &[Mode] = &[Mode::Streaming, Mode::Serializing, Mode::File, Mode::Worker];
const WORKER: &[Mode] = &[Mode::Worker];
const HTTP: &[Mode] = &[Mode::Http];
const STATIC: &[Mode] = &[Mode::Static];

/// `mode`.
pub const MODE: Setting = Setting {
    name: "mode",
    aliases: &[],
    default: "streaming",
    help: "streaming | serializing | http | file | static | worker",
    applies: ALL,
};

/// `compat`.
pub const COMPAT: Setting = Setting {
    name: "compat",
    aliases: &[],
    default: "none",
    help: "classic = the classic watchdog's defaults: mode serializing, stderr in the body, the request's Content-Type echoed, 500 with \"exit status N\" on failure",
    applies: ALL,
};

/// `fprocess`.
pub const FPROCESS: Setting = Setting {
    name: "fprocess",
    aliases: &["function_process"],
    default: "-",
    help: "function command, split like a POSIX shell (or give it after --)",
    applies: PROCESS,
};

/// `PORT`.
pub const PORT: Setting = Setting {
    name: "PORT",
    aliases: &["port"],
    default: "8080",
    help: "listen port (Knative's PORT wins over port)",
    applies: ALL,
};

/// `read_timeout`.
pub const READ_TIMEOUT: Setting = Setting {
    name: "read_timeout",
    aliases: &[],
    default: "30s",
    help: "max time to read a request's headers and body",
    applies: ALL,
};

/// `read_header_timeout`.
pub const READ_HEADER_TIMEOUT: Setting = Setting {
    name: "read_header_timeout",
    aliases: &[],
    default: "10s",
    help: "max time for a new connection's first request head to arrive",
    applies: ALL,
};

/// `idle_timeout`.
pub const IDLE_TIMEOUT: Setting = Setting {
    name: "idle_timeout",
    aliases: &[],
    default: "60s",
    help: "close a connection with nothing in flight after this long (HTTP/1.1 and HTTP/2)",
    applies: ALL,
};

/// `max_connections`.
pub const MAX_CONNECTIONS: Setting = Setting {
    name: "max_connections",
    aliases: &[],
    default: "auto",
    help: "open client connections, new ones closed beyond (auto = half the descriptor limit, at most 10000)",
    applies: ALL,
};

/// `LISTEN_FDS`.
pub const LISTEN_FDS: Setting = Setting {
    name: "LISTEN_FDS",
    aliases: &[],
    default: "-",
    help: "socket activation: serve descriptor 3 (and 4 for metrics) instead of binding ports",
    applies: ALL,
};

/// `write_timeout`.
pub const WRITE_TIMEOUT: Setting = Setting {
    name: "write_timeout",
    aliases: &[],
    default: "30s",
    help: "max time a write to the client may stall",
    applies: ALL,
};

/// `exec_timeout`.
pub const EXEC_TIMEOUT: Setting = Setting {
    name: "exec_timeout",
    aliases: &[],
    default: "30s",
    help: "max run time of the function per request (0 = none)",
    applies: PROCESS,
};

/// `healthcheck_interval`.
pub const HEALTHCHECK_INTERVAL: Setting = Setting {
    name: "healthcheck_interval",
    aliases: &[],
    default: "write_timeout",
    help: "drain window after SIGTERM",
    applies: ALL,
};

/// `max_inflight`.
pub const MAX_INFLIGHT: Setting = Setting {
    name: "max_inflight",
    aliases: &[],
    default: "0",
    help: "concurrent requests, 429 beyond (0 = no limit)",
    applies: ALL,
};

/// `max_header_bytes`.
pub const MAX_HEADER_BYTES: Setting = Setting {
    name: "max_header_bytes",
    aliases: &[],
    default: "65536",
    help: "request header block limit in bytes, 431 beyond (1 KiB to 1 MiB)",
    applies: ALL,
};

/// `max_body_size`.
pub const MAX_BODY_SIZE: Setting = Setting {
    name: "max_body_size",
    aliases: &[],
    default: "0",
    help: "request body limit in bytes, 413 beyond (0 = none when streamed, 64 MiB when held in memory)",
    applies: PROCESS,
};

/// `upstream_url`.
pub const UPSTREAM_URL: Setting = Setting {
    name: "upstream_url",
    aliases: &["http_upstream_url"],
    default: "-",
    help: "http mode: http://127.0.0.1:PORT, h2c://127.0.0.1:PORT or unix:/path.sock",
    applies: HTTP,
};

/// `ready_path`.
pub const READY_PATH: Setting = Setting {
    name: "ready_path",
    aliases: &[],
    default: "-",
    help: "http mode: upstream readiness path",
    applies: HTTP,
};

/// `buffer_http`.
pub const BUFFER_HTTP: Setting = Setting {
    name: "buffer_http",
    aliases: &["http_buffer_req_body"],
    default: "false",
    help: "http mode: buffer bodies and send Content-Length",
    applies: HTTP,
};

/// `content_type`.
pub const CONTENT_TYPE: Setting = Setting {
    name: "content_type",
    aliases: &[],
    default: "application/octet-stream",
    help: "fork, file and worker modes: response Content-Type when the function sets none",
    applies: FORK_OR_WORKER,
};

/// `cgi_headers`.
pub const CGI_HEADERS: Setting = Setting {
    name: "cgi_headers",
    aliases: &[],
    default: "true",
    help: "fork, file and worker modes: request metadata as Http_* variables",
    applies: FORK_OR_WORKER,
};

/// `cgi_response`.
pub const CGI_RESPONSE: Setting = Setting {
    name: "cgi_response",
    aliases: &[],
    default: "false",
    help: "fork and file modes: stdout may start with CGI response headers",
    applies: FORK,
};

/// `combine_output`.
pub const COMBINE_OUTPUT: Setting = Setting {
    name: "combine_output",
    aliases: &[],
    default: "false",
    help: "fork and file modes: stderr goes into the response too",
    applies: FORK,
};

/// `prefix_logs`.
pub const PREFIX_LOGS: Setting = Setting {
    name: "prefix_logs",
    aliases: &[],
    default: "true",
    help: "prefix function log lines with time and stream",
    applies: PROCESS,
};

/// `log_buffer_size`.
pub const LOG_BUFFER_SIZE: Setting = Setting {
    name: "log_buffer_size",
    aliases: &[],
    default: "65536",
    help: "longest function log line kept whole; longer ones are split",
    applies: PROCESS,
};

/// `log_format`.
pub const LOG_FORMAT: Setting = Setting {
    name: "log_format",
    aliases: &[],
    default: "text",
    help: "text | json (the watchdog's own logs)",
    applies: ALL,
};

/// `suppress_lock`.
pub const SUPPRESS_LOCK: Setting = Setting {
    name: "suppress_lock",
    aliases: &[],
    default: "false",
    help: "do not write $TMPDIR/.lock",
    applies: ALL,
};

/// `static_path`.
pub const STATIC_PATH: Setting = Setting {
    name: "static_path",
    aliases: &[],
    default: "/home/app/public",
    help: "static mode: folder served",
    applies: STATIC,
};

/// `metrics_port`.
pub const METRICS_PORT: Setting = Setting {
    name: "metrics_port",
    aliases: &[],
    default: "8081",
    help: "Prometheus /metrics port (0 = off)",
    applies: ALL,
};

/// `RAW_BODY`.
pub const RAW_BODY: Setting = Setting {
    name: "RAW_BODY",
    aliases: &[],
    default: "false",
    help: "hand the body to the function byte for byte",
    applies: PROCESS,
};

/// `secret_mount_path`.
pub const SECRET_MOUNT_PATH: Setting = Setting {
    name: "secret_mount_path",
    aliases: &[],
    default: "/var/openfaas/secrets",
    help: "where secrets are read from",
    applies: ALL,
};

/// `secrets`.
pub const SECRETS: Setting = Setting {
    name: "secrets",
    aliases: &[],
    default: "-",
    help: "comma list of secrets that must exist at start",
    applies: ALL,
};

/// `api_key_secret`.
pub const API_KEY_SECRET: Setting = Setting {
    name: "api_key_secret",
    aliases: &[],
    default: "-",
    help: "secret whose value every request must present",
    applies: ALL,
};

/// `hmac_secret`.
pub const HMAC_SECRET: Setting = Setting {
    name: "hmac_secret",
    aliases: &[],
    default: "-",
    help: "secret that signs request bodies (X-Hub-Signature-256)",
    applies: ALL,
};

/// `hmac_buffer_limit`.
pub const HMAC_BUFFER_LIMIT: Setting = Setting {
    name: "hmac_buffer_limit",
    aliases: &[],
    default: "134217728",
    help: "bytes all requests together may hold while their HMAC is checked (503 beyond)",
    applies: ALL,
};

/// `TMPDIR`.
pub const TMPDIR: Setting = Setting {
    name: "TMPDIR",
    aliases: &[],
    default: "/tmp",
    help: "lock file and file-mode scratch space",
    applies: ALL,
};

/// `busy_poll`.
pub const BUSY_POLL: Setting = Setting {
    name: "busy_poll",
    aliases: &[],
    default: "auto",
    help: "keep polling this long before sleeping (e.g. 100us, max 1ms): less latency, more CPU; 0 = off; auto = 100us in http and worker mode with 2+ CPUs",
    applies: ALL,
};

/// `workers`.
pub const WORKERS: Setting = Setting {
    name: "workers",
    aliases: &[],
    default: "auto",
    help: "worker mode: processes kept running (auto = one per CPU the watchdog may use)",
    applies: WORKER,
};

/// `worker_max_requests`.
pub const WORKER_MAX_REQUESTS: Setting = Setting {
    name: "worker_max_requests",
    aliases: &[],
    default: "0",
    help: "worker mode: replace a worker after this many requests (0 = never)",
    applies: WORKER,
};

/// `cloudevents`.
pub const CLOUDEVENTS: Setting = Setting {
    name: "cloudevents",
    aliases: &[],
    default: "false",
    help: "decode CloudEvents (binary and structured) for the function; answer as Knative Eventing expects (docs/cloudevents.md)",
    applies: PROCESS,
};

/// `ce_source`. Its default names where it comes from; `mod.rs` resolves it.
pub const CE_SOURCE: Setting = Setting {
    name: "ce_source",
    aliases: &[],
    default: "/<K_SERVICE or hostname>",
    help: "cloudevents: the source of reply events",
    applies: PROCESS,
};

/// `ce_reply_type`. Its default depends on the request; `events` applies it.
pub const CE_REPLY_TYPE: Setting = Setting {
    name: "ce_reply_type",
    aliases: &[],
    default: "<type>.reply",
    help: "cloudevents: the type of reply events (default: the incoming type with .reply appended)",
    applies: PROCESS,
};

/// Every setting the watchdog reads, in `--help` order.
pub const SETTINGS: &[&Setting] = &[
    &MODE,
    &FPROCESS,
    &PORT,
    &READ_TIMEOUT,
    &READ_HEADER_TIMEOUT,
    &IDLE_TIMEOUT,
    &MAX_CONNECTIONS,
    &LISTEN_FDS,
    &WRITE_TIMEOUT,
    &EXEC_TIMEOUT,
    &HEALTHCHECK_INTERVAL,
    &MAX_INFLIGHT,
    &MAX_HEADER_BYTES,
    &MAX_BODY_SIZE,
    &UPSTREAM_URL,
    &READY_PATH,
    &BUFFER_HTTP,
    &CONTENT_TYPE,
    &CGI_HEADERS,
    &CGI_RESPONSE,
    &COMBINE_OUTPUT,
    &COMPAT,
    &PREFIX_LOGS,
    &LOG_BUFFER_SIZE,
    &LOG_FORMAT,
    &SUPPRESS_LOCK,
    &STATIC_PATH,
    &METRICS_PORT,
    &RAW_BODY,
    &SECRET_MOUNT_PATH,
    &SECRETS,
    &API_KEY_SECRET,
    &HMAC_SECRET,
    &HMAC_BUFFER_LIMIT,
    &TMPDIR,
    &BUSY_POLL,
    &WORKERS,
    &WORKER_MAX_REQUESTS,
    &CLOUDEVENTS,
    &CE_SOURCE,
    &CE_REPLY_TYPE,
];

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
        let names = s.names().collect::<Vec<_>>().join(" / ");
        out.push_str(&format!("  {names:<40} {:<26} {}\n", s.default, s.help));
    }
    out
}

/// The settings table of `docs/configuration.md`, between its markers.
pub fn markdown_table() -> String {
    let code = |s: &str| format!("`{s}`");
    let mut out =
        String::from("| Setting | Aliases | Default | Modes | Meaning |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let aliases: Vec<String> = s.aliases.iter().map(|a| code(a)).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            code(s.name),
            aliases.join(", "),
            code(s.default),
            s.modes_text(),
            s.help.replace('|', "\\|"),
        ));
    }
    out
}
