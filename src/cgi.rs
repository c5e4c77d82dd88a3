//! CGI conventions: request metadata as `Http_*` environment variables, and RFC 3875
//! response headers at the start of a function's stdout.
//!
//! Both directions carry untrusted bytes. A request's headers must not be able to pose as
//! the variables the watchdog sets itself, and a function's header block must not be able to
//! exhaust memory, panic a `HeaderMap`, or frame the HTTP response behind the watchdog's back
//! (the watchdog counts the body and sets the framing itself).

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Variables the watchdog sets for a function from the request itself; no header may map
/// to one of them (`Method: x` would otherwise overwrite `Http_Method`). Every header-derived
/// variable starts with `Http_`, so the other variables the watchdog sets (`INPUT_FILE`,
/// `OUTPUT_FILE`) cannot be reached at all.
pub const RESERVED_ENV: [&str; 5] = [
    "Http_Method",
    "Http_Path",
    "Http_Query",
    "Http_Host",
    "Http_X_Call_Id",
];

/// The `Http_*` variables for a request (of-watchdog's names, plus `Http_Host`), with
/// `Http_X_Call_Id` set to `call_id`, the id the watchdog logs and echoes.
pub fn request_env(parts: &http::request::Parts, call_id: &str) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(parts.headers.keys_len() + 5);
    env.push(("Http_Method".to_string(), parts.method.as_str().to_string()));
    env.push(("Http_Path".to_string(), parts.uri.path().to_string()));
    if let Some(q) = parts.uri.query().filter(|q| !q.is_empty()) {
        env.push(("Http_Query".to_string(), q.to_string()));
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    if let Some(host) = host {
        env.push(("Http_Host".to_string(), host));
    }
    env.push(("Http_X_Call_Id".to_string(), call_id.to_string()));
    for name in parts.headers.keys() {
        let Some(var) = header_env_name(name.as_str()) else {
            continue;
        };
        // Repeated headers are joined as HTTP allows; values that are not text are skipped.
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        env.push((var, values.join(", ")));
    }
    env
}

/// The variable a request header becomes: `content-type` gives `Http_Content_Type`.
///
/// `None` for a name that would collide: one of [`RESERVED_ENV`] (`Host` and `X-Call-Id`
/// reach the function through those), and any name holding `_`, since `X_Foo` and `X-Foo`
/// would both be `Http_X_Foo` and a client could smuggle one past a proxy that filters the
/// other (nginx and Apache drop such headers for the same reason). Names with anything but
/// letters, digits and `-` give `None` too. Without `_` the mapping is one-to-one, so two
/// headers never share a variable.
pub fn header_env_name(header: &str) -> Option<String> {
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    let mut out = String::with_capacity(header.len() + 5);
    out.push_str("Http_");
    let mut upper = true;
    for c in header.chars() {
        if c == '-' {
            out.push('_');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    if RESERVED_ENV.contains(&out.as_str()) {
        return None;
    }
    Some(out)
}

/// Longest CGI header block accepted, blank line included.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Most header lines (`Status` included) in a CGI header block: hyper's own default for a
/// parsed head, and far below a `HeaderMap`'s capacity (32,768 names), which panics beyond.
pub const MAX_HEADERS: usize = 100;

/// Result of looking for a CGI header block at the start of `buf`.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Headers found; the body starts at `body_start`.
    Done {
        /// `Status:` or 200.
        status: StatusCode,
        /// Every other header, as the function wrote it (see [`take_framing`]).
        headers: HeaderMap,
        /// Offset of the first body byte.
        body_start: usize,
    },
    /// Not a valid header block.
    Invalid(String),
}

/// Parses RFC 3875 response headers (`Status: 201 Created`, `Content-Type: ...`, any
/// header) ended by an empty line. Lines may end in `\n` or `\r\n`.
///
/// Header lines follow RFC 9112 as httparse reads them: a token, a colon with no space
/// before it, a value of visible bytes, spaces, tabs or obs-text (trimmed). A line that
/// starts with white space (obsolete folding) is invalid. `Status` must be three digits in
/// 200–599, optionally followed by a space and a reason; 1xx (101 would hand the connection
/// to the function) and codes outside HTTP's range are invalid, as is a second `Status`.
/// At most [`MAX_HEADERS`] lines in at most [`MAX_HEADER_BLOCK`] bytes.
pub fn parse_response_headers(buf: &[u8]) -> Parsed {
    let mut status = None;
    let mut headers = HeaderMap::new();
    let mut lines = 0usize;
    // Only the first MAX_HEADER_BLOCK bytes can hold the block: nothing past them is read.
    let window = buf.get(..MAX_HEADER_BLOCK).unwrap_or(buf);
    let mut rest = window;
    let mut pos = 0usize;
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if buf.len() >= MAX_HEADER_BLOCK {
                return Parsed::Invalid(format!(
                    "CGI header block longer than {MAX_HEADER_BLOCK} bytes"
                ));
            }
            return Parsed::Incomplete;
        };
        let (line, after) = rest.split_at(nl);
        let after = after.get(1..).unwrap_or_default();
        pos += nl + 1;
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Parsed::Done {
                status: status.unwrap_or(StatusCode::OK),
                headers,
                body_start: pos,
            };
        }
        lines += 1;
        if lines > MAX_HEADERS {
            return Parsed::Invalid(format!(
                "CGI header block has more than {MAX_HEADERS} headers"
            ));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Invalid(format!(
                "CGI header line without colon: {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        let (name, value) = line.split_at(colon);
        let value = trim_ows(value.get(1..).unwrap_or_default());
        let invalid = || {
            Parsed::Invalid(format!(
                "CGI header {:?} is not valid",
                String::from_utf8_lossy(line)
            ))
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            return invalid();
        };
        if name.eq_ignore_ascii_case(b"status") {
            if status.is_some() {
                return Parsed::Invalid("CGI Status given twice".into());
            }
            match parse_status(value.as_bytes()) {
                Some(s) => status = Some(s),
                None => {
                    return Parsed::Invalid(format!(
                        "CGI Status {:?} is not a status code in 200-599",
                        String::from_utf8_lossy(value.as_bytes())
                    ))
                }
            }
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return invalid();
        };
        headers.append(name, value);
    }
}

/// `200`, `404 Not Found`: three digits in 200–599, then nothing or a space and a reason.
fn parse_status(value: &[u8]) -> Option<StatusCode> {
    let (code, reason) = value.split_at_checked(3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(reason.first(), None | Some(b' ')) {
        return None;
    }
    let n: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    if !(200..=599).contains(&n) {
        return None;
    }
    StatusCode::from_u16(n).ok()
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Headers that frame or steer the connection, which only the watchdog may set: a function
/// that sets them could end the client's connection, switch its protocol or, with a
/// Transfer-Encoding, make its body parse as further responses.
pub const FRAMING_HEADERS: [HeaderName; 7] = [
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
];

/// Removes the framing headers a function must not set ([`FRAMING_HEADERS`] and
/// Content-Length) and returns the Content-Length it declared, if any. One value of 1*DIGIT
/// that fits a u64 is valid; `+5`, `5, 5`, two Content-Length lines, or an overflow are not.
pub fn take_framing(headers: &mut HeaderMap) -> Result<Option<u64>, String> {
    for name in &FRAMING_HEADERS {
        headers.remove(name);
    }
    let header::Entry::Occupied(entry) = headers.entry(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let (_, mut values) = entry.remove_entry_mult();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err("CGI Content-Length given more than once".into());
    };
    let bytes = value.as_bytes();
    let parsed = if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    } else {
        None
    };
    parsed.map(Some).ok_or_else(|| {
        format!(
            "CGI Content-Length {:?} is not a length",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// [`check_length`] for a response to `method` with status `code`: one that carries no body
/// (HEAD, 204, 304) may declare the length a GET would have had, so nothing is checked.
pub fn check_response_length(
    method: &http::Method,
    code: StatusCode,
    declared: Option<u64>,
    counted: u64,
) -> Result<(), String> {
    if method == http::Method::HEAD
        || code == StatusCode::NO_CONTENT
        || code == StatusCode::NOT_MODIFIED
    {
        return Ok(());
    }
    check_length(declared, counted)
}

/// A declared Content-Length must be the number of body bytes the function wrote.
pub fn check_length(declared: Option<u64>, counted: u64) -> Result<(), String> {
    match declared {
        Some(d) if d != counted => Err(format!(
            "CGI Content-Length {d} differs from the {counted} body bytes the function wrote"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            header_env_name("content-type").unwrap(),
            "Http_Content_Type"
        );
        assert_eq!(
            header_env_name("x-custom-thing").unwrap(),
            "Http_X_Custom_Thing"
        );
        assert!(header_env_name("weird.header").is_none());
        for reserved in ["method", "path", "query", "host", "x-call-id"] {
            assert!(header_env_name(reserved).is_none(), "{reserved}");
        }
        assert!(header_env_name("x_foo").is_none());
    }

    #[test]
    fn parses_status_and_headers() {
        let out = b"Status: 201 Created\r\nContent-Type: text/plain\nX-A: 1\n\nbody";
        match parse_response_headers(out) {
            Parsed::Done {
                status,
                headers,
                body_start,
            } => {
                assert_eq!(status, StatusCode::CREATED);
                assert_eq!(headers["content-type"], "text/plain");
                assert_eq!(headers["x-a"], "1");
                assert_eq!(&out[body_start..], b"body");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_response_headers(b"Status: 200\n"),
            Parsed::Incomplete
        ));
        for bad in [
            &b"no colon\n\n"[..],
            b"Status: abc\n\n",
            b"Status: 101\n\n",
            b"Status: 600\n\n",
            b"Status: 200\nStatus: 200\n\n",
            b" X-A: folded\n\n",
            b"X-A : spaced\n\n",
        ] {
            assert!(
                matches!(parse_response_headers(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn framing() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(take_framing(&mut h), Ok(Some(5)));
        assert!(h.is_empty());
        for bad in ["+5", "5, 5", "", "99999999999999999999999", "0x5"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(bad).unwrap());
            assert!(take_framing(&mut h).is_err(), "{bad:?}");
        }
        assert!(check_length(Some(0), 5).is_err());
        assert!(check_length(None, 5).is_ok());
    }

    #[test]
    fn bodiless_responses_are_not_checked() {
        use http::Method;
        let ok = StatusCode::OK;
        assert!(check_response_length(&Method::GET, ok, Some(0), 5).is_err());
        assert!(check_response_length(&Method::HEAD, ok, Some(0), 5).is_ok());
        assert!(check_response_length(&Method::GET, StatusCode::NO_CONTENT, Some(9), 0).is_ok());
        assert!(check_response_length(&Method::GET, StatusCode::NOT_MODIFIED, Some(9), 0).is_ok());
    }
}
