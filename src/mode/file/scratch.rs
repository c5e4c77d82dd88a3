//! File mode's folders: the run folder held under an exclusive lock for the watchdog's
//! life, one private folder per request, and their removal off the request path.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::process::KILL_GRACE;

use super::{NEW_DIR_PREFIX, NEW_DIR_STALE, RUN_DIR_PREFIX};

/// This watchdog's run folder, locked for its lifetime and removed when it stops.
pub(super) struct RunDir {
    pub(super) path: PathBuf,
    // Held, never read: the lock is what marks the folder as alive.
    _lock: Flock<File>,
}

impl RunDir {
    pub(super) fn create(tmpdir: &Path) -> io::Result<RunDir> {
        let pid = std::process::id();
        let mut attempt = 0u32;
        loop {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let tag = format!("{pid}-{nanos:08x}{attempt}");
            let fresh = tmpdir.join(format!("{NEW_DIR_PREFIX}{tag}"));
            match DirBuilder::new().mode(0o700).create(&fresh) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let locked = open_dir(&fresh).and_then(|f| {
                Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
            });
            let lock = match locked {
                Ok(l) => l,
                Err(e) => {
                    let _ = std::fs::remove_dir(&fresh);
                    return Err(e);
                }
            };
            let path = tmpdir.join(format!("{RUN_DIR_PREFIX}{tag}"));
            // The lock belongs to the open folder, so it survives the rename.
            if let Err(e) = std::fs::rename(&fresh, &path) {
                let _ = std::fs::remove_dir(&fresh);
                return Err(e);
            }
            return Ok(RunDir { path, _lock: lock });
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Requests still running at shutdown lose their folders here at the latest. The
        // janitor may be removing a sub-folder at the same moment: a second pass covers it.
        if remove_tree(&self.path).is_err() {
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove scratch folder");
            }
        }
    }
}

/// Opens a folder for locking, refusing to follow a symlink planted under the name.
pub(super) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Removes run folders whose watchdog is gone: their lock can be taken. A folder that stays
/// locked belongs to a live watchdog sharing this `$TMPDIR` and is left alone. Failures are
/// logged, not fatal: a leftover folder costs disk, not correctness.
pub(super) fn sweep_dead_runs(tmpdir: &Path) {
    let Ok(entries) = std::fs::read_dir(tmpdir) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let renamed = name.starts_with(RUN_DIR_PREFIX);
        if !renamed && !name.starts_with(NEW_DIR_PREFIX) {
            continue;
        }
        // DirEntry metadata does not follow symlinks: only real folders of ours are touched.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        if !renamed {
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
            if age.is_none_or(|a| a < NEW_DIR_STALE) {
                continue;
            }
        }
        let path = entry.path();
        let Ok(dir) = open_dir(&path) else { continue };
        let Ok(_lock) = Flock::lock(dir, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed scratch folder left by an earlier run")
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove scratch folder left by an earlier run")
            }
        }
    }
}

/// Owns one request's folder: dropping it removes the folder, on the [`janitor`] thread
/// (unlinking a large file, or a folder on a journalling filesystem, can take milliseconds
/// the request should not wait for).
pub(super) struct ScratchDir {
    path: Option<PathBuf>,
    input: &'static str,
}

impl ScratchDir {
    pub(super) fn new(path: PathBuf, input: &'static str) -> ScratchDir {
        ScratchDir {
            path: Some(path),
            input,
        }
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().expect("present until drop")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        let unsent = match janitor() {
            Some(tx) => tx.send((path, self.input)).err().map(|e| e.0 .0),
            None => Some(path),
        };
        if let Some(path) = unsent {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// The queue of the thread that removes request folders. One long-lived thread rather than
/// a blocking-pool task per request: under load it is busy and a send wakes nobody, where
/// each pool task costs two thread hand-offs. Paths still queued when the process exits are
/// covered by [`RunDir`]'s removal (or, after a crash, the next start's sweep).
pub(super) fn janitor() -> Option<&'static mpsc::Sender<(PathBuf, &'static str)>> {
    static TX: OnceLock<Option<mpsc::Sender<(PathBuf, &'static str)>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("fwatchdog-janitor".into())
            .spawn(move || janitor_loop(rx))
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Removes queued folders. One that resists (a stopped command's process group may still be
/// creating files in it until SIGKILL, [`KILL_GRACE`] after SIGTERM) is retried every 50 ms
/// for a while, without holding up the rest of the queue.
pub(super) fn janitor_loop(rx: mpsc::Receiver<(PathBuf, &'static str)>) {
    const RETRY_EVERY: Duration = Duration::from_millis(50);
    let mut stubborn: Vec<(PathBuf, Instant)> = Vec::new();
    let mut last_retry = Instant::now();
    loop {
        let next = if stubborn.is_empty() {
            match rx.recv() {
                Ok(p) => Some(p),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(p) => Some(p),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        if let Some((path, input)) = next {
            if remove_request_dir(&path, input).is_err() {
                stubborn.push((path, Instant::now() + KILL_GRACE + Duration::from_secs(1)));
            }
        }
        if stubborn.is_empty() || last_retry.elapsed() < RETRY_EVERY {
            continue;
        }
        last_retry = Instant::now();
        stubborn.retain(|(path, give_up)| match remove_tree(path) {
            Ok(()) => false,
            Err(e) if Instant::now() >= *give_up => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove request scratch folder");
                false
            }
            Err(_) => true,
        });
    }
}

/// Removes a request folder the quick way when it holds only what the watchdog and the
/// command were told about (three calls, where `remove_dir_all` needs about seven), else the
/// thorough way.
pub(super) fn remove_request_dir(dir: &Path, input: &str) -> io::Result<()> {
    for name in [input, "output"] {
        if let Err(e) = std::fs::remove_file(dir.join(name)) {
            if e.kind() != io::ErrorKind::NotFound {
                return remove_tree(dir);
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => remove_tree(dir),
        _ => Ok(()),
    }
}

/// `remove_dir_all` where a folder already gone counts as removed.
pub(super) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
