//! File mode against the real binary and real commands: the body becomes a private file whose
//! path is the command's last argument, and the folder never outlives the request.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, marker, pids_with_marker, read_response, scratch_dir, Opts, Watchdog};
use sha2::{Digest, Sha256};

fn file_wd(env: &[(&str, &str)], cmd: &[&str]) -> Watchdog {
    let mut all = vec![("mode", "file")];
    all.extend_from_slice(env);
    Watchdog::start(&all, cmd)
}

/// The run folders (`fwatchdog-file-*`) under `tmpdir`.
fn run_dirs(tmpdir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(tmpdir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("fwatchdog-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The per-request folders currently under `tmpdir`'s run folders.
fn request_dirs(tmpdir: &Path) -> Vec<PathBuf> {
    run_dirs(tmpdir)
        .iter()
        .flat_map(|r| {
            std::fs::read_dir(r)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .collect()
}

fn no_request_dirs(wd: &Watchdog) -> bool {
    eventually(Duration::from_secs(5), || {
        request_dirs(&wd.tmpdir).is_empty()
    })
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn sha256(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// A test's own scratch folder, removed even when the test fails. Declare it before the
/// watchdog using it, so the watchdog is stopped first.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        TmpDir(scratch_dir(tag))
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kill_all(marker: &str) {
    for pid in pids_with_marker(marker) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

#[test]
fn json_body_round_trips_through_a_command_reading_the_file() {
    let wd = file_wd(
        &[],
        &[
            "python3",
            "-c",
            "import json, os, sys\n\
             d = json.load(open(sys.argv[-1]))\n\
             print(json.dumps({'n': d['n'] + 1, 'name': os.path.basename(sys.argv[-1]),\n\
                               'env': os.environ['INPUT_FILE'] == sys.argv[-1], 's': d['s']}))",
        ],
    );
    let r = wd
        .request(
            "POST",
            "/",
            &[("Content-Type", "application/json; charset=utf-8")],
            br#"{"n": 41, "s": "h\u00e9llo"}"#,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), wd.log());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["n"], 42);
    assert_eq!(v["name"], "input.json");
    assert_eq!(v["env"], true);
    assert_eq!(v["s"], "h\u{e9}llo");
    assert!(no_request_dirs(&wd));
}

#[test]
fn input_file_is_named_by_media_type() {
    let wd = file_wd(
        &[("RAW_BODY", "true")],
        &["sh", "-c", "basename \"$1\"", "sh"],
    );
    for (ct, want) in [
        (Some("application/json"), "input.json"),
        (Some("Application/JSON; Charset=UTF-8"), "input.json"),
        (Some("application/vnd.api+json"), "input.json"),
        (Some("text/plain; charset=utf-8"), "input.txt"),
        (Some("TEXT/CSV"), "input.txt"),
        (Some("application/octet-stream"), "input.bin"),
        (Some("image/png"), "input.bin"),
        (Some("application/jsonp"), "input.bin"),
        (None, "input.bin"),
    ] {
        let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("Content-Type", *c)).collect();
        let r = wd.request("POST", "/", &headers, b"{}").unwrap();
        assert_eq!(r.status, 200, "{ct:?}: {}", r.text());
        assert_eq!(r.text().trim(), want, "{ct:?}");
    }
}

#[test]
fn raw_body_passes_random_bytes_verbatim_and_reaches_the_env() {
    let wd = file_wd(
        &[("RAW_BODY", "true")],
        &[
            "sh",
            "-c",
            "printf '%s\\n' \"$RAW_BODY\" >&2; cat \"$1\"",
            "sh",
        ],
    );
    let body = random_bytes(300 * 1024, 0x9e37_79b9_7f4a_7c15);
    // Sent as JSON on purpose: with RAW_BODY nothing is parsed, whatever the type says.
    for ct in ["application/octet-stream", "application/json", "text/plain"] {
        let r = wd
            .request("POST", "/", &[("Content-Type", ct)], &body)
            .unwrap();
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
        assert_eq!(r.body.len(), body.len(), "{ct}");
        assert_eq!(sha256(&r.body), sha256(&body), "{ct}");
    }

    let env = file_wd(
        &[("RAW_BODY", "1")],
        &["sh", "-c", "printf %s \"$RAW_BODY\"", "sh"],
    );
    assert_eq!(env.post("/", b"x").unwrap().text(), "1");
    let unset = file_wd(&[], &["sh", "-c", "printf %s \"${RAW_BODY-unset}\"", "sh"]);
    assert_eq!(unset.post("/", b"x").unwrap().text(), "unset");
}

#[test]
fn binary_bodies_are_verbatim_without_raw_body_too() {
    let wd = file_wd(&[], &["sh", "-c", "cat \"$1\"", "sh"]);
    let body = random_bytes(300 * 1024, 7);
    let r = wd
        .request(
            "POST",
            "/",
            &[("Content-Type", "application/octet-stream")],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sha256(&r.body), sha256(&body));
}

#[test]
fn invalid_json_is_400_with_the_parser_message_and_nothing_runs() {
    let side = TmpDir::new("json400");
    let touched = side.0.join("ran");
    let script = format!("touch '{}'; cat \"$1\"", touched.display());
    let wd = file_wd(&[], &["sh", "-c", &script, "sh"]);
    for (ct, body) in [
        ("application/json", &br#"{"a": 1,"#[..]),
        ("application/json; charset=utf-8", b"{} trailing"),
        ("application/problem+json", b"[1, 2"),
        ("application/json", b"\xff\xfe"),
    ] {
        let r = wd
            .request("POST", "/", &[("Content-Type", ct)], body)
            .unwrap();
        assert_eq!(r.status, 400, "{ct} {body:?}: {}", r.text());
        assert_eq!(r.header("x-openfaas-internal"), Some("fwatchdog"));
        let text = r.text();
        assert!(
            text.contains("not valid JSON") && text.contains("line 1 column"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!touched.exists(), "the command ran for {body:?}");
    }
    assert!(no_request_dirs(&wd));

    // Larger bodies (about 90 KB, 9 MB) are checked from the written file, same answer.
    for n in [2_000, 200_000] {
        let doc = format!(
            "[{}]",
            vec!["{\"k\": \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\"}"; n].join(",")
        );
        let r = wd
            .request(
                "POST",
                "/",
                &[("Content-Type", "application/json")],
                &doc.as_bytes()[..doc.len() - 1],
            )
            .unwrap();
        assert_eq!(r.status, 400, "{n}: {}", r.text());
        assert!(r.text().contains("not valid JSON") && r.text().contains("line 1 column"));
        assert!(
            !touched.exists(),
            "the command ran for a large invalid body"
        );
        assert!(no_request_dirs(&wd));
        let r = wd
            .request(
                "POST",
                "/",
                &[("Content-Type", "application/json")],
                doc.as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{n}: {}", r.text());
        assert_eq!(r.body.len(), doc.len());
        std::fs::remove_file(&touched).unwrap();
    }

    // Valid JSON (and an empty body, which is no document to check) does run.
    let r = wd
        .request(
            "POST",
            "/",
            &[("Content-Type", "application/json")],
            b" [1, {\"b\": null}] \n",
        )
        .unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, " [1, {\"b\": null}] \n")
    );
    assert!(touched.exists());
    let r = wd
        .request("GET", "/", &[("Content-Type", "application/json")], b"")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, ""));
}

#[test]
fn output_file_wins_over_stdout_and_streams_with_its_length() {
    let wd = file_wd(
        &[],
        &[
            "sh",
            "-c",
            "echo from-stdout\n\
             case \"$Http_Path\" in\n\
               /big) head -c 3000000 /dev/zero | tr '\\0' 'x' > \"$OUTPUT_FILE\" ;;\n\
               /none) ;;\n\
               /fail) printf partial > \"$OUTPUT_FILE\"; exit 3 ;;\n\
               *) printf from-file > \"$OUTPUT_FILE\" ;;\n\
             esac",
            "sh",
        ],
    );
    let r = wd.post("/", b"in").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "from-file");
    assert_eq!(r.header("content-length"), Some("9"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("x-duration-seconds").is_some());

    let r = wd.post("/big", b"in").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert_eq!(r.body.len(), 3_000_000);
    assert!(r.body.iter().all(|&b| b == b'x'));

    let r = wd.post("/none", b"in").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "from-stdout\n"));

    // A failed run answers 500 with its stdout, never the half-written file.
    let r = wd.post("/fail", b"in").unwrap();
    assert_eq!((r.status, r.text().as_str()), (500, "from-stdout\n"));
    assert!(no_request_dirs(&wd));
}

#[test]
fn cgi_headers_from_stdout_apply_to_the_output_file() {
    let wd = file_wd(
        &[("cgi_response", "true")],
        &[
            "sh",
            "-c",
            "printf 'Status: 201 Created\\nContent-Type: image/x-test\\nX-Made: %s\\n\\n' \"$Http_X_Who\"\n\
             printf 'body-from-file' > \"$OUTPUT_FILE\"",
            "sh",
        ],
    );
    let r = wd.request("POST", "/", &[("X-Who", "me")], b"in").unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/x-test"));
    assert_eq!(r.header("x-made"), Some("me"));
    assert_eq!(r.text(), "body-from-file");
    assert_eq!(r.header("content-length"), Some("14"));
}

#[test]
fn private_modes_env_and_dev_null_stdin_seen_from_inside_the_command() {
    let wd = file_wd(
        &[],
        &[
            "sh",
            "-c",
            "d=$(dirname \"$1\")\n\
             stat -c %a \"$d\"; stat -c %a \"$1\"; stat -c %a \"$(dirname \"$d\")\"\n\
             [ \"$INPUT_FILE\" = \"$1\" ] && echo input-env-ok\n\
             [ \"$(dirname \"$OUTPUT_FILE\")\" = \"$d\" ] && [ ! -e \"$OUTPUT_FILE\" ] && echo output-env-ok\n\
             readlink /proc/self/fd/0\n\
             echo \"$Http_Method $Http_Path $Http_Query $Http_Content_Type\"\n\
             echo \"$d\"",
            "sh",
        ],
    );
    let r = wd
        .request(
            "PUT",
            "/p/q?x=1",
            &[("Content-Type", "text/plain")],
            b"hello",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..6],
        &[
            "700",
            "600",
            "700",
            "input-env-ok",
            "output-env-ok",
            "/dev/null"
        ],
        "{text}"
    );
    assert_eq!(lines[6], "PUT /p/q x=1 text/plain");
    let dir = PathBuf::from(lines[7]);
    assert!(dir.starts_with(&wd.tmpdir), "{dir:?} not under TMPDIR");
    assert!(
        eventually(Duration::from_secs(5), || !dir.exists()),
        "{dir:?} left behind"
    );
}

#[test]
fn scratch_folder_is_removed_after_failure_timeout_disconnect_and_limits() {
    let mark = marker("filegone");
    let wd = file_wd(
        &[("max_body_size", "1000000"), ("read_timeout", "2s")],
        &[
            "sh",
            "-c",
            "case \"$Http_Path\" in /fail) echo nope; exit 3 ;; /sleep) sleep 30 ;; esac; cat \"$1\"",
            &mark,
        ],
    );
    let r = wd.post("/", b"ok").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(no_request_dirs(&wd));

    let r = wd.post("/fail", b"x").unwrap();
    assert_eq!((r.status, r.text().as_str()), (500, "nope\n"));
    assert!(no_request_dirs(&wd));

    let r = wd
        .request("POST", "/sleep", &[("X-Timeout", "1s")], b"x")
        .unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        no_request_dirs(&wd),
        "after timeout: {:?}",
        request_dirs(&wd.tmpdir)
    );
    assert!(eventually(Duration::from_secs(5), || pids_with_marker(
        &mark
    )
    .is_empty()));

    // Client goes away while the command runs: group stopped, folder gone.
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.write_all(b"POST /sleep HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || !pids_with_marker(
        &mark
    )
    .is_empty()));
    assert_eq!(request_dirs(&wd.tmpdir).len(), 1);
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || pids_with_marker(&mark)
            .is_empty()),
        "command survived the disconnect"
    );
    assert!(
        no_request_dirs(&wd),
        "after disconnect: {:?}",
        request_dirs(&wd.tmpdir)
    );

    // Body over max_body_size: 413, nothing left.
    let r = wd.post("/", &vec![b'a'; 1_000_001]).unwrap();
    assert_eq!(r.status, 413);
    assert!(no_request_dirs(&wd));

    // Body that never finishes within read_timeout: 408, nothing left.
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 408);
    assert!(no_request_dirs(&wd));

    // Client goes away mid-upload (past the first write batch, so the file exists).
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'a'; 600_000]).unwrap();
    assert!(eventually(Duration::from_secs(5), || request_dirs(
        &wd.tmpdir
    )
    .len()
        == 1));
    drop(s);
    assert!(
        no_request_dirs(&wd),
        "after abandoned upload: {:?}",
        request_dirs(&wd.tmpdir)
    );
    kill_all(&mark);
}

#[test]
fn drain_stops_the_command_and_removes_the_scratch_folders() {
    let mark = marker("filedrain");
    let mut wd = file_wd(
        &[("healthcheck_interval", "1s"), ("write_timeout", "1s")],
        &["sh", "-c", "sleep 30", &mark],
    );
    assert_eq!(run_dirs(&wd.tmpdir).len(), 1);
    let port = wd.port;
    let t = std::thread::spawn(move || common::request(port, "POST", "/", &[], b"x"));
    assert!(eventually(Duration::from_secs(5), || !pids_with_marker(
        &mark
    )
    .is_empty()));
    assert_eq!(request_dirs(&wd.tmpdir).len(), 1);
    wd.signal("TERM");
    assert!(
        wd.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        wd.log()
    );
    assert!(
        eventually(Duration::from_secs(5), || pids_with_marker(&mark)
            .is_empty()),
        "command outlived the watchdog"
    );
    assert!(
        run_dirs(&wd.tmpdir).is_empty(),
        "{:?}",
        run_dirs(&wd.tmpdir)
    );
    let _ = t.join();
    kill_all(&mark);
}

#[test]
fn folders_of_a_crashed_run_are_removed_at_start_but_live_ones_kept() {
    let guard = TmpDir::new("filesweep");
    let tmp = guard.0.clone();
    let tmp_s = tmp.to_string_lossy().into_owned();
    let dead = tmp.join("fwatchdog-file-999999-dead");
    std::fs::create_dir_all(dead.join("0")).unwrap();
    std::fs::write(dead.join("0").join("input.bin"), b"old").unwrap();
    let other = tmp.join("not-ours");
    std::fs::create_dir(&other).unwrap();
    let start = || {
        Watchdog::with(Opts {
            env: vec![("mode", "file".into()), ("TMPDIR", tmp_s.clone())],
            cmd: vec!["cat"],
            ..Opts::default()
        })
    };
    let mut a = start();
    assert!(!dead.exists(), "leftover not removed");
    assert!(other.exists());
    let a_dirs = run_dirs(&tmp);
    assert_eq!(a_dirs.len(), 1, "{a_dirs:?}");

    // A second watchdog on the same TMPDIR leaves the live one's folder alone...
    let b = start();
    assert!(a_dirs[0].exists());
    assert_eq!(run_dirs(&tmp).len(), 2);
    // ...and after a crash (SIGKILL: no cleanup) the next start removes it.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(a_dirs[0].exists());
    let c = start();
    assert!(!a_dirs[0].exists());
    assert_eq!(run_dirs(&tmp).len(), 2);
    drop((b, c));
}

#[test]
fn upload_of_500_mb_keeps_the_watchdog_rss_flat() {
    const MB: usize = 1024 * 1024;
    const TOTAL: usize = 500 * MB;
    let wd = file_wd(
        &[("read_timeout", "300s"), ("exec_timeout", "300s")],
        &["sh", "-c", "wc -c < \"$1\"", "sh"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", wd.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {TOTAL}\r\n\r\n"
    )
    .unwrap();
    let chunk = random_bytes(MB, 3);
    for _ in 0..TOTAL / MB {
        s.write_all(&chunk).unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), TOTAL.to_string());
    let hwm_kb = wd.peak_rss_kb();
    eprintln!("watchdog VmHWM after a 500 MB upload: {hwm_kb} kB");
    assert!(hwm_kb < 40 * 1024, "VmHWM {hwm_kb} kB");
    assert!(no_request_dirs(&wd));
}

#[test]
fn concurrent_requests_never_see_each_others_files() {
    let wd = file_wd(
        &[],
        &[
            "sh",
            "-c",
            "d=$(dirname \"$1\"); sleep 0.5; echo \"$d\"; ls -A \"$d\"; cat \"$1\"",
            "sh",
        ],
    );
    let port = wd.port;
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let body = format!("body-{i}-{}", "z".repeat(i * 1000));
                let r = common::request(port, "POST", "/", &[], body.as_bytes()).unwrap();
                (body, r)
            })
        })
        .collect();
    let mut dirs = Vec::new();
    for t in threads {
        let (body, r) = t.join().unwrap();
        assert_eq!(r.status, 200);
        let text = r.text();
        let mut lines = text.splitn(3, '\n');
        dirs.push(lines.next().unwrap().to_string());
        assert_eq!(lines.next(), Some("input.bin"), "{text}");
        assert_eq!(lines.next(), Some(body.as_str()));
    }
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    assert!(no_request_dirs(&wd));
}

/// True when this test process may use namespaces and switch uids (it runs as root).
fn privileged() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: needs root (unshare/setpriv)");
    }
    ok
}

#[test]
fn runs_as_an_arbitrary_non_root_uid() {
    if !privileged() {
        return;
    }
    let guard = TmpDir::new("fileuid");
    let tmp = guard.0.clone();
    std::os::unix::fs::chown(&tmp, Some(12345), Some(12345)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)).unwrap();
    let wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "file".into()),
            ("TMPDIR", tmp.to_string_lossy().into_owned()),
        ],
        cmd: vec![
            "sh",
            "-c",
            "id -u; stat -c '%u %a' \"$(dirname \"$1\")\" \"$1\"; cat \"$1\"",
            "sh",
        ],
        launcher: vec![
            "setpriv",
            "--reuid",
            "12345",
            "--regid",
            "12345",
            "--clear-groups",
        ],
        ..Opts::default()
    });
    let r = wd
        .request(
            "POST",
            "/",
            &[("Content-Type", "application/json")],
            br#"{"k":1}"#,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), wd.log());
    assert_eq!(r.text(), "12345\n12345 700\n12345 600\n{\"k\":1}");
    assert!(eventually(Duration::from_secs(5), || request_dirs(&tmp).is_empty()));
    drop(wd);
}

#[test]
fn works_with_a_read_only_root_filesystem() {
    if !privileged() {
        return;
    }
    // A private mount namespace where / is read-only and only TMPDIR (bind-mounted onto
    // itself first, so it is its own mount) stays writable.
    let wd = Watchdog::with(Opts {
        env: vec![("mode", "file".into())],
        cmd: vec![
            "sh",
            "-c",
            "touch /fwd-ro-probe 2>/dev/null && echo rw || echo ro; cat \"$1\"",
            "sh",
        ],
        launcher: vec![
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$TMPDIR\" \"$TMPDIR\" && mount -o remount,bind,ro / && exec \"$@\"",
            "sh",
        ],
        ..Opts::default()
    });
    let r = wd.post("/", b"payload").unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), wd.log());
    assert_eq!(r.text(), "ro\npayload");
    assert!(no_request_dirs(&wd));
}

#[test]
fn max_inflight_and_exec_timeout_apply() {
    let wd = file_wd(
        &[("max_inflight", "1"), ("exec_timeout", "1s")],
        &["sh", "-c", "sleep 3; cat \"$1\"", "sh"],
    );
    let port = wd.port;
    let t = std::thread::spawn(move || common::request(port, "POST", "/", &[], b"x").unwrap());
    assert!(eventually(Duration::from_secs(5), || request_dirs(
        &wd.tmpdir
    )
    .len()
        == 1));
    let r = wd.post("/", b"y").unwrap();
    assert_eq!(r.status, 429);
    let r = t.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(no_request_dirs(&wd));
}
