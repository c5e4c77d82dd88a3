//! Secrets: the lookup order, the secrets required at start, and the API-key and HMAC checks
//! every function request passes.
//!
//! Secret values are cached together with the identity of the file they came from and
//! re-read only when that identity changes, so a rotated secret (Kubernetes swaps mounted
//! files by flipping a symlink; Docker and operators replace files by rename) is honoured on
//! the next request without a restart, at the cost of one `stat` per check. Values never
//! reach a log line, an error body or a `Debug` rendering.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use http::header::{HeaderName, AUTHORIZATION};
use http::request::Parts;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::body::ReqBody;
use crate::config::{Config, ConfigError};
use crate::error::Error;

/// Where Docker and Compose mount secrets: the last place a secret is looked for.
pub const DOCKER_SECRETS_DIR: &str = "/run/secrets";

/// The header carrying the API key as an alternative to `Authorization: Bearer`.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// GitHub's webhook signature header: `sha256=<hex HMAC-SHA256 of the body>`.
const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-hub-signature-256");

/// Secret files larger than this are refused: Kubernetes caps a secret at 1 MiB, and a
/// mistyped name must not make the watchdog hold some large file in memory.
const MAX_SECRET_BYTES: u64 = 1024 * 1024;

/// A secret's bytes, surrounding white space trimmed. `Debug` never shows them.
struct SecretValue(Vec<u8>);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([redacted, {} bytes])", self.0.len())
    }
}

/// What tells two versions of a secret file apart without reading them. The inode changes
/// on every Kubernetes flip and every rename; mtime, ctime and length catch in-place writes
/// (unless one lands within the file system's timestamp granularity with the same length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    len: u64,
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            len: m.len(),
        }
    }
}

/// The lookup order for secret files, in one place so that start-up checks, request checks
/// and error messages agree.
#[derive(Debug, Clone)]
struct Locations {
    mount: PathBuf,
    docker: PathBuf,
}

/// A secret file that was found and read.
struct Found {
    path: PathBuf,
    id: FileId,
    value: SecretValue,
}

impl Locations {
    fn new(mount: &Path) -> Locations {
        Locations {
            mount: mount.to_path_buf(),
            docker: PathBuf::from(DOCKER_SECRETS_DIR),
        }
    }

    /// OpenFaaS and Kubernetes projected volumes, then faas-cli's Knative layout (a folder
    /// per secret), then Docker and Compose.
    fn candidates(&self, name: &str) -> [PathBuf; 3] {
        [
            self.mount.join(name),
            self.mount.join(name).join(name),
            self.docker.join(name),
        ]
    }

    /// The first candidate that is a readable regular file, read; or a one-line reason
    /// listing every path tried (never the value).
    fn find(&self, name: &str) -> Result<Found, String> {
        let mut tried = Vec::new();
        for path in self.candidates(name) {
            match read_secret_file(&path) {
                Ok((id, value)) => return Ok(Found { path, id, value }),
                // A missing file, or the Knative folder itself, is the normal way to fall
                // through; anything else is worth telling the operator about.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tried.push(path.display().to_string())
                }
                Err(e) => tried.push(format!("{} ({e})", path.display())),
            }
        }
        Err(format!(
            "secret {name:?} not found or not readable (tried {})",
            tried.join(", ")
        ))
    }
}

/// Stats following symlinks: a secret must be a regular file, and a FIFO or device must not
/// be opened at all (opening a FIFO would block start-up or a request).
fn stat_regular(path: &Path) -> io::Result<Metadata> {
    let m = std::fs::metadata(path)?;
    if m.is_file() {
        Ok(m)
    } else if m.is_dir() {
        Err(io::Error::new(io::ErrorKind::NotFound, "is a directory"))
    } else {
        Err(io::Error::other("not a regular file"))
    }
}

/// Reads a secret file. The identity comes from the opened file rather than the path, so a
/// flip between the stat and the read can never pair one version's identity with another
/// version's value.
fn read_secret_file(path: &Path) -> io::Result<(FileId, SecretValue)> {
    stat_regular(path)?;
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(io::Error::other("larger than 1 MiB"));
    }
    let mut raw = Vec::with_capacity(meta.len() as usize);
    file.by_ref()
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_SECRET_BYTES {
        return Err(io::Error::other("larger than 1 MiB"));
    }
    let value = SecretValue(raw.trim_ascii().to_vec());
    Ok((FileId::of(&meta), value))
}

/// A secret used on every request, with its cached value.
struct Secret {
    name: String,
    locations: Locations,
    state: RwLock<State>,
}

/// The last look at the secret's file. `value` is `None` while the secret is unavailable
/// (gone or empty), which makes every check fail closed.
struct State {
    path: PathBuf,
    id: Option<FileId>,
    value: Option<Arc<SecretValue>>,
    /// How often the file was read: lets tests prove an unchanged file is not re-read.
    loads: u64,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self
            .state
            .read()
            .map(|s| s.path.display().to_string())
            .unwrap_or_default();
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("path", &path)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Loads `name` at start; an absent, unreadable or empty secret is a `ConfigError` for
    /// `var` (an empty API key would let an empty header through).
    fn load(var: &str, name: &str, locations: &Locations) -> Result<Secret, ConfigError> {
        let found = locations
            .find(name)
            .map_err(|reason| ConfigError::new(var, reason))?;
        if found.value.0.is_empty() {
            return Err(ConfigError::new(
                var,
                format!("secret {name:?} at {} is empty", found.path.display()),
            ));
        }
        Ok(Secret {
            name: name.to_string(),
            locations: locations.clone(),
            state: RwLock::new(State {
                path: found.path,
                id: Some(found.id),
                value: Some(Arc::new(found.value)),
                loads: 1,
            }),
        })
    }

    /// The current value: the cached one while the file's identity is unchanged, else the
    /// file read again (or the lookup order walked again if the file went away). `None` when
    /// the secret is gone or empty.
    fn current(&self) -> Option<Arc<SecretValue>> {
        {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            if let (Some(value), Ok(meta)) = (&st.value, stat_regular(&st.path)) {
                if st.id == Some(FileId::of(&meta)) {
                    return Some(value.clone());
                }
            }
        }
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Another request may have reloaded while this one waited for the lock.
        if let (Some(value), Ok(meta)) = (&st.value, stat_regular(&st.path)) {
            if st.id == Some(FileId::of(&meta)) {
                return Some(value.clone());
            }
        }
        let found = match read_secret_file(&st.path) {
            Ok((id, value)) => Ok(Found {
                path: st.path.clone(),
                id,
                value,
            }),
            Err(_) => self.locations.find(&self.name),
        };
        let was_available = st.value.is_some();
        match found {
            Ok(found) if !found.value.0.is_empty() => {
                tracing::info!(secret = %self.name, path = %found.path.display(), "secret reloaded");
                st.loads += 1;
                st.path = found.path;
                st.id = Some(found.id);
                let value = Arc::new(found.value);
                st.value = Some(value.clone());
                Some(value)
            }
            other => {
                if was_available {
                    let why = match other {
                        Ok(_) => "is empty".to_string(),
                        Err(reason) => reason,
                    };
                    tracing::warn!(secret = %self.name, "secret unavailable, refusing requests: {why}");
                }
                st.id = None;
                st.value = None;
                None
            }
        }
    }
}

/// Request authentication configured by `api_key_secret` and `hmac_secret`.
pub struct Auth {
    api_key: Option<Secret>,
    hmac: Option<Secret>,
    body_limit: u64,
    /// Bytes all requests together may hold before their signature is checked.
    unverified: crate::body::Budget,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("api_key", &self.api_key)
            .field("hmac", &self.hmac)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

impl Auth {
    /// Validates `secrets`, `api_key_secret` and `hmac_secret` at start: each must be a
    /// readable regular file somewhere in the lookup order (the two request secrets also
    /// non-empty), or start-up fails naming the setting, the secret and the paths tried.
    pub fn from_config(config: &Config) -> Result<Auth, ConfigError> {
        Auth::with_locations(config, Locations::new(&config.secret_mount_path))
    }

    fn with_locations(config: &Config, locations: Locations) -> Result<Auth, ConfigError> {
        for name in &config.secrets {
            // Only existence and readability matter here; the value is the function's.
            locations
                .find(name)
                .map_err(|reason| ConfigError::new("secrets", reason))?;
        }
        let api_key = config
            .api_key_secret
            .as_deref()
            .map(|name| Secret::load("api_key_secret", name, &locations))
            .transpose()?;
        let hmac = config
            .hmac_secret
            .as_deref()
            .map(|name| Secret::load("hmac_secret", name, &locations))
            .transpose()?;
        if api_key.is_some() || hmac.is_some() {
            tracing::info!(
                api_key_secret = config.api_key_secret.as_deref().unwrap_or("-"),
                hmac_secret = config.hmac_secret.as_deref().unwrap_or("-"),
                "request authentication enabled"
            );
        }
        Ok(Auth {
            api_key,
            hmac,
            body_limit: config.buffered_body_limit(),
            unverified: crate::body::Budget::new(config.hmac_buffer_limit),
        })
    }

    /// Checks a function request; returns the body to hand on (unchanged bytes). The API key
    /// is checked first, so a request without one never gets its body read; with an HMAC
    /// secret the body is buffered (up to the in-memory bound, within `read_deadline`),
    /// verified and handed on as a new body.
    pub async fn verify(
        &self,
        parts: &Parts,
        body: ReqBody,
        read_deadline: tokio::time::Instant,
    ) -> Result<ReqBody, Error> {
        if let Some(secret) = &self.api_key {
            let key = secret
                .current()
                .ok_or(Error::Unavailable("API key secret unavailable"))?;
            check_api_key(parts, &key)?;
        }
        let Some(secret) = &self.hmac else {
            return Ok(body);
        };
        // Refuse before reading: a missing signature must not cost a 64 MiB upload.
        let signature = signature(parts)?;
        let key = secret
            .current()
            .ok_or(Error::Unavailable("HMAC secret unavailable"))?;
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
            return Err(Error::Unavailable("HMAC secret unusable"));
        };
        // Until the signature is checked these bytes are anyone's: what all such requests
        // hold together is bounded, not only each one.
        let bytes = crate::body::read_body_within(
            body,
            self.body_limit,
            read_deadline,
            &self.unverified,
            |chunk| mac.update(chunk),
        )
        .await?;
        // verify_slice compares in constant time (it uses subtle underneath).
        if mac.verify_slice(&signature).is_err() {
            return Err(Error::Unauthorized(
                "X-Hub-Signature-256 does not match the body",
            ));
        }
        Ok(Full::new(bytes).map_err(|e| match e {}).boxed_unsync())
    }
}

/// Accepts the key from any `Authorization: Bearer` or `X-Api-Key` header.
fn check_api_key(parts: &Parts, key: &SecretValue) -> Result<(), Error> {
    let bearer = parts
        .headers
        .get_all(AUTHORIZATION)
        .into_iter()
        .filter_map(|v| {
            let v = v.as_bytes().trim_ascii();
            let split = v
                .iter()
                .position(u8::is_ascii_whitespace)
                .unwrap_or(v.len());
            let (scheme, token) = v.split_at(split);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| token.trim_ascii())
        });
    let api_key = parts
        .headers
        .get_all(X_API_KEY)
        .into_iter()
        .map(|v| v.as_bytes().trim_ascii());
    let mut presented = false;
    let mut matched = false;
    for candidate in bearer.chain(api_key) {
        presented = true;
        // Every candidate is compared, so the time taken does not tell which one matched.
        matched |= bool::from(keys_equal(candidate, &key.0));
    }
    match (presented, matched) {
        (_, true) => Ok(()),
        (false, _) => Err(Error::Unauthorized(
            "API key required (Authorization: Bearer <key> or X-Api-Key: <key>)",
        )),
        (true, false) => Err(Error::Unauthorized("invalid API key")),
    }
}

/// Compares digests rather than the keys themselves so that neither the position of the
/// first differing byte nor the key's length shows in the timing.
fn keys_equal(presented: &[u8], key: &[u8]) -> subtle::Choice {
    Sha256::digest(presented).ct_eq(&Sha256::digest(key))
}

/// The 32 bytes of `X-Hub-Signature-256: sha256=<hex>`.
fn signature(parts: &Parts) -> Result<[u8; 32], Error> {
    let value = parts
        .headers
        .get(SIGNATURE_HEADER)
        .ok_or(Error::Unauthorized(
            "X-Hub-Signature-256 required (sha256=<hex HMAC-SHA256 of the body>)",
        ))?;
    value
        .as_bytes()
        .trim_ascii()
        .strip_prefix(b"sha256=")
        .and_then(decode_hex32)
        .ok_or(Error::Unauthorized(
            "X-Hub-Signature-256 must be sha256=<64 hex digits>",
        ))
}

fn decode_hex32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// HMAC-SHA256 of `body` under `key`, compared with `signature` in constant time (the
/// request path does the same incrementally, as the body arrives).
#[cfg(test)]
fn hmac_matches(key: &[u8], body: &[u8], signature: &[u8; 32]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time (it uses subtle underneath).
    mac.verify_slice(signature).is_ok()
}

#[cfg(test)]
mod tests;
