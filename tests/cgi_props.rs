//! Property tests for the two places where CGI meets untrusted bytes: the response head a
//! function prints (`cgi::parse_response_headers`, with a differential against httparse)
//! and the request headers that become the function's environment (`cgi::request_env`).
//!
//! Where CGI is deliberately not HTTP, the differential leaves it out and a property of its
//! own covers it:
//! - `Status:` is CGI's pseudo-header for the status line (httparse sees a plain header);
//! - the 64 KiB block bound is the watchdog's (httparse has none);
//! - bare `\n` line ends are CGI's custom, which httparse happens to accept too, so they
//!   stay in the differential.

use fwatchdog::cgi::{self, Parsed};
use proptest::prelude::*;

const PREFIX: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// httparse's verdict on a header block: `Ok(Some((block length, headers)))` when complete,
/// `Ok(None)` when partial, `Err` when invalid.
#[allow(clippy::type_complexity)]
fn httparse_head(block: &[u8]) -> Result<Option<(usize, Vec<(String, Vec<u8>)>)>, String> {
    let mut raw = PREFIX.to_vec();
    raw.extend_from_slice(block);
    let mut slots = [httparse::EMPTY_HEADER; cgi::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => {
            let mut headers: Vec<_> = resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect();
            headers.sort();
            Ok(Some((n - PREFIX.len(), headers)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn sorted(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

/// A header name: mostly tokens, sometimes not (empty, spaces, separators, non-ASCII).
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => "[A-Za-z]{1,4}[ \t(),/;<=>?@\\[\\]{}\"][A-Za-z]{0,4}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no newline or colon", |b| *b != b'\n' && *b != b':'), 1..6),
    ]
    .prop_filter("Status is CGI's own", |n| !n.eq_ignore_ascii_case(b"status"))
}

/// A header value: mostly text with spaces and tabs, sometimes any byte but a newline.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[ -~\t]{0,24}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..12),
        1 => proptest::collection::vec(0x80u8..=0xff, 1..6),
    ]
}

/// One header line without its line end: `name:value`, sometimes with a space before the
/// colon or at the start of the line (obsolete folding), or no colon at all.
fn line() -> impl Strategy<Value = Vec<u8>> {
    (name(), value(), 0u8..10).prop_map(|(n, v, shape)| {
        let mut l = Vec::new();
        if shape == 0 {
            l.push(b' ');
        }
        l.extend_from_slice(&n);
        match shape {
            1 => l.push(b' '),
            2 => {
                l.extend_from_slice(&v);
                return l;
            }
            _ => {}
        }
        l.push(b':');
        l.extend_from_slice(&v);
        l
    })
}

fn eol() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..])]
}

/// A complete block: lines, each with its own line end, then the blank line.
fn block(max_lines: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((line(), eol()), 0..max_lines),
        eol(),
    )
        .prop_map(|(lines, end)| {
            let mut b = Vec::new();
            for (l, e) in lines {
                b.extend_from_slice(&l);
                b.extend_from_slice(e);
            }
            b.extend_from_slice(end);
            b
        })
}

/// A valid head: optional Status, token names, text values.
fn valid_head() -> impl Strategy<Value = (Option<u16>, Vec<(String, String)>, &'static [u8])> {
    (
        proptest::option::of(200u16..600),
        proptest::collection::vec(
            (
                "[a-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_filter("not Status", |n| n != "status"),
                "[!-~]([ -~\t]{0,20}[!-~])?",
            ),
            0..20,
        ),
        eol(),
    )
}

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_invariants(&buf);
    }

    #[test]
    fn parser_never_panics_on_many_short_lines(lines in proptest::collection::vec(line(), 0..300), end in eol()) {
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(&l);
            buf.extend_from_slice(end);
        }
        buf.extend_from_slice(end);
        check_invariants(&buf);
    }

    #[test]
    fn parser_agrees_with_httparse(block in block(12), body in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut buf = block.clone();
        buf.extend_from_slice(&body);
        let theirs = httparse_head(&buf);
        match (cgi::parse_response_headers(&buf), theirs) {
            (Parsed::Done { status, headers, body_start }, Ok(Some((n, h)))) => {
                prop_assert_eq!(status, http::StatusCode::OK);
                prop_assert_eq!(body_start, n);
                prop_assert_eq!(sorted(&headers), h);
            }
            (Parsed::Invalid(_), Err(_)) => {}
            (ours, theirs) => prop_assert!(false, "block {:?}: ours {:?}, httparse {:?}", String::from_utf8_lossy(&block), ours, theirs),
        }
    }

    #[test]
    fn header_count_bound_agrees_with_httparse(n in 90usize..110, end in eol()) {
        let mut buf = Vec::new();
        for i in 0..n {
            buf.extend_from_slice(format!("X-{i}: v").as_bytes());
            buf.extend_from_slice(end);
        }
        buf.extend_from_slice(end);
        let ours = matches!(cgi::parse_response_headers(&buf), Parsed::Done { .. });
        prop_assert_eq!(ours, httparse_head(&buf).is_ok());
        prop_assert_eq!(ours, n <= cgi::MAX_HEADERS);
    }

    #[test]
    fn valid_heads_round_trip((code, headers, end) in valid_head(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = Vec::new();
        if let Some(c) = code {
            buf.extend_from_slice(format!("Status: {c} Reason").as_bytes());
            buf.extend_from_slice(end);
        }
        for (n, v) in &headers {
            buf.extend_from_slice(format!("{n}: {v}").as_bytes());
            buf.extend_from_slice(end);
        }
        buf.extend_from_slice(end);
        let head_len = buf.len();
        buf.extend_from_slice(&body);
        // Every strict prefix of the head is incomplete, never invalid: streaming mode
        // parses the head again as more output arrives.
        for cut in 0..head_len {
            prop_assert!(matches!(cgi::parse_response_headers(&buf[..cut]), Parsed::Incomplete), "prefix {}", cut);
        }
        match cgi::parse_response_headers(&buf) {
            Parsed::Done { status, headers: got, body_start } => {
                prop_assert_eq!(status.as_u16(), code.unwrap_or(200));
                prop_assert_eq!(body_start, head_len);
                let mut want: Vec<_> = headers.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect();
                want.sort();
                prop_assert_eq!(sorted(&got), want);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn status_is_200_to_599_only(code in 0u16..1200, reason in "( [ -~]{0,10})?") {
        let buf = format!("Status: {code}{reason}\r\n\r\n");
        let ok = matches!(cgi::parse_response_headers(buf.as_bytes()), Parsed::Done { .. });
        prop_assert_eq!(ok, (200..=599).contains(&code), "{}", buf);
    }

    #[test]
    fn env_name_is_a_valid_unreserved_name(header in prop_oneof![
        Just("method".to_string()), Just("Path".to_string()), Just("QUERY".to_string()),
        Just("host".to_string()), Just("x-call-id".to_string()), Just("X_Call_Id".to_string()),
        "[A-Za-z0-9_-]{1,12}",
        "\\PC{0,20}",
    ]) {
        let got = cgi::header_env_name(&header);
        prop_assert_eq!(&got, &cgi::header_env_name(&header), "deterministic");
        if let Some(var) = got {
            prop_assert!(var.starts_with("Http_"));
            prop_assert!(var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{}", var);
            prop_assert!(!cgi::RESERVED_ENV.contains(&var.as_str()), "{}", var);
        }
    }

    #[test]
    fn env_names_of_distinct_headers_are_distinct(a in "[a-z0-9_-]{1,8}", b in "[a-z0-9_-]{1,8}") {
        if a != b {
            if let (Some(x), Some(y)) = (cgi::header_env_name(&a), cgi::header_env_name(&b)) {
                prop_assert_ne!(x, y, "{} and {}", a, b);
            }
        }
    }

    #[test]
    fn request_env_never_lets_a_header_pose_as_the_watchdog(
        headers in proptest::collection::vec(
            (
                prop_oneof![
                    Just("method".to_string()), Just("path".to_string()), Just("query".to_string()),
                    Just("host".to_string()), Just("x-call-id".to_string()), Just("x_call_id".to_string()),
                    Just("x-foo".to_string()), Just("x_foo".to_string()),
                    "[a-z0-9!#$%&'*+.^_`|~-]{1,10}",
                ],
                "[!-~]{0,10}",
            ),
            0..12,
        ),
        query in proptest::option::of("[a-z]=[0-9]"),
    ) {
        let uri = match &query {
            Some(q) => format!("/p?{q}"),
            None => "/p".to_string(),
        };
        let mut req = http::Request::builder().method("PUT").uri(&uri);
        for (n, v) in &headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        let env = cgi::request_env(&parts, "the-call-id");
        prop_assert_eq!(&env, &cgi::request_env(&parts, "the-call-id"), "deterministic");
        let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        prop_assert_eq!(before, names.len(), "a variable set twice: {:?}", env);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        prop_assert_eq!(get("Http_Method"), Some("PUT"));
        prop_assert_eq!(get("Http_Path"), Some("/p"));
        prop_assert_eq!(get("Http_Query"), query.as_deref());
        prop_assert_eq!(get("Http_X_Call_Id"), Some("the-call-id"));
        for (k, _) in &env {
            prop_assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{}", k);
        }
    }
}

/// What holds for any input: no panic, and a head inside both bounds.
fn check_invariants(buf: &[u8]) {
    if let Parsed::Done {
        headers,
        body_start,
        status,
    } = cgi::parse_response_headers(buf)
    {
        assert!(body_start <= buf.len().min(cgi::MAX_HEADER_BLOCK));
        assert!(headers.len() <= cgi::MAX_HEADERS);
        assert!((200..=599).contains(&status.as_u16()));
    }
}
