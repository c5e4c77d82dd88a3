//! The worker protocol's bytes (see `docs/worker-protocol.md`): the request head the
//! watchdog writes, and the ready and response heads it reads. A worker is a process of
//! the function's, so what it writes is untrusted: a head is bounded before it is parsed,
//! and a status, a header or a length that does not check out is an error, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde_json::Value;

/// Longest head line accepted from a worker, newline included.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers a response head may carry.
pub const MAX_HEADERS: usize = 100;

/// A response head, checked.
#[derive(Debug)]
pub struct ResponseHead {
    /// 200 to 599.
    pub status: StatusCode,
    /// The worker's headers, without framing or hop-by-hop ones.
    pub headers: HeaderMap,
    /// Body bytes that follow the head.
    pub length: u64,
}

/// The request head line (with its newline) for a request of `length` body bytes.
pub fn request_head(
    parts: &http::request::Parts,
    call_id: &str,
    length: usize,
    timeout: Option<Duration>,
    env: &[(String, String)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 48);
    out.extend_from_slice(b"{\"method\":");
    string(&mut out, parts.method.as_str());
    out.extend_from_slice(b",\"path\":");
    string(&mut out, parts.uri.path());
    out.extend_from_slice(b",\"query\":");
    string(&mut out, parts.uri.query().unwrap_or(""));
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in parts.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        string(&mut out, name.as_str());
        out.push(b',');
        string(&mut out, &String::from_utf8_lossy(value.as_bytes()));
        out.push(b']');
    }
    out.extend_from_slice(b"],\"length\":");
    out.extend_from_slice(length.to_string().as_bytes());
    out.extend_from_slice(b",\"call_id\":");
    string(&mut out, call_id);
    out.extend_from_slice(b",\"deadline_ms\":");
    out.extend_from_slice(deadline_ms(timeout).to_string().as_bytes());
    out.extend_from_slice(b",\"env\":{");
    for (i, (k, v)) in env.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(&mut out, k);
        out.push(b':');
        string(&mut out, v);
    }
    out.extend_from_slice(b"}}\n");
    out
}

/// `s` as a JSON string literal.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Milliseconds since the Unix epoch at which `timeout` from now runs out; 0 for none.
fn deadline_ms(timeout: Option<Duration>) -> u128 {
    let Some(t) = timeout else {
        return 0;
    };
    SystemTime::now()
        .checked_add(t)
        .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis())
}

/// Checks the worker's first line: `{"ready":true}`.
pub fn parse_ready(line: &[u8]) -> Result<(), String> {
    let v = object(line)?;
    match v.get("ready") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(format!(
            "expected the ready line {{\"ready\":true}}, got {}",
            preview(line)
        )),
    }
}

/// Parses and checks a response head line; a body longer than `max_length` is refused.
pub fn parse_response_head(line: &[u8], max_length: u64) -> Result<ResponseHead, String> {
    let v = object(line)?;
    let status = match v.get("status") {
        None => StatusCode::OK,
        Some(s) => s
            .as_u64()
            .filter(|n| (200..=599).contains(n))
            .and_then(|n| u16::try_from(n).ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| format!("status {s} is not a number from 200 to 599"))?,
    };
    let length = v
        .get("length")
        .ok_or("the head has no length")?
        .as_u64()
        .ok_or("length is not a whole number of bytes")?;
    if length > max_length {
        return Err(format!(
            "length {length} is over the {max_length} bytes allowed"
        ));
    }
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &Value| -> Result<(), String> {
        if headers.len() >= MAX_HEADERS {
            return Err(format!("more than {MAX_HEADERS} headers"));
        }
        let value = value
            .as_str()
            .ok_or_else(|| format!("header {name:?}: the value is not a string"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("header {name}: {value:?} is not a valid value"))?;
        if !framing(&name) {
            headers.append(name, value);
        }
        Ok(())
    };
    match v.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => add(name, value)?,
                    _ => return Err("headers: each entry must be [name, value]".into()),
                }
            }
        }
        Some(Value::Object(map)) => {
            for (name, value) in map {
                add(name, value)?;
            }
        }
        Some(_) => return Err("headers must be a list of [name, value] or an object".into()),
    }
    Ok(ResponseHead {
        status,
        headers,
        length,
    })
}

/// Headers the watchdog sets itself: the ones no CGI function may set either, and
/// Content-Length (the body is framed from `length`) and the internal marker.
fn framing(name: &HeaderName) -> bool {
    crate::cgi::FRAMING_HEADERS.contains(name)
        || name == header::CONTENT_LENGTH
        || name.as_str() == crate::error::INTERNAL_HEADER
}

/// `line` (without its newline) as a JSON object.
fn object(line: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() >= MAX_HEAD {
        return Err(format!("head line longer than {MAX_HEAD} bytes"));
    }
    match serde_json::from_slice(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("the head is not a JSON object: {}", preview(line))),
        Err(e) => Err(format!("the head is not JSON ({e}): {}", preview(line))),
    }
}

/// The start of `line`, printable, for a log line.
fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(80)];
    format!("{:?}", String::from_utf8_lossy(cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_head_is_one_line_of_json_with_every_field() {
        let req = http::Request::post("/p%20q?a=1&b")
            .header("content-type", "text/plain")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .header(
                "x-bin",
                HeaderValue::from_bytes(b"\xff\"\n").unwrap_or(HeaderValue::from_static("x")),
            )
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let env = vec![("Http_Method".to_string(), "POST".to_string())];
        let line = request_head(&parts, "id\"1", 5, Some(Duration::from_secs(1)), &env);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"}\n"));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/p%20q");
        assert_eq!(v["query"], "a=1&b");
        assert_eq!(v["length"], 5);
        assert_eq!(v["call_id"], "id\"1");
        assert_eq!(v["env"]["Http_Method"], "POST");
        assert_eq!(
            v["headers"][0],
            serde_json::json!(["content-type", "text/plain"])
        );
        assert_eq!(v["headers"][1], serde_json::json!(["x-multi", "1"]));
        assert_eq!(v["headers"][2], serde_json::json!(["x-multi", "2"]));
        assert!(v["deadline_ms"].as_u64().unwrap() > 1_700_000_000_000);
        let none = request_head(&parts, "x", 0, None, &[]);
        let v: Value = serde_json::from_slice(&none).unwrap();
        assert_eq!(
            (
                v["deadline_ms"].as_u64(),
                v["env"].as_object().map(|m| m.len())
            ),
            (Some(0), Some(0))
        );
    }

    #[test]
    fn response_heads() {
        let h = parse_response_head(br#"{"length":3}"#, 10).unwrap();
        assert_eq!(
            (h.status, h.length, h.headers.len()),
            (StatusCode::OK, 3, 0)
        );
        let h = parse_response_head(
            br#"{"status":201,"headers":[["x-a","1"],["content-length","99"],["x-a","2"]],"length":0}"#,
            10,
        )
        .unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert!(h.headers.get("content-length").is_none());
        let h = parse_response_head(
            br#"{"headers":{"Content-Type":"text/plain"},"length":1}"#,
            10,
        )
        .unwrap();
        assert_eq!(h.headers["content-type"], "text/plain");
        for bad in [
            &b"not json"[..],
            br#"[1,2]"#,
            br#"{"status":200}"#,
            br#"{"length":-1}"#,
            br#"{"length":1.5}"#,
            br#"{"length":11}"#,
            br#"{"status":99,"length":0}"#,
            br#"{"status":600,"length":0}"#,
            br#"{"status":"200","length":0}"#,
            br#"{"headers":[["bad name","v"]],"length":0}"#,
            br#"{"headers":[["x","a\nb"]],"length":0}"#,
            br#"{"headers":[["x"]],"length":0}"#,
            br#"{"headers":"x","length":0}"#,
        ] {
            assert!(
                parse_response_head(bad, 10).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<String> = (0..=MAX_HEADERS)
            .map(|i| format!("[\"x-{i}\",\"v\"]"))
            .collect();
        let line = format!("{{\"headers\":[{}],\"length\":0}}", many.join(","));
        assert!(parse_response_head(line.as_bytes(), 10).is_err());
        assert!(parse_response_head(&vec![b' '; MAX_HEAD], 10).is_err());
    }

    #[test]
    fn the_ready_line() {
        assert!(parse_ready(b"{\"ready\":true}\n").is_ok());
        assert!(parse_ready(b"{\"ready\":false}").is_err());
        assert!(parse_ready(b"hello").is_err());
    }

    proptest! {
        /// Whatever a worker writes, parsing returns (never panics), and what it accepts is
        /// within bounds.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(line in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(h) = parse_response_head(&line, 1000) {
                prop_assert!(h.length <= 1000);
                prop_assert!(h.headers.len() <= MAX_HEADERS);
            }
            let _ = parse_ready(&line);
        }

        #[test]
        fn json_shaped_heads_parse_or_fail_cleanly(
            status in any::<i64>(),
            length in any::<i64>(),
            name in "[ -~]{0,12}",
            value in "\\PC{0,12}",
        ) {
            let line = serde_json::json!({"status": status, "length": length, "headers": [[name, value]]});
            let line = serde_json::to_vec(&line).unwrap();
            if let Ok(h) = parse_response_head(&line, u64::MAX) {
                prop_assert!((200..=599).contains(&h.status.as_u16()));
                prop_assert_eq!(i64::try_from(h.length).ok(), Some(length));
            }
        }
    }
}
