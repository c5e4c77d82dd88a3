//! The upstream's response head: parsed with `httparse`, then held to the framing rules the
//! proxy relies on (where it is stricter than httparse, the reason is written here and in
//! the differential test in `tests.rs`).

use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::framing::{Chunk, RespFraming};

/// Largest response head accepted from the upstream.
pub(super) const MAX_HEAD: usize = 128 * 1024;
/// Most response headers accepted from the upstream.
pub(super) const MAX_HEADERS: usize = 128;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// A response head taken off the connection.
#[derive(Debug)]
pub(super) struct ParsedHead {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) keep_alive: bool,
}

/// Why a head was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// Nothing like a valid head (httparse refused it, or the status is not 100..=999).
    Invalid(String),
    /// Over `MAX_HEAD` bytes without its end.
    TooLarge,
}

/// Takes a complete response head off the front of `buf`, or `None` while it is partial.
/// Header values become slices of the head's bytes instead of copies.
///
/// Stricter than httparse: the status code must be 100..=999 (`http::StatusCode`).
pub(super) fn parse_head(buf: &mut BytesMut) -> Result<Option<ParsedHead>, HeadError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialized slots: filling 128 empty headers (4 KiB) per response cost more than
    // parsing nginx's six.
    let mut storage = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Invalid(format!("invalid response: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Invalid(format!("status {code}")))?;
    let version = resp.version.unwrap_or(1);
    // Where a slice httparse returned sits in the head (empty if it is empty or, which
    // httparse never does, elsewhere).
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| {
        let start = (part.as_ptr() as usize).wrapping_sub(base);
        match start.checked_add(part.len()) {
            Some(end) if !part.is_empty() && end <= len => (start, end),
            _ => (0, 0),
        }
    };
    let spans: Vec<_> = resp
        .headers
        .iter()
        .map(|h| (span(h.name.as_bytes()), span(h.value)))
        .collect();
    let head = buf.split_to(len).freeze();
    // Room for the two headers the watchdog adds (X-Duration-Seconds, X-Call-Id) without
    // growing the map.
    let mut headers = HeaderMap::with_capacity(spans.len() + 2);
    for &((n0, n1), (v0, v1)) in &spans {
        let name = head.get(n0..n1).map(HeaderName::from_bytes);
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1));
        let (Some(Ok(name)), Ok(value)) = (name, value) else {
            return Err(HeadError::Invalid("invalid header".into()));
        };
        headers.append(name, value);
    }
    let keep_alive = keeps_alive(version, &headers);
    Ok(Some(ParsedHead {
        status,
        headers,
        keep_alive,
    }))
}

/// How the body of a response to `method` with this head is delimited.
///
/// Stricter than httparse (which does not look at framing): every Content-Length line must
/// be 1*DIGIT fitting in a u64 (no sign, no list, no inner spaces); repeated lines must be
/// identical (they then count once); Transfer-Encoding must name `chunked` exactly once, as
/// the final coding. A 1xx/204/304 or a HEAD answer has no body whatever it says.
pub(super) fn response_framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<RespFraming, &'static str> {
    let bodiless = method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if bodiless {
            return Ok(RespFraming::Done);
        }
        return if ends_in_chunked(headers) {
            Ok(RespFraming::Chunked(Chunk::Size))
        } else {
            Err("upstream sent a Transfer-Encoding other than chunked as its final coding")
        };
    }
    let length = content_length(headers)?;
    Ok(match length {
        _ if bodiless => RespFraming::Done,
        Some(0) => RespFraming::Done,
        Some(n) => RespFraming::Length(n),
        None => RespFraming::Close,
    })
}

/// True when the Transfer-Encoding lines, taken as one list, end in `chunked` and name it
/// only there (RFC 9112 6.1: chunked is applied once, last).
fn ends_in_chunked(headers: &HeaderMap) -> bool {
    let mut codings = 0usize;
    let mut chunked_at = None;
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(v) = v.to_str() else {
            return false;
        };
        for coding in v.split(',').map(str::trim) {
            if coding.is_empty() {
                continue;
            }
            if coding.eq_ignore_ascii_case("chunked") {
                if chunked_at.is_some() {
                    return false;
                }
                chunked_at = Some(codings);
            }
            codings += 1;
        }
    }
    codings > 0 && chunked_at == Some(codings - 1)
}

/// The Content-Length a message declares: `None` without one. Each line must be 1*DIGIT;
/// repeated lines must agree.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = digits(v.as_bytes()).ok_or("upstream sent an invalid Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("upstream sent conflicting Content-Length values");
        }
        length = Some(n);
    }
    Ok(length)
}

/// `1*DIGIT` as a u64; `None` for anything else, or a value that does not fit.
pub(super) fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Whether the connection may carry another request after this response.
pub(super) fn keeps_alive(version: u8, headers: &HeaderMap) -> bool {
    let mut close = version == 0;
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            let t = token.trim();
            if t.eq_ignore_ascii_case("close") {
                return false;
            }
            if t.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        }
    }
    !close
}

/// How long the connection may sit idle by the upstream's `Keep-Alive: timeout=N`: a bit
/// less than N (a second less from 2 s up, half below), since the upstream's clock started
/// when it finished writing. `None` without the parameter.
pub(super) fn keep_alive_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(KEEP_ALIVE)?.to_str().ok()?;
    let secs = v.split(',').find_map(|param| {
        let (k, val) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| digits(val.trim().trim_matches('"').as_bytes()))?
    })?;
    Some(if secs >= 2 {
        Duration::from_secs(secs - 1)
    } else {
        Duration::from_millis(secs * 500)
    })
}
