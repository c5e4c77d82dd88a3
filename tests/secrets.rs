//! Secrets end to end: start-up checks, every lookup location, API keys, HMAC signatures,
//! rotation without a restart, probes without a key, and no secret value in any output.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{marker, read_response, request, run_to_exit, scratch_dir, Opts, Watchdog};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A secrets folder for one test, removed afterwards.
struct Mount(PathBuf);

impl Mount {
    fn new(tag: &str) -> Mount {
        Mount(scratch_dir(&format!("secrets-{tag}")))
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// Writes `value` to `rel`, creating folders.
    fn write(&self, rel: &str, value: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, value).unwrap();
    }

    /// Replaces `name` the way `mv new name` does: one atomic rename.
    fn rename_in(&self, name: &str, value: &str) {
        let tmp = format!(".{name}.tmp");
        self.write(&tmp, value);
        std::fs::rename(self.0.join(tmp), self.0.join(name)).unwrap();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file in the real /run/secrets (Docker's place), removed afterwards, with the folder
/// too if this test made it.
struct DockerSecret {
    path: PathBuf,
    made_dir: bool,
}

impl DockerSecret {
    fn new(name: &str, value: &str) -> DockerSecret {
        let dir = Path::new("/run/secrets");
        let made_dir = !dir.exists();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        DockerSecret { path, made_dir }
    }
}

impl Drop for DockerSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.made_dir {
            let _ = std::fs::remove_dir(self.path.parent().unwrap());
        }
    }
}

/// A distinctive secret value, unique per call, so a leak shows up in a grep.
fn secret_value(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "Sekr1t-{tag}-{}-{}-q7Zx",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique secret name (for /run/secrets, which tests share).
fn secret_name(tag: &str) -> String {
    marker(&format!("secret-{tag}"))
}

/// `X-Hub-Signature-256` for `body` under `key`, as GitHub sends it.
fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The same value with its last byte changed.
fn last_byte_off(value: &str) -> String {
    let mut v = value.to_string();
    let last = v.pop().unwrap();
    v.push(if last == 'x' { 'y' } else { 'x' });
    v
}

/// Neither a value nor a leading part of it appears in `text`.
fn assert_no_leak(what: &str, text: &str, values: &[&str]) {
    for v in values {
        assert!(!text.contains(v), "{what} contains a secret value:\n{text}");
        let head = &v[..v.len() - 5];
        assert!(
            !text.contains(head),
            "{what} contains part of a secret value:\n{text}"
        );
    }
}

fn start(mount: &Mount, env: &[(&str, &str)], cmd: &[&str]) -> Watchdog {
    let mut env = env.to_vec();
    let path = mount.path();
    env.push(("secret_mount_path", &path));
    Watchdog::start(&env, cmd)
}

fn post(wd: &Watchdog, headers: &[(&str, &str)], body: &[u8]) -> common::Resp {
    wd.request("POST", "/", headers, body).unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn assert_unauthorized(resp: &common::Resp, what: &str, secrets: &[&str]) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.text());
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{what}");
    assert!(resp.header("x-openfaas-internal").is_some(), "{what}");
    assert_no_leak(what, &resp.text(), secrets);
}

#[test]
fn missing_required_secret_exits_2_naming_it() {
    let mount = Mount::new("missing");
    let present = secret_value("present");
    mount.write("present", &present);
    mount.write("blank", "\n");
    let missing = secret_name("absent");
    let tmp = scratch_dir("secrets-missing-tmp");
    let tmp = tmp.to_string_lossy().into_owned();
    let list = format!("present,{missing}");
    let base = [("fprocess", "cat"), ("TMPDIR", tmp.as_str())];
    let path = mount.path();
    for (setting, value, var) in [
        ("secrets", list.as_str(), "secrets"),
        ("api_key_secret", missing.as_str(), "api_key_secret"),
        ("hmac_secret", missing.as_str(), "hmac_secret"),
        ("api_key_secret", "blank", "api_key_secret"),
    ] {
        let mut env = base.to_vec();
        env.push(("secret_mount_path", &path));
        env.push((setting, value));
        let (code, stderr) = run_to_exit(&env, &[]);
        assert_eq!(code, 2, "{setting}={value}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("fwatchdog: {var}: ")))
            .unwrap_or_else(|| panic!("no error line for {var}: {stderr}"));
        if value == "blank" {
            assert!(
                line.contains("\"blank\"") && line.contains("empty"),
                "{line}"
            );
        } else {
            assert!(line.contains(&format!("\"{missing}\"")), "{line}");
            for tried in [
                format!("{path}/{missing}"),
                format!("{path}/{missing}/{missing}"),
                format!("/run/secrets/{missing}"),
            ] {
                assert!(line.contains(&tried), "{line} lacks {tried}");
            }
        }
        assert_no_leak("start-up error", &stderr, &[&present]);
    }
    // All present: it starts.
    let wd = start(&mount, &[("secrets", "present,blank")], &["cat"]);
    assert_eq!(post(&wd, &[], b"hi").status, 200);
    assert_no_leak("log", &wd.log(), &[&present]);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn api_key_found_in_each_location() {
    // $secret_mount_path/NAME, with white space around the value.
    let mount = Mount::new("flat");
    let flat = secret_value("flat");
    mount.write("key", &format!("  {flat}\n"));
    // $secret_mount_path/NAME/NAME (faas-cli's Knative layout).
    let nested_mount = Mount::new("nested");
    let nested = secret_value("nested");
    nested_mount.write("key/key", &format!("{nested}\n"));
    // /run/secrets/NAME (Docker, Compose).
    let docker_mount = Mount::new("docker");
    let docker = secret_value("docker");
    let name = secret_name("docker");
    let _docker_file = DockerSecret::new(&name, &format!("{docker}\r\n"));

    for (mount, name, value) in [
        (&mount, "key", &flat),
        (&nested_mount, "key", &nested),
        (&docker_mount, name.as_str(), &docker),
    ] {
        let wd = start(mount, &[("api_key_secret", name)], &["cat"]);
        let ok = post(&wd, &[("X-Api-Key", value)], b"located");
        assert_eq!(ok.status, 200, "{name}: {}", ok.text());
        assert_eq!(ok.body, b"located");
        assert_unauthorized(&post(&wd, &[], b"x"), name, &[value]);
        assert_no_leak("log", &wd.log(), &[value]);
    }
}

#[test]
fn api_key_is_required_and_compared_exactly() {
    let mount = Mount::new("apikey");
    let key = secret_value("apikey");
    mount.write("key", &key);
    let ran = mount.0.join("ran");
    let script = format!("touch {}; cat", ran.display());
    let wd = start(&mount, &[("api_key_secret", "key")], &["sh", "-c", &script]);

    let near = last_byte_off(&key);
    let short = &key[..key.len() - 1];
    let longer = format!("{key}x");
    let wrong = [
        vec![],
        vec![("Authorization", "Bearer".to_string())],
        vec![("Authorization", format!("Basic {key}"))],
        vec![("Authorization", key.clone())],
        vec![("Authorization", bearer("wrong-key"))],
        vec![("Authorization", bearer(&near))],
        vec![("X-Api-Key", near.clone())],
        vec![("X-Api-Key", short.to_string())],
        vec![("X-Api-Key", longer.clone())],
        vec![("X-Api-Key", String::new())],
    ];
    for headers in &wrong {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_unauthorized(&post(&wd, &h, b"body"), &format!("{h:?}"), &[&key]);
        let get = wd.request("GET", "/some/path?q=1", &h, b"").unwrap();
        assert_unauthorized(&get, "GET", &[&key]);
    }
    assert!(
        !ran.exists(),
        "the function ran for an unauthorized request"
    );

    for headers in [
        vec![("Authorization", bearer(&key))],
        vec![("authorization", format!("bearer {key}"))],
        vec![("X-Api-Key", key.clone())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = post(&wd, &h, b"let me in");
        assert_eq!(resp.status, 200, "{h:?}: {}", resp.text());
        assert_eq!(resp.body, b"let me in");
    }
    assert!(ran.exists());
    // The failures were logged (so the grep below covers them), without the key.
    assert!(wd.log().contains("status=401"), "{}", wd.log());
    assert_no_leak("log", &wd.log(), &[&key]);
}

#[test]
fn probes_and_metrics_need_no_key() {
    let mount = Mount::new("probes");
    let key = secret_value("probes");
    mount.write("key", &key);
    let hook = secret_value("probes-hook");
    mount.write("hook", &hook);
    let path = mount.path();
    let wd = Watchdog::with(Opts {
        env: vec![
            ("secret_mount_path", path),
            ("api_key_secret", "key".into()),
            ("hmac_secret", "hook".into()),
        ],
        cmd: vec!["cat"],
        metrics: true,
        ..Opts::default()
    });
    for p in ["/_/health", "/_/ready"] {
        let resp = wd.get(p).unwrap();
        assert_eq!(resp.status, 200, "{p}: {}", resp.text());
    }
    assert_eq!(post(&wd, &[], b"").status, 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        match request(wd.metrics_port, "GET", "/metrics", &[], b"") {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("metrics unreachable: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert_no_leak("metrics", &metrics.text(), &[&key, &hook]);
    assert_no_leak("log", &wd.log(), &[&key, &hook]);
}

#[test]
fn hmac_signature_must_match_the_exact_body() {
    let mount = Mount::new("hmac");
    let key = secret_value("hmac");
    mount.write("hook", &format!("{key}\n"));
    let wd = start(
        &mount,
        &[
            ("hmac_secret", "hook"),
            ("max_body_size", "4096"),
            ("read_timeout", "1s"),
        ],
        &["cat"],
    );
    let body = br#"{"action":"opened","number":1}"#;
    let good = sign(&key, body);
    let resp = post(&wd, &[("X-Hub-Signature-256", &good)], body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, body, "the function must get the body unchanged");
    let empty = sign(&key, b"");
    assert_eq!(
        post(&wd, &[("X-Hub-Signature-256", &empty)], b"").status,
        200
    );
    // Binary bodies pass byte for byte.
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let resp = post(
        &wd,
        &[("X-Hub-Signature-256", &sign(&key, &binary))],
        &binary,
    );
    assert_eq!((resp.status, resp.body == binary), (200, true));

    let other_key = sign(&last_byte_off(&key), body);
    let altered = br#"{"action":"opened","number":2}"#;
    let upper = format!("sha256={}", good["sha256=".len()..].to_uppercase());
    let bad_hex = format!("sha256={}", "g".repeat(64));
    for (headers, sent) in [
        (vec![], &body[..]),
        (vec![("X-Hub-Signature-256", other_key.as_str())], &body[..]),
        (vec![("X-Hub-Signature-256", good.as_str())], &altered[..]),
        (
            vec![("X-Hub-Signature-256", &good["sha256=".len()..])],
            &body[..],
        ),
        (vec![("X-Hub-Signature-256", bad_hex.as_str())], &body[..]),
        (vec![("X-Hub-Signature", "sha1=0123")], &body[..]),
        (vec![("Authorization", &bearer(&key) as &str)], &body[..]),
    ] {
        let resp = post(&wd, &headers, sent);
        assert_unauthorized(&resp, &format!("{headers:?}"), &[&key]);
    }
    // Hex digits in either case are the same signature.
    assert_eq!(
        post(&wd, &[("X-Hub-Signature-256", &upper)], body).status,
        200
    );

    // Beyond the in-memory bound: 413.
    let big = vec![b'a'; 5000];
    let resp = post(&wd, &[("X-Hub-Signature-256", &sign(&key, &big))], &big);
    assert_eq!(resp.status, 413, "{}", resp.text());

    // A body that stops arriving: 408 once read_timeout has passed.
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\
         X-Hub-Signature-256: {good}\r\n\r\n0123456789"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let resp = read_response(&mut s).unwrap();
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_secs(5));

    assert_no_leak("log", &wd.log(), &[&key]);
}

#[test]
fn both_api_key_and_hmac_when_both_are_set() {
    let mount = Mount::new("both");
    let key = secret_value("both-key");
    let hook = secret_value("both-hook");
    mount.write("key", &key);
    mount.write("hook", &hook);
    let wd = start(
        &mount,
        &[("api_key_secret", "key"), ("hmac_secret", "hook")],
        &["cat"],
    );
    let sig = sign(&hook, b"payload");
    let ok = post(
        &wd,
        &[("X-Api-Key", &key), ("X-Hub-Signature-256", &sig)],
        b"payload",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_unauthorized(
        &post(&wd, &[("X-Api-Key", &key)], b"payload"),
        "no sig",
        &[&key, &hook],
    );
    let resp = post(&wd, &[("X-Hub-Signature-256", &sig)], b"payload");
    assert_unauthorized(&resp, "no key", &[&key, &hook]);
    assert_no_leak("log", &wd.log(), &[&key, &hook]);
}

#[test]
fn rotation_by_atomic_rename() {
    let mount = Mount::new("rename");
    let old_key = secret_value("old-key");
    let old_hook = secret_value("old-hook");
    mount.write("key", &old_key);
    mount.write("hook", &old_hook);
    let wd = start(
        &mount,
        &[("api_key_secret", "key"), ("hmac_secret", "hook")],
        &["cat"],
    );
    let send = |key: &str, hook: &str| {
        let sig = sign(hook, b"rotated");
        post(
            &wd,
            &[("X-Api-Key", key), ("X-Hub-Signature-256", &sig)],
            b"rotated",
        )
        .status
    };
    assert_eq!(send(&old_key, &old_hook), 200);

    let new_key = secret_value("new-key");
    mount.rename_in("key", &format!("{new_key}\n"));
    // Honoured on the very next request, no restart, no waiting.
    assert_eq!(send(&new_key, &old_hook), 200);
    assert_eq!(send(&old_key, &old_hook), 401);

    let new_hook = secret_value("new-hook");
    mount.rename_in("hook", &new_hook);
    assert_eq!(send(&new_key, &new_hook), 200);
    assert_eq!(send(&new_key, &old_hook), 401);
    for _ in 0..5 {
        assert_eq!(send(&new_key, &new_hook), 200);
    }
    assert!(wd.log().contains("secret reloaded"), "{}", wd.log());
    assert_no_leak(
        "log",
        &wd.log(),
        &[&old_key, &old_hook, &new_key, &new_hook],
    );
}

/// Kubernetes' atomic writer: `NAME -> ..data/NAME`, `..data -> ..<timestamp>`, and an
/// update writes a new timestamped folder and renames a new `..data` symlink over the old.
struct KubeVolume<'a> {
    mount: &'a Mount,
    generation: usize,
}

impl<'a> KubeVolume<'a> {
    fn new(mount: &'a Mount, files: &[(&str, &str)]) -> KubeVolume<'a> {
        let mut v = KubeVolume {
            mount,
            generation: 0,
        };
        v.flip(files);
        for (name, _) in files {
            symlink(format!("..data/{name}"), mount.0.join(name)).unwrap();
        }
        v
    }

    fn flip(&mut self, files: &[(&str, &str)]) {
        let old = format!(
            "..2026_01_01_00_00_{:02}.00000000{}",
            self.generation, self.generation
        );
        self.generation += 1;
        let new = format!(
            "..2026_01_01_00_00_{:02}.00000000{}",
            self.generation, self.generation
        );
        for (name, value) in files {
            self.mount.write(&format!("{new}/{name}"), value);
        }
        let root = &self.mount.0;
        symlink(&new, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(root.join(old));
    }
}

#[test]
fn rotation_by_kubernetes_symlink_flip() {
    let mount = Mount::new("kube");
    let keys: Vec<String> = (0..3).map(|i| secret_value(&format!("kube-{i}"))).collect();
    let hooks: Vec<String> = (0..3)
        .map(|i| secret_value(&format!("kube-hook-{i}")))
        .collect();
    let mut volume = KubeVolume::new(&mount, &[("key", &keys[0]), ("hook", &hooks[0])]);
    let wd = start(
        &mount,
        &[
            ("api_key_secret", "key"),
            ("hmac_secret", "hook"),
            ("log_format", "json"),
        ],
        &["cat"],
    );
    let send = |key: &str, hook: &str| {
        let sig = sign(hook, b"flip");
        post(
            &wd,
            &[
                ("Authorization", &bearer(key)),
                ("X-Hub-Signature-256", &sig),
            ],
            b"flip",
        )
        .status
    };
    assert_eq!(send(&keys[0], &hooks[0]), 200);
    for i in 1..3 {
        volume.flip(&[("key", &keys[i]), ("hook", &hooks[i])]);
        assert_eq!(send(&keys[i], &hooks[i]), 200, "generation {i}");
        assert_eq!(
            send(&keys[i - 1], &hooks[i]),
            401,
            "old key, generation {i}"
        );
        assert_eq!(
            send(&keys[i], &hooks[i - 1]),
            401,
            "old hook, generation {i}"
        );
        assert_eq!(send(&keys[i], &hooks[i]), 200, "generation {i} again");
    }
    assert!(wd.log().contains("secret reloaded"), "{}", wd.log());
    let all: Vec<&str> = keys.iter().chain(&hooks).map(String::as_str).collect();
    assert_no_leak("log", &wd.log(), &all);
}

#[test]
fn help_shows_no_secret_value() {
    let mount = Mount::new("help");
    let key = secret_value("help");
    mount.write("key", &key);
    let out = Command::new(common::BIN)
        .arg("--help")
        .env("secret_mount_path", mount.path())
        .env("api_key_secret", "key")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api_key_secret") && text.contains("hmac_secret"));
    assert_no_leak("--help", &text, &[&key]);
    assert_no_leak(
        "--help stderr",
        &String::from_utf8_lossy(&out.stderr),
        &[&key],
    );
}
