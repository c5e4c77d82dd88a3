//! `static`: serves the files under `static_path`, and nothing outside it.
//!
//! Containment does not rest on string checks alone: a path with a `..` segment (plain or
//! percent-encoded), an encoded `/` or a NUL is refused outright, and every file actually
//! opened is then checked by where its open descriptor really points
//! (`/proc/self/fd/N`), so a symlink (or a component swapped for one meanwhile) that leads
//! out of `static_path` gives 404 rather than its target.
//!
//! Each request costs one trip to the blocking pool: look-up, open, checks and, for a small
//! file, the whole read happen there together. Larger files stream in chunks, so memory
//! stays flat whatever their size.

mod conditional;
#[cfg(test)]
mod tests;

use conditional::{etag, Conditions, Span};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body, ReqBody};
use crate::config::{ConfigError, StaticConfig};
use crate::error::Error;

/// Files up to this size are read whole in the same blocking call that opens them; larger
/// ones stream in pieces of this size.
const CHUNK: usize = 64 * 1024;

/// Content types by file extension (compared case-insensitively). Text types carry a
/// charset so browsers do not guess one.
const CONTENT_TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "application/xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("svg", "image/svg+xml"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
];

/// The Content-Type for `path`'s extension; `application/octet-stream` when unknown.
pub fn content_type(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return "application/octet-stream";
    };
    CONTENT_TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, t)| *t)
        .unwrap_or("application/octet-stream")
}

/// The static file server.
pub struct StaticFiles {
    /// `static_path`, canonical, so that resolved file paths can be compared with it.
    root: Arc<PathBuf>,
}

/// What a request path names once decoded.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A path relative to the root (empty for the root itself), and the canonical URL path
    /// for it (used for the trailing-slash redirect).
    Path(PathBuf, String),
    /// Not servable whatever the tree holds (`..`, encoded `/`, NUL...).
    Refused,
    /// A malformed percent escape.
    Malformed,
}

/// Splits the URL path into segments and decodes each. `..` is refused rather than
/// resolved, so no request can climb out of the root however it is spelled.
fn target(path: &str) -> Target {
    let Some(rest) = path.strip_prefix('/') else {
        return Target::Refused;
    };
    let mut rel = PathBuf::new();
    let mut url = String::with_capacity(path.len());
    for seg in rest.split('/') {
        let Some(decoded) = percent_decode(seg) else {
            return Target::Malformed;
        };
        match decoded.as_slice() {
            b"" | b"." => continue,
            b".." => return Target::Refused,
            d if d.contains(&b'/') || d.contains(&0) => return Target::Refused,
            d => {
                rel.push(std::ffi::OsStr::from_bytes(d));
                url.push('/');
                url.push_str(seg);
            }
        }
    }
    Target::Path(rel, url)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A file opened and vetted in the blocking pool.
struct Opened {
    file: File,
    len: u64,
    mtime: SystemTime,
    is_dir: bool,
    is_file: bool,
    /// The path as asked for (a symlink's own name decides its content type, as in nginx).
    path: PathBuf,
}

enum Found {
    File(Opened),
    /// A folder asked for without its trailing slash.
    AddSlash,
    Missing,
}

/// Opens `path` and returns it only if what was opened lies under `root`. Non-blocking
/// open, so a FIFO planted in the tree cannot park a blocking thread.
fn open_inside(root: &Path, path: &Path) -> Option<Opened> {
    let pre = std::fs::metadata(path).ok()?;
    if !pre.is_file() && !pre.is_dir() {
        return None;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(path))
        .ok()?;
    if !real.starts_with(root) {
        return None;
    }
    let meta = file.metadata().ok()?;
    Some(Opened {
        file,
        len: meta.len(),
        mtime: meta.modified().unwrap_or(UNIX_EPOCH),
        is_dir: meta.is_dir(),
        is_file: meta.is_file(),
        path: path.to_path_buf(),
    })
}

fn find(root: &Path, rel: &Path, trailing_slash: bool) -> Found {
    let full = root.join(rel);
    let Some(opened) = open_inside(root, &full) else {
        return Found::Missing;
    };
    let opened = if opened.is_dir {
        if !trailing_slash && !rel.as_os_str().is_empty() {
            return Found::AddSlash;
        }
        match open_inside(root, &full.join("index.html")) {
            Some(index) => index,
            None => return Found::Missing,
        }
    } else {
        opened
    };
    if !opened.is_file {
        return Found::Missing;
    }
    Found::File(opened)
}

fn not_found() -> Response<Body> {
    body::text_response(StatusCode::NOT_FOUND, "not found\n")
}

fn header_value(s: &str) -> HeaderValue {
    // Only ever called with ASCII we formatted ourselves.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the blocking part hands back: the vetted file, plus the bytes already read when
/// the span was small enough to read at once.
struct Prepared {
    opened: Opened,
    head: Option<Bytes>,
}

/// The outcome of the blocking part of a request.
enum Outcome {
    Serve(Prepared, Span),
    AddSlash,
    Missing,
}

impl StaticFiles {
    /// A server for `config.static_path`, which must be an existing folder.
    pub fn new(config: &StaticConfig) -> Result<StaticFiles, ConfigError> {
        let path = &config.static_path;
        let root = std::fs::canonicalize(path)
            .map_err(|e| ConfigError::new("static_path", format!("{}: {e}", path.display())))?;
        if !root.is_dir() {
            return Err(ConfigError::new(
                "static_path",
                format!("{} is not a folder", path.display()),
            ));
        }
        Ok(StaticFiles {
            root: Arc::new(root),
        })
    }

    /// Handles one request: GET and HEAD only, conditional requests and single byte ranges.
    pub async fn handle(&self, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed {
                allow: "GET, HEAD",
                why: "use GET or HEAD",
            });
        }
        let uri_path = req.uri().path();
        let (rel, url) = match target(uri_path) {
            Target::Path(rel, url) => (rel, url),
            Target::Refused => return Ok(not_found()),
            Target::Malformed => {
                return Err(Error::BadRequest("malformed percent escape in path".into()))
            }
        };
        let trailing_slash = uri_path.ends_with('/');
        let cond = Arc::new(Conditions::of(req.headers(), &method));
        let root = self.root.clone();
        let want_body = method == Method::GET;

        let job_cond = cond.clone();
        let job = tokio::task::spawn_blocking(move || -> io::Result<Outcome> {
            let cond = job_cond;
            let mut opened = match find(&root, &rel, trailing_slash) {
                Found::File(o) => o,
                Found::AddSlash => return Ok(Outcome::AddSlash),
                Found::Missing => return Ok(Outcome::Missing),
            };
            let (len, mtime) = (opened.len, opened.mtime);
            let tag = etag(len, mtime);
            let span = cond.span(&tag, mtime, len);
            let (start, count) = match span {
                Span::Full => (0, len),
                Span::Part(a, b) => (a, b - a + 1),
                Span::Unsatisfiable => (0, 0),
            };
            let mut head = None;
            let answer_is_body =
                want_body && span != Span::Unsatisfiable && !cond.not_modified(&tag, mtime);
            if answer_is_body && count <= CHUNK as u64 {
                if start > 0 {
                    opened.file.seek(SeekFrom::Start(start))?;
                }
                let mut buf = BytesMut::zeroed(count as usize);
                opened.file.read_exact(&mut buf)?;
                head = Some(buf.freeze());
            } else if answer_is_body && start > 0 {
                opened.file.seek(SeekFrom::Start(start))?;
            }
            Ok(Outcome::Serve(Prepared { opened, head }, span))
        })
        .await;

        let (prepared, span) = match job {
            Ok(Ok(Outcome::Serve(prepared, span))) => (prepared, span),
            Ok(Ok(Outcome::Missing)) => return Ok(not_found()),
            Ok(Ok(Outcome::AddSlash)) => {
                let mut location = url;
                location.push('/');
                if let Some(q) = req.uri().query() {
                    location.push('?');
                    location.push_str(q);
                }
                let mut resp = body::text_response(StatusCode::MOVED_PERMANENTLY, "moved\n");
                resp.headers_mut()
                    .insert(header::LOCATION, header_value(&location));
                return Ok(resp);
            }
            Ok(Err(e)) => {
                // The file went away or could not be read between the checks and the read.
                tracing::debug!(error = %e, path = uri_path, "static file not served");
                return Ok(not_found());
            }
            Err(_) => return Err(Error::Unavailable("static file read was cancelled")),
        };
        Ok(respond(&method, &cond, prepared, span))
    }
}

fn respond(method: &Method, cond: &Conditions, prepared: Prepared, span: Span) -> Response<Body> {
    let Prepared { opened, head } = prepared;
    let (len, mtime) = (opened.len, opened.mtime);
    let tag = etag(len, mtime);

    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(header::ETAG, header_value(&tag));
    h.insert(
        header::LAST_MODIFIED,
        header_value(&httpdate::fmt_http_date(mtime)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    if cond.not_modified(&tag, mtime) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }
    let (status, start, count) = match span {
        Span::Full => (StatusCode::OK, 0, len),
        Span::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Span::Unsatisfiable => {
            let mut resp =
                body::text_response(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{len}")),
            );
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return resp;
        }
    };
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&opened.path)),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {}-{}/{len}", start, start + count - 1)),
        );
    }
    if *method == Method::HEAD {
        return resp;
    }
    *resp.body_mut() = match head {
        Some(bytes) => body::full(bytes),
        None => body::FileBody::boxed(opened.file, count, CHUNK),
    };
    resp
}
