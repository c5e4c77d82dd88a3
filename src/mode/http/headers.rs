//! Request and response headers on their way through the proxy: hop-by-hop headers,
//! `X-Forwarded-*`, the one Host and the call id the upstream is given.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

use crate::body::ReqBody;
use crate::mode::Ctx;

const X_CALL_ID: HeaderName = HeaderName::from_static("x-call-id");

/// Gives the upstream exactly the call id the access log and the client see: the client's
/// own (its first `X-Call-Id`, when that is not empty) or the one made for this request.
/// Whatever else the client sent as `X-Call-Id` (an empty one, a second one) is replaced.
pub(super) fn add_call_id(headers: &mut HeaderMap, ctx: &Ctx) {
    if let Some(v) = &ctx.call_id_value {
        headers.insert(X_CALL_ID, v.clone());
    }
}

/// The host the client addressed: its Host header, or (HTTP/2) the URI's authority.
pub(super) fn request_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `name` is in [`HOP_BY_HOP`], if it is a hop-by-hop header.
fn hop_by_hop(name: &str) -> Option<usize> {
    HOP_BY_HOP.iter().position(|h| h.as_str() == name)
}

/// Removes hop-by-hop headers and those named in `Connection`. For an upgrade the
/// `Connection: upgrade` / `Upgrade` pair is what the upgrade is made of, so it stays.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names present, and removals only of those found: hashed lookups of
    // all nine names (and of every Connection token) per message in each direction were a
    // measurable part of the proxy's own cost. The ones found are kept as bits, so the
    // common case (`Connection: keep-alive`, `Transfer-Encoding`) allocates nothing.
    let found = headers
        .keys()
        .filter_map(|n| hop_by_hop(n.as_str()))
        .fold(0u16, |bits, i| bits | 1 << i);
    if found == 0 {
        return;
    }
    // Only names the list does not already cover (`close` names no header).
    let mut named: Vec<HeaderName> = Vec::new();
    if found & 1 != 0 {
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let token = token.trim();
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || HOP_BY_HOP
                    .iter()
                    .any(|h| token.eq_ignore_ascii_case(h.as_str()))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    let kept_upgrade = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & 1 << i != 0 {
            headers.remove(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
    if let Some(u) = kept_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// True for an HTTP/1.1 `Upgrade` request other than h2c (which the watchdog itself would
/// have to speak, and declines by serving the request as HTTP/1.1).
pub(super) fn wants_upgrade(req: &Request<ReqBody>) -> bool {
    // Cheapest test first: almost no request has an Upgrade header, and then Connection
    // is never looked up.
    let proto = || {
        req.headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
    };
    let has_token = || {
        req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    };
    req.version() == Version::HTTP_11
        && proto().is_some_and(|p| !p.eq_ignore_ascii_case("h2c"))
        && has_token()
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(super) fn add_forwarded(headers: &mut HeaderMap, ctx: &Ctx, host: Option<&HeaderValue>) {
    // One lookup per header (an entry), not a check and then an insert: this runs on
    // every proxied request.
    if let Some(ip) = &ctx.peer_ip {
        match headers.entry(X_FORWARDED_FOR) {
            Entry::Occupied(mut prev) => {
                let appended = match prev.get().to_str() {
                    Ok(p) if !p.is_empty() => {
                        HeaderValue::from_str(&format!("{p}, {}", ip.to_str().unwrap_or_default()))
                            .ok()
                    }
                    _ => Some(ip.clone()),
                };
                if let Some(v) = appended {
                    prev.insert(v);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(ip.clone());
            }
        }
    }
    // A platform proxy in front (Knative's queue-proxy) already knows the real scheme and
    // host; keep what it says.
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    if let (Entry::Vacant(slot), Some(h)) = (headers.entry(X_FORWARDED_HOST), host) {
        slot.insert(h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    /// Every hop-by-hop header and every header Connection names goes; the rest stays, and
    /// an upgrade keeps exactly its Connection/Upgrade pair.
    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let all = [
            ("connection", "close, X-Drop, te"),
            ("connection", "Keep-Alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "close"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-drop", "1"),
            ("x-kept", "yes"),
        ];
        let mut h = map(&all);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&[("x-kept", "yes")]));
        let mut h = map(&all);
        strip_hop_by_hop(&mut h, true);
        let upgraded = map(&[
            ("x-kept", "yes"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(h, upgraded);
        let mut h = map(&[("x-kept", "yes"), ("content-length", "3")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&[("x-kept", "yes"), ("content-length", "3")]));
    }
}
