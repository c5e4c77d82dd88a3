//! CGI conventions: request metadata as `Http_*` environment variables, and RFC 3875
//! response headers at the start of a function's stdout.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The `Http_*` variables for a request (of-watchdog's names, plus `Http_Host`).
pub fn request_env(parts: &http::request::Parts) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(parts.headers.len() + 4);
    env.push(("Http_Method".to_string(), parts.method.as_str().to_string()));
    env.push(("Http_Path".to_string(), parts.uri.path().to_string()));
    if let Some(q) = parts.uri.query().filter(|q| !q.is_empty()) {
        env.push(("Http_Query".to_string(), q.to_string()));
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    if let Some(host) = host {
        env.push(("Http_Host".to_string(), host));
    }
    for name in parts.headers.keys() {
        if name == http::header::HOST {
            continue;
        }
        let Some(var) = env_name(name.as_str()) else {
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

/// `content-type` becomes `Http_Content_Type`; names that would not be a valid variable
/// name (anything but letters, digits, `-` and `_`) give `None`.
fn env_name(header: &str) -> Option<String> {
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let mut out = String::with_capacity(header.len() + 5);
    out.push_str("Http_");
    let mut upper = true;
    for c in header.chars() {
        if c == '-' || c == '_' {
            out.push('_');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    Some(out)
}

/// Longest CGI header block accepted.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Result of looking for a CGI header block at the start of `buf`.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Headers found; the body starts at `body_start`.
    Done {
        /// `Status:` or 200.
        status: StatusCode,
        /// Every other header.
        headers: HeaderMap,
        /// Offset of the first body byte.
        body_start: usize,
    },
    /// Not a valid header block.
    Invalid(String),
}

/// Parses RFC 3875 response headers (`Status: 201 Created`, `Content-Type: ...`, any
/// header) ended by an empty line. Lines may end in `\n` or `\r\n`.
pub fn parse_response_headers(buf: &[u8]) -> Parsed {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let mut pos = 0;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_HEADER_BLOCK {
                return Parsed::Invalid("CGI header block longer than 64 KiB".into());
            }
            return Parsed::Incomplete;
        };
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            return Parsed::Done {
                status,
                headers,
                body_start: pos,
            };
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Invalid(format!(
                "CGI header line without colon: {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(s) => status = s,
                None => {
                    return Parsed::Invalid(format!("CGI Status {value:?} is not a status code"))
                }
            }
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return Parsed::Invalid(format!("CGI header {name:?} is not valid"));
        };
        headers.append(n, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(env_name("content-type").unwrap(), "Http_Content_Type");
        assert_eq!(env_name("x-call-id").unwrap(), "Http_X_Call_Id");
        assert!(env_name("weird.header").is_none());
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
        assert!(matches!(
            parse_response_headers(b"no colon\n\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_response_headers(b"Status: abc\n\n"),
            Parsed::Invalid(_)
        ));
    }
}
