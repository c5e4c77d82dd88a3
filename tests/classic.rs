//! compat=classic beside the real classic watchdog (classic-watchdog 0.3.9, found through
//! `PEER_CLASSIC` or the peers folder next to the repository; skipped with a message when
//! neither exists): the same requests to both, the same status, body and Content-Type.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A request: method, path, headers, body.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [u8],
);

const FUNCTION: &str =
    "echo \"out:$(cat)\"; echo 'err line' >&2; [ \"$Http_Path\" = /fail ] && exit 3; exit 0";

fn classic_binary() -> Option<String> {
    let path = std::env::var("PEER_CLASSIC").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/peers/classic-watchdog"
        )
        .to_string()
    });
    std::path::Path::new(&path).is_file().then_some(path)
}

#[test]
fn compat_classic_answers_as_the_classic_watchdog_does() {
    let Some(classic) = classic_binary() else {
        eprintln!("SKIP compat_classic_answers_as_the_classic_watchdog_does: no classic-watchdog (set PEER_CLASSIC)");
        return;
    };
    let script = scratch_dir("classic").join("fn.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{FUNCTION}\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap().to_string();
    let ours = Watchdog::start(
        &[("compat", "classic"), ("cgi_headers", "true")],
        &[&script],
    );
    // The classic watchdog takes a port number, not a listener: one is reserved and freed
    // for it (the only port in the suite chosen that way).
    let port = listener().local_addr().unwrap().port();
    let peer = Peer(
        Command::new(&classic)
            .env("fprocess", &script)
            .env("port", port.to_string())
            .env("suppress_lock", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(10), || request(
        port,
        "GET",
        "/",
        &[],
        b""
    )
    .is_ok()));
    let cases: [Case; 3] = [
        ("POST", "/", &[("Content-Type", "text/x-foo")], b"hello"),
        ("POST", "/fail", &[("Content-Type", "text/x-foo")], b"hello"),
        ("GET", "/?q=1", &[], b""),
    ];
    for (method, path, headers, body) in cases {
        let theirs = request(port, method, path, headers, body).unwrap();
        let mine = ours.request(method, path, headers, body).unwrap();
        let what = format!("{method} {path}");
        assert_eq!(mine.status, theirs.status, "{what}: status");
        assert_eq!(mine.text(), theirs.text(), "{what}: body");
        assert_eq!(
            mine.header("content-type"),
            theirs.header("content-type"),
            "{what}: Content-Type"
        );
    }
    drop(peer);
}

/// The classic watchdog's process, killed however the test ends.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
