//! Each mode's own settings, in a type of its own: a mode is built from its type, so it
//! never reads (or unwraps) a setting that belongs to another.

use std::path::PathBuf;

use super::Upstream;

/// The function's command: a program and its arguments, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv {
    program: String,
    args: Vec<String>,
}

impl Argv {
    /// `words` as a command; `None` when there are none.
    pub fn new(words: Vec<String>) -> Option<Argv> {
        let mut words = words.into_iter();
        let program = words.next()?;
        Some(Argv {
            program,
            args: words.collect(),
        })
    }

    /// The program to run.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Its arguments.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Program and arguments, as a shell would read them back.
    pub fn to_shell(&self) -> String {
        shell_words::join(std::iter::once(&self.program).chain(&self.args))
    }
}

/// The settings of the modes that start a process per request (`streaming`,
/// `serializing`, `file`).
#[derive(Debug, Clone)]
pub struct ForkConfig {
    /// The function command.
    pub fprocess: Argv,
    /// Response Content-Type.
    pub content_type: String,
    /// Pass request metadata as `Http_*`.
    pub cgi_headers: bool,
    /// Parse CGI headers from stdout.
    pub cgi_response: bool,
    /// stderr into the response.
    pub combine_output: bool,
    /// `compat=classic`: answers shaped as the classic watchdog's ([`crate::mode::fork`]).
    pub classic: bool,
}

/// http mode's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The long-lived function command.
    pub fprocess: Argv,
    /// Where the function listens.
    pub upstream: Upstream,
    /// Speak HTTP/2 with prior knowledge to the upstream (`h2c://`).
    pub upstream_h2c: bool,
    /// Readiness path on the upstream.
    pub ready_path: Option<String>,
    /// Buffer request bodies.
    pub buffer_http: bool,
}

/// static mode's settings.
#[derive(Debug, Clone)]
pub struct StaticConfig {
    /// The folder served.
    pub static_path: PathBuf,
}

/// worker mode's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker command, started `workers` times.
    pub fprocess: Argv,
    /// How many workers run at once.
    pub workers: usize,
    /// Requests a worker serves before it is replaced (0 = no limit).
    pub worker_max_requests: u64,
    /// Response Content-Type when the worker sets none.
    pub content_type: String,
    /// Pass request metadata (the `Http_*` variables) in the request head.
    pub cgi_headers: bool,
}

/// The chosen mode's own settings.
#[derive(Debug, Clone)]
pub enum ModeConfig {
    /// `streaming`, `serializing` and `file`.
    Fork(ForkConfig),
    /// `http`.
    Http(HttpConfig),
    /// `static`.
    Static(StaticConfig),
    /// `worker`.
    Worker(WorkerConfig),
}

impl ModeConfig {
    /// The function command, where the mode has one.
    pub fn fprocess(&self) -> Option<&Argv> {
        match self {
            ModeConfig::Fork(f) => Some(&f.fprocess),
            ModeConfig::Http(h) => Some(&h.fprocess),
            ModeConfig::Worker(w) => Some(&w.fprocess),
            ModeConfig::Static(_) => None,
        }
    }
}
