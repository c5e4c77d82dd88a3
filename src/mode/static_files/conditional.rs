//! Conditional and range requests for static files: `Range` (one span), `ETag` from
//! size and modification time, `If-None-Match` and `If-Modified-Since` (RFC 9110 13-14).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue, Method};

/// Which part of the file a request gets.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Span {
    /// All of it (no Range, an ignored one, or a multi-range request).
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// No byte of the file matches: 416.
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `len` bytes. A single `bytes=a-b`, `a-` or `-n` is
/// honoured; a syntactically invalid range is ignored as RFC 9110 asks, and several ranges
/// get the whole file (allowed, and spares a multipart body).
pub(super) fn parse_range(value: &str, len: u64) -> Span {
    let value = value.trim();
    let Some(spec) = value
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case("bytes="))
        .map(|_| value[6..].trim())
    else {
        return Span::Full;
    };
    if spec.contains(',') {
        return Span::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Span::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    if a.is_empty() {
        return match num(b) {
            None => Span::Full,
            Some(0) => Span::Unsatisfiable,
            Some(_) if len == 0 => Span::Unsatisfiable,
            Some(n) => Span::Part(len.saturating_sub(n), len - 1),
        };
    }
    let Some(start) = num(a) else {
        return Span::Full;
    };
    let end = if b.is_empty() {
        None
    } else {
        match num(b) {
            Some(e) if e >= start => Some(e),
            _ => return Span::Full,
        }
    };
    if start >= len {
        return Span::Unsatisfiable;
    }
    Span::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

/// A strong validator from size and modification time, as nginx makes them: it changes
/// whenever either does, and needs no read of the file.
pub(super) fn etag(len: u64, mtime: SystemTime) -> String {
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "\"{:x}-{:x}-{:x}\"",
        since.as_secs(),
        since.subsec_nanos(),
        len
    )
}

/// HTTP dates have whole seconds; comparisons drop the rest.
pub(super) fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Weak comparison of an `If-None-Match` list with our tag (RFC 9110 13.1.2).
pub(super) fn none_match(header: &str, tag: &str) -> bool {
    let ours = tag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

/// The request headers that decide between 200, 206, 304 and 416, taken out of the request
/// once (most requests carry none, so this allocates nothing for them).
#[derive(Debug, Default)]
pub(super) struct Conditions {
    if_none_match: Option<String>,
    if_modified_since: Option<SystemTime>,
    if_range: Option<String>,
    /// Only for GET: RFC 9110 has servers ignore Range on other methods.
    range: Option<String>,
}

impl Conditions {
    pub(super) fn of(headers: &HeaderMap, method: &Method) -> Conditions {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        Conditions {
            if_none_match: text(header::IF_NONE_MATCH),
            if_modified_since: text(header::IF_MODIFIED_SINCE)
                .and_then(|v| httpdate::parse_http_date(&v).ok()),
            if_range: text(header::IF_RANGE),
            range: (*method == Method::GET)
                .then(|| text(header::RANGE))
                .flatten(),
        }
    }

    /// True when the client's copy is current (answer 304).
    pub(super) fn not_modified(&self, tag: &str, mtime: SystemTime) -> bool {
        match (&self.if_none_match, self.if_modified_since) {
            // If-None-Match wins over If-Modified-Since when both are present.
            (Some(inm), _) => none_match(inm, tag),
            (None, Some(since)) => whole_seconds(mtime) <= whole_seconds(since),
            (None, None) => false,
        }
    }

    /// The part of a `len`-byte file to send. `If-Range` lets the range apply only if the
    /// client's validator still matches (strongly, for a tag; exactly, for a date);
    /// otherwise the whole file is sent.
    pub(super) fn span(&self, tag: &str, mtime: SystemTime, len: u64) -> Span {
        let Some(range) = &self.range else {
            return Span::Full;
        };
        let applies = match self.if_range.as_deref() {
            None => true,
            Some(v) if v.starts_with('"') || v.starts_with("W/") => v == tag,
            Some(v) => {
                httpdate::parse_http_date(v).is_ok_and(|d| whole_seconds(d) == whole_seconds(mtime))
            }
        };
        if applies {
            parse_range(range, len)
        } else {
            Span::Full
        }
    }
}
