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
    let sig =
        decode_hex32(b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843").unwrap();
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
    let sig =
        decode_hex32(b"757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17").unwrap();
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
