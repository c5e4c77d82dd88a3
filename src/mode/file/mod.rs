//! `file`: the request body is streamed to a private file whose path the command gets as its
//! last argument (and in `INPUT_FILE`); what the command writes to `OUTPUT_FILE`, or else
//! prints, is the response. This turns a command-line tool (`start.sh input.json`) into an
//! HTTP function without it knowing about HTTP.
//!
//! Layout: at start the watchdog makes one run folder, `$TMPDIR/fwatchdog-file-<pid>-<n>`
//! (0700), and holds an exclusive `flock` on it for its whole life. Each request gets a
//! fresh sub-folder (0700) holding `input.{json,txt,bin}` (0600) and, if the command writes
//! one, `output`. A request's folder is removed when the request ends, however it ends; the
//! run folder when the watchdog stops. A run folder whose lock nobody holds any more was left
//! by a crashed watchdog and is removed at start; the lock (not a pid, which a restarted
//! container reuses) tells a dead run from a live watchdog sharing the same `$TMPDIR`.

mod scratch;

use scratch::{sweep_dead_runs, RunDir, ScratchDir};

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response};

use crate::body::{Body, FileBody, Guarded, ReqBody};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::mode::fork::{self, Fork};
use crate::mode::Ctx;

/// Name prefix of the run folders under `$TMPDIR`; anything so named and unlocked is
/// removed at start.
pub const RUN_DIR_PREFIX: &str = "fwatchdog-file-";

/// Run folders are created under this prefix and renamed to [`RUN_DIR_PREFIX`] only once
/// locked, so a watchdog starting at the same moment never mistakes a fresh, not yet locked
/// folder for a dead one.
const NEW_DIR_PREFIX: &str = "fwatchdog-new-";

/// A not-yet-renamed run folder older than this was left by a crash during start.
const NEW_DIR_STALE: Duration = Duration::from_secs(60);

/// Body bytes gathered before one write on the blocking pool: few trips for a large upload,
/// while memory stays flat for any size.
const WRITE_BATCH: usize = 256 * 1024;

/// A body up to this size, complete in memory, is checked and stored (folder, file, write)
/// on the request's own task, as nginx writes its client-body temp files from its event loop:
/// a few metadata calls on the local `$TMPDIR` cost less than the two thread hand-offs of a
/// trip to the blocking pool (about 5 % of a small request's CPU time, bench/file.sh).
const INLINE_MAX: usize = 64 * 1024;

/// Read size when streaming `OUTPUT_FILE` to the client.
const READ_CHUNK: usize = 128 * 1024;

/// The file-input command runner.
pub struct FileMode {
    fork: Fork,
    run_dir: RunDir,
    seq: AtomicU64,
}

impl FileMode {
    /// A runner for `config`: removes run folders left under `$TMPDIR` by a crashed watchdog
    /// and makes this run's own (which is why it can fail, naming `TMPDIR`).
    pub fn new(
        config: Arc<Config>,
        settings: crate::config::ForkConfig,
        shared: &crate::mode::Shared,
    ) -> Result<FileMode, ConfigError> {
        sweep_dead_runs(&config.tmpdir);
        let run_dir = RunDir::create(&config.tmpdir).map_err(|e| {
            ConfigError::new(
                "TMPDIR",
                format!(
                    "cannot create a scratch folder in {}: {e}",
                    config.tmpdir.display()
                ),
            )
        })?;
        Ok(FileMode {
            fork: Fork::new(config, settings, shared),
            run_dir,
            seq: AtomicU64::new(0),
        })
    }

    /// Handles one request: body to file, command run, `OUTPUT_FILE` or stdout back.
    pub async fn handle(&self, req: Request<ReqBody>, ctx: &Ctx) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let kind = InputKind::of(&parts.headers);
        let dir = self
            .run_dir
            .path
            .join(self.seq.fetch_add(1, Ordering::Relaxed).to_string());
        let (scratch, input) = self.stage(body, dir, kind, ctx).await?;
        let output = scratch.path().join("output");
        let started = self.fork.start(
            &parts,
            ctx,
            &[input.as_os_str()],
            &[
                ("INPUT_FILE", input.as_os_str()),
                ("OUTPUT_FILE", output.as_os_str()),
            ],
            false,
        )?;
        let (status, stdout) = self.fork.run_collect(started, None, ctx).await?;
        if !status.success() {
            // A failed run is answered like serializing mode (its stdout, or a line naming
            // the exit status); a half-written OUTPUT_FILE is no answer.
            return self.fork.respond_collected(
                &parts.method,
                parts.headers.get(header::CONTENT_TYPE),
                status,
                stdout,
            );
        }
        let Some((file, len)) = open_output(&output)? else {
            return self.fork.respond_collected(
                &parts.method,
                parts.headers.get(header::CONTENT_TYPE),
                status,
                stdout,
            );
        };
        // With cgi_response, stdout may still carry the header block for the file's body,
        // and a Content-Length there must be the file's.
        let c = self.fork.parse_collected(status, stdout)?;
        crate::cgi::check_response_length(&parts.method, c.code, c.declared, len)
            .map_err(Error::FunctionFailed)?;
        let mut headers = c.headers;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        // The request's folder goes once the last byte is out or the client goes away.
        let body = Guarded::wrap(FileBody::boxed(file, len, READ_CHUNK), scratch);
        Ok(fork::response(
            &self.fork.settings().content_type,
            c.code,
            headers,
            body,
        ))
    }

    /// Streams the body into `dir/input.<ext>` within the read deadline and size limit, and
    /// checks JSON unless `RAW_BODY`. The returned guard removes `dir` when dropped.
    async fn stage(
        &self,
        mut body: ReqBody,
        dir: PathBuf,
        kind: InputKind,
        ctx: &Ctx,
    ) -> Result<(ScratchDir, PathBuf), Error> {
        let config = self.fork.config();
        let limit = config.max_body_size;
        let mut staging = Staging {
            input: dir.join(kind.file_name()),
            dir: ScratchDir::new(dir, kind.file_name()),
            file: None,
        };
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        let mut total: u64 = 0;
        while let Some(data) =
            crate::body::next_data(&mut body, ctx.read_deadline, &mut total, limit).await?
        {
            batched += data.len();
            batch.push(data);
            if batched >= WRITE_BATCH {
                let chunks = std::mem::take(&mut batch);
                batched = 0;
                staging = blocking(staging, move |s| s.write(&chunks)).await?;
            }
        }
        // An empty body is no JSON document to check: a GET that carries a stray
        // `Content-Type: application/json` still reaches the command (with an empty file).
        let check_json = !config.raw_body && kind == InputKind::Json && total > 0;
        if staging.file.is_none() && batched <= INLINE_MAX {
            // Small and whole in memory: checked before anything touches the disk.
            if check_json {
                check_json_bytes(&batch).map_err(|e| stage_error(&staging.input, e))?;
            }
            if let Err(e) = staging.write(&batch).and_then(|()| staging.finish(false)) {
                return Err(stage_error(&staging.input, e));
            }
        } else {
            staging = blocking(staging, move |s| {
                s.write(&batch)?;
                s.finish(check_json)
            })
            .await?;
        }
        Ok((staging.dir, staging.input))
    }
}

/// What the request body is, by its media type; decides the input file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `application/json` or any `+json` type: `input.json`.
    Json,
    /// `text/*`: `input.txt`.
    Text,
    /// Anything else, or no Content-Type: `input.bin`.
    Binary,
}

impl InputKind {
    /// Classifies a request by its first `Content-Type` header. Parameters (`; charset=…`)
    /// and case do not matter; a value that is not `type/subtype` counts as binary.
    pub fn of(headers: &HeaderMap) -> InputKind {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map_or(InputKind::Binary, InputKind::from_media_type)
    }

    /// Classifies one `Content-Type` value.
    pub fn from_media_type(value: &str) -> InputKind {
        // The essence ends at the first ';': type and subtype are tokens, which cannot
        // hold one, so a quoted parameter cannot confuse this.
        let essence = value.split(';').next().unwrap_or_default().trim();
        let Some((ty, sub)) = essence.split_once('/') else {
            return InputKind::Binary;
        };
        let (ty, sub) = (ty.trim(), sub.trim());
        if ty.is_empty() || sub.is_empty() {
            return InputKind::Binary;
        }
        let sub = sub.to_ascii_lowercase();
        if (ty.eq_ignore_ascii_case("application") && sub == "json") || sub.ends_with("+json") {
            InputKind::Json
        } else if ty.eq_ignore_ascii_case("text") {
            InputKind::Text
        } else {
            InputKind::Binary
        }
    }

    /// The input file's name.
    pub fn file_name(self) -> &'static str {
        match self {
            InputKind::Json => "input.json",
            InputKind::Text => "input.txt",
            InputKind::Binary => "input.bin",
        }
    }
}

/// A request's input while it is being written. It travels into each blocking call and
/// back, so that if the request is cancelled mid-write the folder guard is dropped only
/// after the blocking call finished creating things in it.
struct Staging {
    input: PathBuf,
    dir: ScratchDir,
    file: Option<File>,
}

/// Why staging the input failed.
enum StageError {
    Io(io::Error),
    Json(serde_json::Error),
}

impl From<io::Error> for StageError {
    fn from(e: io::Error) -> Self {
        StageError::Io(e)
    }
}

impl Staging {
    /// Appends `chunks`, creating the folder (0700) and file (0600) first: the modes are
    /// given at creation, so there is no moment when either is more open.
    fn write(&mut self, chunks: &[Bytes]) -> Result<(), StageError> {
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                DirBuilder::new().mode(0o700).create(self.dir.path())?;
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&self.input)?;
                self.file.insert(f)
            }
        };
        for c in chunks {
            file.write_all(c)?;
        }
        Ok(())
    }

    /// Closes the file, after checking it parses as one JSON document if `check_json`. The
    /// check reads the file back (from the page cache) instead of keeping a copy in memory;
    /// `IgnoredAny` builds nothing.
    fn finish(&mut self, check_json: bool) -> Result<(), StageError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        if check_json {
            file.rewind()?;
            let reader = BufReader::with_capacity(64 * 1024, &mut file);
            serde_json::from_reader::<_, serde::de::IgnoredAny>(reader).map_err(|e| {
                if e.is_io() {
                    StageError::Io(e.into())
                } else {
                    StageError::Json(e)
                }
            })?;
        }
        Ok(())
    }
}

/// Checks a small body held in memory parses as one JSON document.
fn check_json_bytes(chunks: &[Bytes]) -> Result<(), StageError> {
    let joined;
    let bytes: &[u8] = match chunks {
        [one] => one,
        _ => {
            joined = chunks.concat();
            &joined
        }
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(StageError::Json)?;
    Ok(())
}

/// Runs `f` on `staging` on the blocking pool and hands `staging` back.
async fn blocking(
    mut staging: Staging,
    f: impl FnOnce(&mut Staging) -> Result<(), StageError> + Send + 'static,
) -> Result<Staging, Error> {
    let (staging, res) = tokio::task::spawn_blocking(move || {
        let res = f(&mut staging);
        (staging, res)
    })
    .await
    .map_err(|e| Error::FunctionFailed(format!("writing the request body: {e}")))?;
    match res {
        Ok(()) => Ok(staging),
        Err(e) => Err(stage_error(&staging.input, e)),
    }
}

/// Invalid JSON is the client's fault (400 with the parser's words); a write that failed
/// (disk full, TMPDIR gone) is ours and transient, so 503 invites a retry elsewhere.
fn stage_error(input: &Path, e: StageError) -> Error {
    match e {
        StageError::Json(e) => Error::BadRequest(format!("request body is not valid JSON: {e}")),
        StageError::Io(e) => {
            tracing::error!(file = %input.display(), error = %e, "cannot store the request body");
            Error::Unavailable("cannot store the request body in TMPDIR")
        }
    }
}

/// Opens `OUTPUT_FILE` if the command wrote one: a regular file (a FIFO or folder there is
/// ignored, and O_NONBLOCK keeps a FIFO from hanging the open), with its length. Done on the
/// request's task: usually one failed lookup in a folder just created, not worth a thread
/// hand-off.
fn open_output(path: &Path) -> Result<Option<(File, u64)>, Error> {
    let failed = |e: io::Error| Error::FunctionFailed(format!("cannot read OUTPUT_FILE: {e}"));
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let meta = file.metadata().map_err(failed)?;
    if !meta.is_file() {
        tracing::warn!(path = %path.display(), "OUTPUT_FILE is not a regular file; using stdout");
        return Ok(None);
    }
    Ok(Some((file, meta.len())))
}

#[cfg(test)]
mod tests;
