use super::conditional::*;
use super::*;
use http::HeaderMap;
use std::time::Duration;

#[test]
fn targets() {
    assert_eq!(
        target("/a/b.txt"),
        Target::Path(PathBuf::from("a/b.txt"), "/a/b.txt".into())
    );
    assert_eq!(target("/"), Target::Path(PathBuf::new(), String::new()));
    assert_eq!(
        target("//a/./b"),
        Target::Path(PathBuf::from("a/b"), "/a/b".into())
    );
    assert_eq!(
        target("/sp%20ace"),
        Target::Path(PathBuf::from("sp ace"), "/sp%20ace".into())
    );
    for bad in [
        "/../etc/passwd",
        "/a/../../x",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/x",
        "/a%2f..%2f..%2fetc",
        "/a%00b",
        "*",
        "etc/passwd",
    ] {
        assert_eq!(target(bad), Target::Refused, "{bad}");
    }
    assert_eq!(target("/%zz"), Target::Malformed);
    assert_eq!(target("/%4"), Target::Malformed);
}

#[test]
fn ranges() {
    assert_eq!(parse_range("bytes=0-9", 100), Span::Part(0, 9));
    assert_eq!(parse_range("bytes=90-", 100), Span::Part(90, 99));
    assert_eq!(parse_range("bytes=-10", 100), Span::Part(90, 99));
    assert_eq!(parse_range("bytes=-200", 100), Span::Part(0, 99));
    assert_eq!(parse_range("bytes=50-500", 100), Span::Part(50, 99));
    assert_eq!(parse_range("bytes=100-", 100), Span::Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", 100), Span::Unsatisfiable);
    assert_eq!(parse_range("bytes=0-", 0), Span::Unsatisfiable);
    assert_eq!(parse_range("bytes=9-3", 100), Span::Full);
    assert_eq!(parse_range("bytes=0-1,5-6", 100), Span::Full);
    assert_eq!(parse_range("items=0-1", 100), Span::Full);
    assert_eq!(parse_range("bytes=x-1", 100), Span::Full);
    assert_eq!(parse_range("bytes=+1-2", 100), Span::Full);
}

#[test]
fn types() {
    assert_eq!(
        content_type(Path::new("a/INDEX.HTML")),
        "text/html; charset=utf-8"
    );
    assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
    assert_eq!(content_type(Path::new("x.js.map")), "application/json");
    assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
}

#[test]
fn validators() {
    let t = "\"1-2-3\"";
    let now = SystemTime::now();
    let cond = |pairs: &[(header::HeaderName, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), header_value(v));
        }
        Conditions::of(&h, &Method::GET)
    };
    assert!(!cond(&[]).not_modified(t, now));
    assert!(cond(&[(header::IF_NONE_MATCH, "\"x\", W/\"1-2-3\"")]).not_modified(t, now));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(5));
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(5));
    assert!(cond(&[(header::IF_MODIFIED_SINCE, &later)]).not_modified(t, now));
    assert!(!cond(&[(header::IF_MODIFIED_SINCE, &earlier)]).not_modified(t, now));
    let r = |extra: &[(header::HeaderName, &str)]| {
        let mut pairs = vec![(header::RANGE, "bytes=0-1")];
        pairs.extend_from_slice(extra);
        cond(&pairs).span(t, now, 10)
    };
    assert_eq!(r(&[]), Span::Part(0, 1));
    assert_eq!(r(&[(header::IF_RANGE, t)]), Span::Part(0, 1));
    assert_eq!(r(&[(header::IF_RANGE, "\"old\"")]), Span::Full);
    assert_eq!(r(&[(header::IF_RANGE, &earlier)]), Span::Full);
    let mut h = HeaderMap::new();
    h.insert(header::RANGE, header_value("bytes=0-1"));
    assert_eq!(
        Conditions::of(&h, &Method::HEAD).span(t, now, 10),
        Span::Full
    );
}
