//! The request target as it may be sent upstream: no CONNECT, no dot segments.

use std::borrow::Cow;

use http::Method;

use crate::error::Error;

/// What the proxy forwards: every method but CONNECT.
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE";

/// The answer to a method the proxy cannot forward: CONNECT asks for a tunnel to another
/// host, which the function is not (forwarded, it arrived as `CONNECT /`).
pub(super) fn refuse_method(method: &Method) -> Result<(), Error> {
    if method != Method::CONNECT {
        return Ok(());
    }
    Err(Error::MethodNotAllowed {
        allow: ALLOW,
        why: "CONNECT (the watchdog is not a forward proxy)",
    })
}

/// `pq` with its path's dot segments removed (RFC 3986 5.2.4, a segment that is `.` or `..`
/// with any of its dots written `%2e`/`%2E` counting as one), so that a path joined to
/// `upstream_url`'s prefix stays under it. A path that climbs above the root is refused
/// (RFC 3986 would clamp it at the root; a client that sends one is probing). Borrowed, with
/// no allocation, when there is nothing to remove. A target that is not a path (`*`) is
/// returned as it is.
pub(super) fn normalize(pq: &str) -> Result<Cow<'_, str>, Error> {
    let (path, query) = match pq.find('?') {
        Some(i) => pq.split_at(i),
        None => (pq, ""),
    };
    if !path.starts_with('/') || !may_have_dot_segment(path) {
        return Ok(Cow::Borrowed(pq));
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        match dots(seg) {
            0 => out.push(seg),
            1 => {}
            _ => {
                if out.pop().is_none() {
                    return Err(Error::BadRequest(
                        "request path climbs above the root (..)".into(),
                    ));
                }
            }
        }
        // A dot segment at the end leaves the path ending in a slash ("/a/.." is "/").
        if i == last && dots(seg) > 0 {
            out.push("");
        }
    }
    let mut s = String::with_capacity(pq.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s.push_str(query);
    Ok(Cow::Owned(s))
}

/// A cheap first look: every dot segment starts with `/.` or `/%2e`.
fn may_have_dot_segment(path: &str) -> bool {
    let b = path.as_bytes();
    b.windows(2).any(|w| w == b"/.")
        || b.windows(4).any(|w| {
            w.first() == Some(&b'/') && w.get(1..).is_some_and(|e| e.eq_ignore_ascii_case(b"%2e"))
        })
}

/// 1 for a `.` segment, 2 for `..`, 0 for anything else (dots may be written `%2e`).
fn dots(seg: &str) -> u8 {
    let mut rest = seg.as_bytes();
    let mut n = 0u8;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(b".") {
            rest = r;
        } else if rest
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"%2e"))
        {
            rest = rest.get(3..).unwrap_or_default();
        } else {
            return 0;
        }
        n += 1;
        if n > 2 {
            return 0;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dot_segments() {
        let ok = |pq: &str| normalize(pq).unwrap().into_owned();
        assert_eq!(ok("/a/b?x=/../"), "/a/b?x=/../");
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("/a/./b/."), "/a/b/");
        assert_eq!(ok("/a/%2E%2e/b?q"), "/b?q");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a//../b"), "/a/b");
        assert_eq!(ok("/..."), "/...");
        assert_eq!(ok("/.a/b."), "/.a/b.");
        assert_eq!(ok("*"), "*");
        for bad in ["/..", "/../a", "/a/../..", "/%2e%2E", "/a/.%2e/..%2f/../.."] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(matches!(normalize("/plain/path?x"), Ok(Cow::Borrowed(_))));
    }

    proptest! {
        /// The result never holds a dot segment and never climbs: it is a path of the
        /// input's plain segments, in order.
        #[test]
        fn normalized_paths_have_no_dot_segments(
            segs in proptest::collection::vec(prop_oneof![
                Just("."), Just(".."), Just("%2e"), Just("%2E."), Just("a"), Just(""), Just("b.c"),
            ], 0..10),
        ) {
            let pq = format!("/{}", segs.join("/"));
            if let Ok(out) = normalize(&pq) {
                prop_assert!(out.starts_with('/'));
                prop_assert!(out.split('/').all(|s| dots(s) == 0), "{}", out);
            }
        }

        #[test]
        fn normalize_never_panics(pq in "[/.%2eE?a-z]{0,30}") {
            let _ = normalize(&pq);
        }
    }
}
