//! What every function request passes before the function runs: X-Call-Id and X-Timeout.
//! (`max_inflight` is taken in the server, authentication in `secrets`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::request::Parts;
use tokio::time::Instant;

use crate::config::{parse_duration, Config};
use crate::error::Error;
use crate::mode::Ctx;

/// The request's `X-Call-Id`, or a fresh one. Settled first, so that even a request refused
/// by admission gets its own id echoed.
pub fn call_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-call-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(new_call_id)
}

/// Settles the rest of the per-request context: header size and effective timeout.
pub fn context(
    parts: &Parts,
    config: &Config,
    call_id: &str,
    call_id_value: Option<&http::HeaderValue>,
    received: Instant,
    peer_ip: Option<http::HeaderValue>,
) -> Result<Ctx, Error> {
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > config.max_header_bytes {
        return Err(Error::HeadersTooLarge(config.max_header_bytes));
    }
    check_host(parts)?;
    let mut timeouts = parts.headers.get_all("x-timeout").iter();
    let exec_timeout = match (timeouts.next(), timeouts.next()) {
        (None, _) => config.exec_timeout,
        // Which one would a proxy in front have checked? Neither is taken.
        (Some(_), Some(_)) => return Err(Error::BadRequest("more than one X-Timeout".into())),
        (Some(v), None) => {
            let asked = v
                .to_str()
                .ok()
                .and_then(|s| parse_duration(s).ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::BadRequest("X-Timeout is not a duration (e.g. 5s or 500ms)".into())
                })?;
            // X-Timeout may shorten the limit, never lengthen it.
            Some(match config.exec_timeout {
                Some(limit) => asked.min(limit),
                None => asked,
            })
        }
    };
    Ok(Ctx {
        call_id: call_id.to_string(),
        call_id_value: call_id_value.cloned(),
        received,
        exec_timeout,
        // Durations are bounded when parsed; checked anyway, since a panic here would end
        // the process for every client.
        deadline: exec_timeout.and_then(|d| received.checked_add(d)),
        read_deadline: received
            .checked_add(config.read_timeout)
            .unwrap_or_else(far_future),
        peer_ip,
        env: Vec::new(),
        whole: false,
    })
}

/// RFC 9112 3.2: a request with more than one `Host`, or one that is not a valid
/// `host[:port]`, is answered 400, never handed on (a function or an upstream would each
/// pick a different one).
fn check_host(parts: &Parts) -> Result<(), Error> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(Error::BadRequest("more than one Host header".into())),
        // HTTP/1.1 requires one (HTTP/2 carries :authority instead).
        (None, _) if parts.version == http::Version::HTTP_11 => {
            Err(Error::BadRequest("HTTP/1.1 request without Host".into()))
        }
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            Err(Error::BadRequest("Host is not a valid host[:port]".into()))
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 3.2.2, 3.2.3), or empty (which RFC 9112 3.2 allows).
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.strip_prefix(b"[") {
        // IP-literal: hex, dots and colons inside the brackets (IPv6, IPvFuture's "v").
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let (inner, after) = rest.split_at(end);
            let ok = !inner.is_empty()
                && inner
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || b":.vV".contains(b));
            if !ok {
                return false;
            }
            match after.get(1..) {
                Some([]) | None => return true,
                Some([b':', port @ ..]) => (&b""[..], port),
                Some(_) => return false,
            }
        }
        None => match v.iter().rposition(|&b| b == b':') {
            Some(i) => {
                let (host, port) = v.split_at(i);
                (host, port.get(1..).unwrap_or_default())
            }
            None => (v, &b""[..]),
        },
    };
    let reg_name = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    reg_name && port.iter().all(u8::is_ascii_digit)
}

/// A deadline that never comes in practice (a year on), for sums that would not fit.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(crate::config::MAX_DURATION).unwrap_or(now)
}

/// A fresh call id: 128 bits from a per-process seed and a counter, UUID-formatted.
pub fn new_call_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = splitmix(seed ^ n);
    let b = splitmix(a ^ n.rotate_left(17));
    // Written digit by digit: `format!` took 2 % of the proxy's user time.
    let mut out = [0u8; 36];
    put_hex(&mut out[0..8], a >> 32);
    out[8] = b'-';
    put_hex(&mut out[9..13], (a >> 16) & 0xffff);
    out[13] = b'-';
    put_hex(&mut out[14..18], 0x4000 | (a & 0x0fff));
    out[18] = b'-';
    put_hex(&mut out[19..23], ((b >> 48) & 0x3fff) | 0x8000);
    out[23] = b'-';
    put_hex(&mut out[24..36], b & 0xffff_ffff_ffff);
    // Hex digits and dashes: always UTF-8. (Collecting chars pushed them one by one.)
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// `v`'s low hex digits into `out`, as many as it is long, most significant first.
fn put_hex(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for c in out.iter_mut().rev() {
        *c = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_differ() {
        let a = new_call_id();
        let b = new_call_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn call_ids_are_version_4_uuids() {
        for _ in 0..1000 {
            let id = new_call_id();
            let groups: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.bytes()
                    .all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version nibble: {id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "variant: {id}"
            );
        }
    }

    proptest::proptest! {
        /// X-Timeout and Host are a client's bytes: any value gives a context or a 400,
        /// never a panic, and an accepted timeout never exceeds exec_timeout.
        #[test]
        fn any_x_timeout_or_host_is_a_context_or_a_400(
            timeout in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            host in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            exec in proptest::prop_oneof![proptest::strategy::Just("0"), proptest::strategy::Just("30s")],
        ) {
            let env: std::collections::HashMap<String, String> =
                [("fprocess", "cat"), ("exec_timeout", exec)]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            let config = Config::from_lookup(&env, None).unwrap();
            let mut parts = http::Request::new(()).into_parts().0;
            if let Ok(v) = http::HeaderValue::from_bytes(&timeout) {
                parts.headers.insert("x-timeout", v);
            }
            if let Ok(v) = http::HeaderValue::from_bytes(&host) {
                parts.headers.insert(http::header::HOST, v);
            }
            match context(&parts, &config, "id", None, Instant::now(), None) {
                Ok(ctx) => {
                    if let Some(limit) = config.exec_timeout {
                        proptest::prop_assert!(ctx.timeout() <= limit);
                    }
                }
                Err(e) => proptest::prop_assert_eq!(e.status(), http::StatusCode::BAD_REQUEST),
            }
        }
    }
}
