//! Test harness: starts the real `fwatchdog` binary with an env map on a free loopback port
//! and a private TMPDIR, and talks to it with a tiny raw HTTP/1.1 client (raw, so tests can
//! also send malformed, slow or abandoned requests).
#![allow(dead_code)]

pub mod busy_poll;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_fwatchdog");

/// A listener on an ephemeral loopback port, bound by the test itself: the port is known
/// and held from this moment, so nothing can take it before the watchdog serves it.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Hands `listeners` to the command as descriptors 3, 4, ... (systemd-style `LISTEN_FDS`),
/// so the watchdog serves sockets the test bound instead of binding ports itself.
pub fn pass_listeners(c: &mut Command, listeners: &[&TcpListener]) {
    pass_listeners_and(c, listeners, None);
}

/// [`pass_listeners`], and `upstream` as descriptor [`UPSTREAM_FD`] for the function.
pub fn pass_listeners_and(
    c: &mut Command,
    listeners: &[&TcpListener],
    upstream: Option<&TcpListener>,
) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let n = fds.len();
    fds.extend(upstream.map(|l| l.as_raw_fd()));
    c.env("LISTEN_FDS", n.to_string());
    c.env_remove("LISTEN_PID");
    // SAFETY: only dup2 and fcntl between fork and exec, both async-signal-safe; the
    // descriptors are owned by listeners that outlive the spawn.
    unsafe {
        c.pre_exec(move || {
            // Move the sources out of the way first, so that dup2 onto 3, 4 ... cannot
            // overwrite a source that has not been copied yet.
            let mut high = Vec::with_capacity(fds.len());
            for fd in &fds {
                let h = libc_fcntl_dupfd(*fd, 100)?;
                high.push(h);
            }
            for (i, h) in high.iter().enumerate() {
                let target = if i < n { 3 + i as i32 } else { UPSTREAM_FD };
                if nix::unistd::dup2(*h, target).is_err() {
                    return Err(std::io::Error::last_os_error());
                }
                let _ = nix::unistd::close(*h);
            }
            Ok(())
        });
    }
}

/// `fcntl(fd, F_DUPFD, min)`: a copy of `fd` at or above `min`, inherited across exec.
fn libc_fcntl_dupfd(fd: i32, min: i32) -> std::io::Result<i32> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(min)).map_err(std::io::Error::from)
}

/// A fresh, empty scratch folder for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fwd-test-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running watchdog. Killed on drop.
pub struct Watchdog {
    /// The process.
    pub child: Child,
    /// Its listen port.
    pub port: u16,
    /// Its metrics port (0 unless `Opts::metrics`).
    pub metrics_port: u16,
    /// Its TMPDIR.
    pub tmpdir: PathBuf,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Builder-ish options for starting a watchdog.
pub struct Opts<'a> {
    /// Env vars (on top of PORT, TMPDIR, metrics_port=0).
    pub env: Vec<(&'a str, String)>,
    /// Flags before `--`.
    pub args: Vec<&'a str>,
    /// Command after `--` (empty: none).
    pub cmd: Vec<&'a str>,
    /// Wrap the binary in this launcher (e.g. `unshare --pid --fork --mount-proc`).
    pub launcher: Vec<&'a str>,
    /// Wait for /_/health 200.
    pub wait_healthy: bool,
    /// Serve metrics on a listener of its own (`Watchdog::metrics_port`).
    pub metrics: bool,
    /// A listener for the http-mode function, passed down as descriptor [`UPSTREAM_FD`]
    /// (`tests/upstream.py fd:10` serves it), so the upstream's port is held from the start.
    pub upstream: Option<&'a TcpListener>,
}

/// Where an upstream listener given in [`Opts::upstream`] arrives in the function.
pub const UPSTREAM_FD: i32 = 10;

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            env: Vec::new(),
            args: Vec::new(),
            cmd: Vec::new(),
            launcher: Vec::new(),
            wait_healthy: true,
            metrics: false,
            upstream: None,
        }
    }
}

impl Watchdog {
    /// Starts `fwatchdog -- cmd...` with `env`, waiting until it is healthy.
    pub fn start(env: &[(&str, &str)], cmd: &[&str]) -> Watchdog {
        Watchdog::with(Opts {
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            cmd: cmd.to_vec(),
            ..Opts::default()
        })
    }

    /// Like [`Watchdog::start`], with metrics on a listener of its own.
    pub fn start_metrics(env: &[(&str, &str)], cmd: &[&str]) -> Watchdog {
        Watchdog::with(Opts {
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            cmd: cmd.to_vec(),
            metrics: true,
            ..Opts::default()
        })
    }

    /// Starts a watchdog with full options.
    pub fn with(opts: Opts) -> Watchdog {
        let main = listener();
        let metrics = opts.metrics.then(listener);
        let port = main.local_addr().unwrap().port();
        let metrics_port = metrics
            .as_ref()
            .map_or(0, |l| l.local_addr().unwrap().port());
        let tmpdir = scratch_dir("wd");
        // FWATCHDOG_TEST_BIN runs the suite against another build (an older one, to see a
        // new test fail before its fix); it gets the ports by number.
        let other_bin = std::env::var("FWATCHDOG_TEST_BIN").ok();
        let bin = other_bin.as_deref().unwrap_or(BIN);
        let mut c = if opts.launcher.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new(opts.launcher[0]);
            c.args(&opts.launcher[1..]).arg(bin);
            c
        };
        c.env("TMPDIR", &tmpdir)
            .env("metrics_port", "0")
            .env_remove("PORT")
            .env_remove("port")
            .env_remove("fprocess")
            .env_remove("mode");
        if other_bin.is_some() {
            c.env("PORT", port.to_string())
                .env("metrics_port", metrics_port.to_string());
        } else {
            pass_listeners_and(
                &mut c,
                &[Some(&main), metrics.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
                opts.upstream,
            );
        }
        for (k, v) in &opts.env {
            c.env(k, v);
        }
        c.args(&opts.args);
        if !opts.cmd.is_empty() {
            c.arg("--").args(&opts.cmd);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (main, metrics) = match other_bin {
            // That build binds the ports itself (a probe: the only time the suite guesses).
            Some(_) => {
                drop(main);
                drop(metrics);
                (None, None)
            }
            None => (Some(main), metrics),
        };
        let mut child = c.spawn().expect("spawn fwatchdog");
        // The child has its copies; ours would keep the ports open after it exits.
        drop(main);
        drop(metrics);
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let sink = stderr.clone();
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut line = Vec::new();
                while r
                    .read_until(b'\n', &mut line)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            }));
        }
        let mut wd = Watchdog {
            child,
            port,
            metrics_port,
            tmpdir,
            stderr,
            readers,
        };
        if opts.wait_healthy {
            wd.wait_healthy(Duration::from_secs(10));
        }
        wd
    }

    /// Waits until `/_/health` answers 200; panics with the log if the process exits.
    pub fn wait_healthy(&mut self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("fwatchdog exited early ({st}); log:\n{}", self.log());
            }
            if let Ok(r) = self.get("/_/health") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "fwatchdog not healthy within {within:?}; log:\n{}",
            self.log()
        );
    }

    /// Everything the watchdog printed so far (stderr and stdout).
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> std::io::Result<Resp> {
        self.request("GET", path, &[], b"")
    }

    /// POST `body` to `path`.
    pub fn post(&self, path: &str, body: &[u8]) -> std::io::Result<Resp> {
        self.request("POST", path, &[], body)
    }

    /// Sends one request with Content-Length and `Connection: close`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        request(self.port, method, path, headers, body)
    }

    /// The watchdog's peak resident memory so far (VmHWM), in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        self.proc_status("VmHWM")
    }

    /// A numeric field of the watchdog's `/proc/PID/status` (a unit such as kB dropped).
    pub fn proc_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Sends SIGTERM (or another signal) to the watchdog process.
    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits for the process to exit, and for what it printed to be in [`Watchdog::log`]
    /// (its pipes reach EOF; bounded, since a surviving grandchild may hold them open).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(st)) = self.child.try_wait() {
                let drained = Instant::now();
                while self.readers.iter().any(|r| !r.is_finished())
                    && drained.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmpdir);
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
    /// True if a chunked body ended without its final chunk (an aborted response).
    pub truncated: bool,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the whole response.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            has_len = true;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || method == "POST" || method == "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    read_response(&mut s)
}

/// Reads a response from `s` until the connection closes.
pub fn read_response(s: &mut impl Read) -> std::io::Result<Resp> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Parses a full HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let rest = &raw[end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .map(|v| v.contains("chunked"))
        .unwrap_or(false);
    let (body, truncated) = if chunked {
        dechunk(rest)
    } else {
        (rest.to_vec(), false)
    };
    Ok(Resp {
        status,
        headers,
        body,
        truncated,
    })
}

/// Decodes a chunked body; the flag says whether the terminating chunk was missing.
pub fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (out, true);
        };
        let size_str = String::from_utf8_lossy(&rest[..nl]);
        let Ok(size) = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (out, true);
        };
        rest = &rest[nl + 2..];
        if size == 0 {
            return (out, false);
        }
        if rest.len() < size {
            out.extend_from_slice(rest);
            return (out, true);
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

/// Pids of live processes whose command line contains `marker`.
pub fn pids_with_marker(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Zombies have an empty cmdline already; count only live processes here.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("");
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or(b"");
        // The watchdog carries the marker in its own argv (after --): it is not the function.
        let is_watchdog = argv0.ends_with(b"fwatchdog") || argv0 == b"unshare";
        if state != "Z" && !is_watchdog && String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Polls `cond` every 20 ms until it is true or `within` passed.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A unique marker string for finding a test's processes in /proc.
pub fn marker(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "fwdmark-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the binary to completion with `env` and `args`; returns (exit code, stderr).
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let other_bin = std::env::var("FWATCHDOG_TEST_BIN").ok();
    let mut c = Command::new(other_bin.as_deref().unwrap_or(BIN));
    c.env_remove("fprocess")
        .env_remove("mode")
        .env("metrics_port", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    // A listener of its own, unless the test is about PORT: a run that gets as far as
    // binding must not depend on 8080 being free.
    let own = listener();
    let about_port = env.iter().any(|(k, _)| k.eq_ignore_ascii_case("port"));
    let own = match (about_port, &other_bin) {
        (true, _) => {
            drop(own);
            None
        }
        (false, None) => {
            pass_listeners(&mut c, &[&own]);
            Some(own)
        }
        (false, Some(_)) => {
            // That build binds by number: free the port for it (the one probe left).
            c.env("PORT", own.local_addr().unwrap().port().to_string());
            drop(own);
            None
        }
    };
    let mut child = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(own);
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    // A run that should have stopped at start but serves instead is killed, not waited for.
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().unwrap_or_default();
    (code, String::from_utf8_lossy(&stderr).into_owned())
}
