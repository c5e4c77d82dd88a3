//! `mode=static`: content types, validators and 304, byte ranges, folders and index.html,
//! methods, and every way we know of to ask for a file outside `static_path`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";

/// A tree under a scratch folder: `public/` (served) next to `outside/` (must never be).
struct Site {
    root: PathBuf,
    public: PathBuf,
    big: Vec<u8>,
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn site() -> Site {
    let root = scratch_dir("static");
    let public = root.join("public");
    write(&public.join("index.html"), b"<h1>home</h1>");
    write(&public.join("style.css"), b"body{}");
    write(&public.join("app.js"), b"console.log(1)");
    write(&public.join("data.json"), b"{\"a\":1}");
    write(&public.join("a.txt"), b"hello static\n");
    write(&public.join("pic.PNG"), &[0x89, b'P', b'N', b'G', 0, 1, 2]);
    write(&public.join("mod.wasm"), b"\0asm\x01\0\0\0");
    write(&public.join("icon.svg"), b"<svg/>");
    write(&public.join("font.woff2"), b"wOF2");
    write(&public.join("app.js.map"), b"{}");
    write(&public.join("blob"), b"no extension");
    write(&public.join("sub/index.html"), b"<p>sub</p>");
    write(&public.join("sub/deep.txt"), b"deep");
    write(&public.join("with space.txt"), b"spaced");
    std::fs::create_dir_all(public.join("emptydir")).unwrap();
    // Larger than one read chunk, so it streams, and not a multiple of it.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&public.join("big.bin"), &big);
    write(&root.join("outside/secret.txt"), SECRET.as_bytes());
    std::os::unix::fs::symlink("../outside/secret.txt", public.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("outside"), public.join("outdir")).unwrap();
    std::os::unix::fs::symlink("a.txt", public.join("inside-link.txt")).unwrap();
    Site { root, public, big }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn serve(site: &Site) -> Watchdog {
    Watchdog::start(
        &[
            ("mode", "static"),
            ("static_path", site.public.to_str().unwrap()),
        ],
        &[],
    )
}

#[test]
fn content_types_and_lengths() {
    let site = site();
    let wd = serve(&site);
    for (path, ctype, body) in [
        (
            "/a.txt",
            "text/plain; charset=utf-8",
            &b"hello static\n"[..],
        ),
        ("/index.html", "text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/style.css", "text/css; charset=utf-8", b"body{}"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            b"console.log(1)",
        ),
        ("/data.json", "application/json", b"{\"a\":1}"),
        ("/pic.PNG", "image/png", &[0x89, b'P', b'N', b'G', 0, 1, 2]),
        ("/mod.wasm", "application/wasm", b"\0asm\x01\0\0\0"),
        ("/icon.svg", "image/svg+xml", b"<svg/>"),
        ("/font.woff2", "font/woff2", b"wOF2"),
        ("/app.js.map", "application/json", b"{}"),
        ("/blob", "application/octet-stream", b"no extension"),
        ("/with%20space.txt", "text/plain; charset=utf-8", b"spaced"),
        (
            "/inside-link.txt",
            "text/plain; charset=utf-8",
            b"hello static\n",
        ),
    ] {
        let r = wd.get(path).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        assert_eq!(r.body, body, "{path}");
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{path}"
        );
        assert_eq!(r.header("accept-ranges"), Some("bytes"), "{path}");
        assert!(
            r.header("etag").is_some_and(|t| t.starts_with('"')),
            "{path}"
        );
        assert!(
            r.header("last-modified")
                .is_some_and(|t| t.ends_with(" GMT")),
            "{path}"
        );
    }
    assert_eq!(wd.get("/nope.txt").unwrap().status, 404);
}

#[test]
fn big_file_streams_whole() {
    let site = site();
    let wd = serve(&site);
    let r = wd.get("/big.bin").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert!(r.body == site.big, "body differs ({} bytes)", r.body.len());
}

#[test]
fn head_has_headers_but_no_body() {
    let site = site();
    let wd = serve(&site);
    let r = wd.request("HEAD", "/big.bin", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body.is_empty());
}

#[test]
fn only_get_and_head() {
    let site = site();
    let wd = serve(&site);
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = wd.request(m, "/a.txt", &[], b"x").unwrap();
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{m}");
    }
}

#[test]
fn conditional_requests_get_304() {
    let site = site();
    let wd = serve(&site);
    let r = wd.get("/a.txt").unwrap();
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();

    let r = wd
        .request("GET", "/a.txt", &[("If-None-Match", &etag)], b"")
        .unwrap();
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let weak = format!("\"other\", W/{etag}");
    let r = wd
        .request("GET", "/a.txt", &[("If-None-Match", &weak)], b"")
        .unwrap();
    assert_eq!(r.status, 304, "weak comparison");
    let r = wd
        .request("HEAD", "/a.txt", &[("If-None-Match", "*")], b"")
        .unwrap();
    assert_eq!(r.status, 304);
    let r = wd
        .request("GET", "/a.txt", &[("If-None-Match", "\"stale\"")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello static\n");

    let r = wd
        .request("GET", "/a.txt", &[("If-Modified-Since", &lm)], b"")
        .unwrap();
    assert_eq!(r.status, 304);
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    let r = wd
        .request("GET", "/a.txt", &[("If-Modified-Since", old)], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let r = wd
        .request(
            "GET",
            "/a.txt",
            &[("If-None-Match", "\"stale\""), ("If-Modified-Since", &lm)],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);

    // A changed file gets a new tag.
    std::thread::sleep(Duration::from_millis(20));
    write(&site.public.join("a.txt"), b"changed!\n");
    let r = wd
        .request("GET", "/a.txt", &[("If-None-Match", &etag)], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "changed!\n");
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[test]
fn byte_ranges() {
    let site = site();
    let wd = serve(&site);
    let big = &site.big;
    let len = big.len();
    let range = |spec: &str| {
        wd.request("GET", "/big.bin", &[("Range", spec)], b"")
            .unwrap()
    };

    let r = range("bytes=0-9");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[0..10]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-9/{len}").as_str())
    );
    assert_eq!(r.header("content-length"), Some("10"));

    let r = range("bytes=100000-");
    assert_eq!(r.status, 206);
    assert!(r.body == big[100_000..], "open-ended range");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100000-{}/{len}", len - 1).as_str())
    );

    let r = range("bytes=-500");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[len - 500..]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {}-{}/{len}", len - 500, len - 1).as_str())
    );

    let r = range("bytes=299990-999999");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[299_990..]);

    for bad in ["bytes=300000-", "bytes=400000-400010", "bytes=-0"] {
        let r = range(bad);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
    }

    // Ignored: malformed, several ranges, or an If-Range that no longer matches.
    for ignored in ["bytes=5-1", "bytes=0-1,4-5", "lines=1-2"] {
        let r = range(ignored);
        assert_eq!(r.status, 200, "{ignored}");
        assert_eq!(r.body.len(), len, "{ignored}");
    }
    let r = wd
        .request(
            "GET",
            "/big.bin",
            &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let etag = wd
        .get("/big.bin")
        .unwrap()
        .header("etag")
        .unwrap()
        .to_string();
    let r = wd
        .request(
            "GET",
            "/big.bin",
            &[("Range", "bytes=0-9"), ("If-Range", &etag)],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[..10]);

    // Small files too.
    let r = wd
        .request("GET", "/a.txt", &[("Range", "bytes=6-")], b"")
        .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "static\n");
}

#[test]
fn folders_serve_index_html() {
    let site = site();
    let wd = serve(&site);
    let r = wd.get("/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>home</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = wd.get("/sub/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<p>sub</p>");
    let r = wd.get("/sub?x=1").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/?x=1"));
    // A folder without index.html is not listed.
    assert_eq!(wd.get("/emptydir/").unwrap().status, 404);
    assert_eq!(wd.get("/sub/deep.txt").unwrap().text(), "deep");
    // No protocol-relative redirect out of the site.
    let r = wd.get("//sub").unwrap();
    assert_eq!(r.header("location"), Some("/sub/"));
}

#[test]
fn nothing_outside_static_path() {
    let site = site();
    let wd = serve(&site);
    let secret_abs = site.root.join("outside/secret.txt");
    let abs = format!("/{}", secret_abs.display());
    let attempts = [
        "/../outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/.%2e/outside/secret.txt",
        "/%2e%2e%2foutside%2fsecret.txt",
        "/..%2foutside%2fsecret.txt",
        "/sub%2f..%2f..%2foutside%2fsecret.txt",
        "/escape.txt",
        "/outdir/secret.txt",
        "/outdir/",
        "/a.txt%00.html",
        "/%00",
        "/../../../../../../etc/passwd",
        "/etc/passwd",
        abs.as_str(),
        "http://127.0.0.1/../outside/secret.txt",
    ];
    for path in attempts {
        let r = wd.get(path).unwrap();
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains(SECRET), "{path} leaked the secret");
        assert!(!r.text().contains("root:"), "{path} leaked /etc/passwd");
    }
    // Malformed escapes are a client error, not a file name.
    assert_eq!(wd.get("/%zz").unwrap().status, 400);
    // The server is still fine afterwards.
    assert_eq!(wd.get("/a.txt").unwrap().status, 200);
}

#[test]
fn missing_static_path_is_exit_2() {
    let dir = scratch_dir("static-missing");
    let missing = dir.join("does-not-exist");
    let mut wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "static".to_string()),
            ("static_path", missing.display().to_string()),
        ],
        wait_healthy: false,
        ..Opts::default()
    });
    let st = wd.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(2), "{}", wd.log());
    assert!(wd.log().contains("static_path"), "{}", wd.log());
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let mut wd = Watchdog::with(Opts {
        env: vec![
            ("mode", "static".to_string()),
            ("static_path", file.display().to_string()),
        ],
        wait_healthy: false,
        ..Opts::default()
    });
    let st = wd.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(2), "{}", wd.log());
    assert!(wd.log().contains("static_path"), "{}", wd.log());
    let _ = std::fs::remove_dir_all(&dir);
}
