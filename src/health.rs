//! Readiness, draining, in-flight accounting and the lock file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

/// Shared liveness state, cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    ready: AtomicBool,
    draining: AtomicBool,
    inflight: AtomicUsize,
    /// Milliseconds since `started` of the last request's arrival.
    last_arrival_ms: AtomicU64,
    max_inflight: usize,
    lock_path: Option<PathBuf>,
    ready_changed: Notify,
}

/// What `/_/health` and `/_/ready` should answer before any mode-specific check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepting work.
    Ok,
    /// Not ready yet (http mode start) or draining.
    Unavailable,
}

/// Holds one in-flight slot; released on drop.
pub struct InflightGuard {
    health: Health,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.health.inner.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Health {
    /// New state. `lock_path` is `None` with `suppress_lock`.
    pub fn new(max_inflight: usize, lock_path: Option<PathBuf>) -> Health {
        Health {
            inner: Arc::new(Inner {
                started: Instant::now(),
                ready: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                inflight: AtomicUsize::new(0),
                last_arrival_ms: AtomicU64::new(0),
                max_inflight,
                lock_path,
                ready_changed: Notify::new(),
            }),
        }
    }

    /// Marks the function ready and writes the lock file.
    pub fn set_ready(&self) -> std::io::Result<()> {
        if let Some(path) = &self.inner.lock_path {
            create_lock(path)?;
        }
        self.inner.ready.store(true, Ordering::Release);
        self.inner.ready_changed.notify_waiters();
        Ok(())
    }

    /// A lock-file failure as the start-up error it is: the lock file lives in `TMPDIR`.
    pub fn lock_error(&self, e: std::io::Error) -> crate::config::ConfigError {
        let path = self
            .inner
            .lock_path
            .as_deref()
            .unwrap_or(std::path::Path::new("-"));
        crate::config::ConfigError::new(
            "TMPDIR",
            format!("cannot write lock file {}: {e}", path.display()),
        )
    }

    /// Fails when the lock file could not be written, without writing it (http mode learns
    /// this at start, long before it is ready).
    pub fn check_lock_writable(&self) -> std::io::Result<()> {
        let Some(path) = &self.inner.lock_path else {
            return Ok(());
        };
        // A name of its own: watchdogs sharing TMPDIR probe at the same moment, and one
        // would remove the other's probe before the other could.
        let probe = path.with_extension(format!("probe-{}", std::process::id()));
        // create_lock makes a missing TMPDIR, as in the fork modes.
        refuse_special(path)?;
        create_lock(&probe)?;
        std::fs::remove_file(&probe)
    }

    /// True once the function can take requests.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Waits until [`Health::set_ready`] has been called.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.inner.ready_changed.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    /// Starts draining: health turns 503 and the lock file goes at once.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        if let Some(path) = &self.inner.lock_path {
            let _ = std::fs::remove_file(path);
        }
    }

    /// True after SIGTERM.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// `/_/health`.
    pub fn status(&self) -> Status {
        if self.is_ready() && !self.is_draining() {
            Status::Ok
        } else {
            Status::Unavailable
        }
    }

    /// True when `max_inflight` is set and reached.
    pub fn saturated(&self) -> bool {
        self.inner.max_inflight > 0 && self.inflight() >= self.inner.max_inflight
    }

    /// Requests being handled now.
    pub fn inflight(&self) -> usize {
        self.inner.inflight.load(Ordering::Acquire)
    }

    /// Takes an in-flight slot, or `None` when `max_inflight` is reached.
    pub fn try_acquire(&self) -> Option<InflightGuard> {
        self.inner.last_arrival_ms.store(
            self.inner.started.elapsed().as_millis() as u64,
            Ordering::Release,
        );
        let max = self.inner.max_inflight;
        let prev = self.inner.inflight.fetch_add(1, Ordering::AcqRel);
        if max > 0 && prev >= max {
            self.inner.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InflightGuard {
            health: self.clone(),
        })
    }

    /// The configured limit (0 = none).
    pub fn max_inflight(&self) -> usize {
        self.inner.max_inflight
    }

    /// Time since the last function request arrived.
    pub fn since_last_arrival(&self) -> std::time::Duration {
        let last = self.inner.last_arrival_ms.load(Ordering::Acquire);
        self.inner
            .started
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }
}

/// Writes an empty lock file at `path` that this process created itself: never through a
/// symlink planted there, never into a FIFO or device (which could hang start-up). A
/// regular file left by an earlier run is replaced.
fn create_lock(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if refuse_special(path)? {
        std::fs::remove_file(path)?;
    }
    // O_EXCL: fails if anything appeared at the path meanwhile (O_CREAT|O_EXCL never
    // follows a symlink); O_NOFOLLOW and O_NONBLOCK make that doubly sure.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Another watchdog sharing TMPDIR wrote its lock in between: a regular file is what
        // a lock file is; anything else is still refused.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => refuse_special(path).map(drop),
        Err(e) => Err(e),
    }
}

/// An error when something other than a regular file is at `path`; `Ok(true)` when a
/// regular file is there.
fn refuse_special(path: &std::path::Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) => Err(std::io::Error::other(format!(
            "{} is a {}, not a regular file; refusing to write through it",
            path.display(),
            describe(m.file_type())
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn describe(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    }
}
