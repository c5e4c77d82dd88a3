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
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use http_body::Frame;

    fn scratch(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fwd-secrets-unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Removes a test's folder when the test ends.
    struct Tmp(PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A mount folder and a stand-in for /run/secrets.
    fn locations(tag: &str) -> (Tmp, Locations) {
        let root = scratch(tag);
        let l = Locations {
            mount: root.join("mount"),
            docker: root.join("docker"),
        };
        std::fs::create_dir_all(&l.mount).unwrap();
        std::fs::create_dir_all(&l.docker).unwrap();
        (Tmp(root), l)
    }

    fn write(path: &Path, value: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, value).unwrap();
    }

    fn config(l: &Locations, pairs: &[(&str, &str)]) -> Config {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("fprocess".into(), "cat".into());
        map.insert(
            "secret_mount_path".into(),
            l.mount.to_string_lossy().into_owned(),
        );
        Config::from_lookup(&map, None).unwrap()
    }

    fn found(l: &Locations, name: &str) -> (PathBuf, Vec<u8>) {
        let f = l.find(name).unwrap();
        (f.path, f.value.0)
    }

    #[test]
    fn lookup_order_and_trimming() {
        let (_tmp, l) = locations("order");
        let [flat, nested, docker] = l.candidates("k");
        assert_eq!(flat, l.mount.join("k"));
        assert_eq!(nested, l.mount.join("k/k"));
        assert_eq!(docker, l.docker.join("k"));

        write(&docker, "docker-value\n");
        assert_eq!(found(&l, "k"), (docker.clone(), b"docker-value".to_vec()));
        // The Knative folder exists without the file yet: fall through to Docker.
        std::fs::create_dir_all(&flat).unwrap();
        assert_eq!(found(&l, "k").0, docker);
        write(&nested, " \t nested-value \r\n");
        assert_eq!(found(&l, "k"), (nested, b"nested-value".to_vec()));
        std::fs::remove_dir_all(&flat).unwrap();
        write(&flat, "flat-value");
        assert_eq!(found(&l, "k"), (flat, b"flat-value".to_vec()));
    }

    #[test]
    fn lookup_follows_symlinks_and_skips_special_files() {
        let (_tmp, l) = locations("links");
        let data = l.mount.join("..2026_01_01_00_00_00.1");
        write(&data.join("k"), "linked");
        std::os::unix::fs::symlink(&data, l.mount.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/k", l.mount.join("k")).unwrap();
        assert_eq!(found(&l, "k"), (l.mount.join("k"), b"linked".to_vec()));

        // A FIFO must be skipped, not opened (opening it would block).
        nix::unistd::mkfifo(&l.mount.join("f"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = l.find("f").err().unwrap();
        assert!(err.contains("not a regular file"), "{err}");
        write(&l.docker.join("f"), "from-docker");
        assert_eq!(found(&l, "f").1, b"from-docker");
    }

    #[test]
    fn missing_secret_names_every_path_tried() {
        let (_tmp, l) = locations("missing");
        let err = l.find("nope").err().unwrap();
        assert!(err.contains("\"nope\""), "{err}");
        for p in l.candidates("nope") {
            assert!(err.contains(&p.display().to_string()), "{err}");
        }
        assert!(!err.contains('\n'));
    }

    #[test]
    fn start_up_errors_name_the_setting() {
        let (_tmp, l) = locations("startup");
        write(&l.mount.join("present"), "v1-start-up-value");
        write(&l.mount.join("blank"), " \n");
        for (pairs, var, name) in [
            (vec![("secrets", "present,absent")], "secrets", "absent"),
            (vec![("api_key_secret", "gone")], "api_key_secret", "gone"),
            (vec![("hmac_secret", "gone2")], "hmac_secret", "gone2"),
            (vec![("api_key_secret", "blank")], "api_key_secret", "blank"),
            (vec![("hmac_secret", "blank")], "hmac_secret", "blank"),
        ] {
            let err = Auth::with_locations(&config(&l, &pairs), l.clone()).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.reason.contains(name), "{err}");
        }
        // An empty secret is fine when only its presence is required.
        let c = config(&l, &[("secrets", "present,blank")]);
        Auth::with_locations(&c, l.clone()).unwrap();
    }

    #[test]
    fn debug_never_shows_values() {
        let (_tmp, l) = locations("debug");
        write(&l.mount.join("key"), "debug-secret-value");
        let c = config(&l, &[("api_key_secret", "key"), ("hmac_secret", "key")]);
        let auth = Auth::with_locations(&c, l.clone()).unwrap();
        let shown = format!("{auth:?} {auth:#?}");
        assert!(shown.contains("key"), "{shown}");
        assert!(!shown.contains("debug-secret-value"), "{shown}");
        let v = SecretValue(b"debug-secret-value".to_vec());
        assert!(!format!("{v:?}").contains("debug-secret-value"));
    }

    fn load(l: &Locations, name: &str) -> Secret {
        Secret::load("api_key_secret", name, l).unwrap()
    }

    fn value(s: &Secret) -> Option<Vec<u8>> {
        s.current().map(|v| v.0.clone())
    }

    fn loads(s: &Secret) -> u64 {
        s.state.read().unwrap().loads
    }

    #[test]
    fn unchanged_file_is_not_read_again() {
        let (_tmp, l) = locations("cache");
        write(&l.mount.join("k"), "cached");
        let s = load(&l, "k");
        let first = s.current().unwrap();
        for _ in 0..100 {
            assert!(Arc::ptr_eq(&first, &s.current().unwrap()));
        }
        assert_eq!(loads(&s), 1);
    }

    #[test]
    fn rotation_by_rename_and_by_symlink_flip() {
        let (_tmp, l) = locations("rotate");
        let path = l.mount.join("k");
        write(&path, "one");
        let s = load(&l, "k");
        assert_eq!(value(&s).unwrap(), b"one");

        write(&l.mount.join(".k.tmp"), "two");
        std::fs::rename(l.mount.join(".k.tmp"), &path).unwrap();
        assert_eq!(value(&s).unwrap(), b"two");
        assert_eq!(loads(&s), 2);

        // Kubernetes: k -> ..data/k, ..data -> timestamped folder, flipped by rename.
        let (_tmp, l) = locations("flip");
        let v1 = l.mount.join("..v1");
        let v2 = l.mount.join("..v2");
        write(&v1.join("k"), "first");
        write(&v2.join("k"), "second");
        std::os::unix::fs::symlink("..v1", l.mount.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/k", l.mount.join("k")).unwrap();
        let s = load(&l, "k");
        assert_eq!(value(&s).unwrap(), b"first");
        std::os::unix::fs::symlink("..v2", l.mount.join("..data_tmp")).unwrap();
        std::fs::rename(l.mount.join("..data_tmp"), l.mount.join("..data")).unwrap();
        std::fs::remove_dir_all(&v1).unwrap();
        assert_eq!(value(&s).unwrap(), b"second");
        assert_eq!(value(&s).unwrap(), b"second");
        assert_eq!(loads(&s), 2);
    }

    #[test]
    fn vanished_secret_fails_closed_and_is_found_again() {
        let (_tmp, l) = locations("vanish");
        write(&l.mount.join("k"), "here");
        let s = load(&l, "k");
        std::fs::remove_file(l.mount.join("k")).unwrap();
        assert!(value(&s).is_none());
        // Emptied: refuse rather than accept an empty key.
        write(&l.mount.join("k"), "\n");
        assert!(value(&s).is_none());
        std::fs::remove_file(l.mount.join("k")).unwrap();
        write(&l.docker.join("k"), "moved");
        assert_eq!(value(&s).unwrap(), b"moved");
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("POST").uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn api_key(headers: &[(&str, &str)]) -> Result<(), Error> {
        check_api_key(&parts(headers), &SecretValue(b"s3cret-key".to_vec()))
    }

    #[test]
    fn api_key_headers() {
        assert!(api_key(&[("authorization", "Bearer s3cret-key")]).is_ok());
        assert!(api_key(&[("authorization", "bearer   s3cret-key ")]).is_ok());
        assert!(api_key(&[("x-api-key", "s3cret-key")]).is_ok());
        // Either header may carry it; a stray wrong one does not spoil the right one.
        assert!(api_key(&[("authorization", "Basic eDp5"), ("x-api-key", "s3cret-key")]).is_ok());
        for bad in [
            vec![],
            vec![("authorization", "Basic s3cret-key")],
            vec![("authorization", "s3cret-key")],
            vec![("authorization", "Bearer")],
            vec![("authorization", "Bearer s3cret-kez")],
            vec![("x-api-key", "s3cret-ke")],
            vec![("x-api-key", "s3cret-key2")],
            vec![("x-api-key", "")],
        ] {
            let err = api_key(&bad).unwrap_err();
            assert!(matches!(err, Error::Unauthorized(_)), "{bad:?}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sign(key: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        format!("sha256={}", hex(&mac.finalize().into_bytes()))
    }

    #[test]
    fn hmac_known_vectors() {
        // RFC 4231 test case 2.
        let sig = decode_hex32(b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
            .unwrap();
        assert!(hmac_matches(b"Jefe", b"what do ya want for nothing?", &sig));
        assert!(!hmac_matches(
            b"Jefe",
            b"what do ya want for nothing!",
            &sig
        ));
        assert!(!hmac_matches(
            b"Jeff",
            b"what do ya want for nothing?",
            &sig
        ));
        // GitHub's webhook documentation example, upper-case hex accepted too.
        let sig = decode_hex32(b"757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17")
            .unwrap();
        assert!(hmac_matches(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &sig
        ));
        assert!(decode_hex32(b"abc").is_none());
        assert!(decode_hex32(&[b'g'; 64]).is_none());
    }

    fn full(data: &'static [u8]) -> ReqBody {
        Full::new(Bytes::from_static(data))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    /// A body whose client never sends anything.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            Poll::Pending
        }
    }

    /// Two frames and no size hint, like a chunked upload.
    struct Chunked(u8);

    impl http_body::Body for Chunked {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"0123456789")))))
        }
    }

    fn hmac_auth(tag: &str, pairs: &[(&str, &str)]) -> (Tmp, Auth) {
        let (tmp, l) = locations(tag);
        write(&l.mount.join("hook"), "hook-key\n");
        let mut pairs = pairs.to_vec();
        pairs.push(("hmac_secret", "hook"));
        (
            tmp,
            Auth::with_locations(&config(&l, &pairs), l.clone()).unwrap(),
        )
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn hmac_verify_hands_the_body_on_unchanged() {
        let (_tmp, auth) = hmac_auth("hmac", &[]);
        let body = b"{\"action\":\"opened\"}";
        let good = sign(b"hook-key", body);
        let p = parts(&[("x-hub-signature-256", &good)]);
        let out = auth.verify(&p, full(body), soon()).await.unwrap();
        assert_eq!(out.collect().await.unwrap().to_bytes(), &body[..]);

        let empty = sign(b"hook-key", b"");
        let p = parts(&[("x-hub-signature-256", &empty)]);
        assert!(auth.verify(&p, full(b""), soon()).await.is_ok());

        for headers in [
            vec![],
            vec![("x-hub-signature-256", good.trim_start_matches("sha256="))],
            vec![("x-hub-signature-256", "sha256=zz")],
            vec![("x-hub-signature", "sha1=0000")],
        ] {
            let err = auth.verify(&parts(&headers), full(body), soon()).await;
            assert!(matches!(err, Err(Error::Unauthorized(_))), "{headers:?}");
        }
        let wrong_key = sign(b"other-key", body);
        let altered = b"{\"action\":\"closed\"}";
        for (sig, sent) in [(&wrong_key, &body[..]), (&good, &altered[..])] {
            let p = parts(&[("x-hub-signature-256", sig)]);
            let err = auth.verify(&p, full(sent), soon()).await;
            assert!(matches!(err, Err(Error::Unauthorized(_))));
        }
    }

    #[tokio::test]
    async fn hmac_body_bound_and_deadline() {
        let (_tmp, auth) = hmac_auth("bound", &[("max_body_size", "15")]);
        assert_eq!(auth.body_limit, 15);
        let p = parts(&[("x-hub-signature-256", &sign(b"hook-key", b""))]);
        // Declared too large: refused before reading.
        let err = auth.verify(&p, full(b"0123456789abcdef"), soon()).await;
        assert!(matches!(err, Err(Error::BodyTooLarge(15))), "{err:?}");
        // Undeclared length: refused once the bound is crossed.
        let err = auth.verify(&p, Chunked(2).boxed_unsync(), soon()).await;
        assert!(matches!(err, Err(Error::BodyTooLarge(15))), "{err:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let err = auth.verify(&p, Stalled.boxed_unsync(), deadline).await;
        assert!(matches!(err, Err(Error::ReadTimeout)), "{err:?}");

        let (_tmp, auth) = hmac_auth("default-bound", &[]);
        assert_eq!(auth.body_limit, crate::config::DEFAULT_BUFFERED_BODY_LIMIT);
    }

    #[tokio::test]
    async fn api_key_is_checked_before_the_body_is_read() {
        let (_tmp, l) = locations("both");
        write(&l.mount.join("key"), "api-key-value");
        write(&l.mount.join("hook"), "hook-key");
        let c = config(&l, &[("api_key_secret", "key"), ("hmac_secret", "hook")]);
        let auth = Auth::with_locations(&c, l.clone()).unwrap();
        // No key: answered at once although the body would never arrive.
        let err = auth
            .verify(&parts(&[]), Stalled.boxed_unsync(), soon())
            .await;
        assert!(matches!(err, Err(Error::Unauthorized(_))));
        let sig = sign(b"hook-key", b"x");
        let p = parts(&[
            ("x-api-key", "api-key-value"),
            ("x-hub-signature-256", &sig),
        ]);
        assert!(auth.verify(&p, full(b"x"), soon()).await.is_ok());
        let p = parts(&[("x-hub-signature-256", &sig)]);
        assert!(auth.verify(&p, full(b"x"), soon()).await.is_err());
    }

    fn raw_parts(name: &'static str, value: &[u8]) -> Option<Parts> {
        let v = http::HeaderValue::from_bytes(value).ok()?;
        let mut p = parts(&[]);
        p.headers.insert(name, v);
        Some(p)
    }

    proptest::proptest! {
        /// The signature and API-key headers are a client's bytes: any value is parsed
        /// without a panic, and only `sha256=` with 64 hex digits is a signature.
        #[test]
        fn signature_header_parsing_never_panics(value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Some(p) = raw_parts("x-hub-signature-256", &value) {
                let parsed = signature(&p);
                let text = String::from_utf8_lossy(&value);
                let hex = text.trim().strip_prefix("sha256=").unwrap_or("");
                let well_formed = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
                proptest::prop_assert_eq!(parsed.is_ok(), well_formed, "{:?}", text);
            }
            if let Some(p) = raw_parts("authorization", &value) {
                let _ = check_api_key(&p, &SecretValue(b"k".to_vec()));
            }
        }

        /// A signature made with the key round-trips; any change to the body breaks it.
        #[test]
        fn signatures_round_trip(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), flip in 0usize..300) {
            let sig = sign(b"key", &body);
            let p = parts(&[("x-hub-signature-256", &sig)]);
            let decoded = signature(&p).unwrap();
            proptest::prop_assert!(hmac_matches(b"key", &body, &decoded));
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip % changed.len();
                changed[i] ^= 1;
                proptest::prop_assert!(!hmac_matches(b"key", &changed, &decoded));
            }
        }
    }
}
