//! W3C Trace Context (`traceparent`, `tracestate`): taken from the request for the
//! function's `TRACEPARENT`/`TRACESTATE` variables and a CloudEvent reply, so a function
//! can join the caller's trace without an SDK. A `traceparent` that does not parse is
//! dropped with its `tracestate`, as the recommendation tells a receiver to do.

use http::HeaderMap;

/// A request's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// A valid `traceparent`.
    pub traceparent: String,
    /// The `tracestate` list, repeated headers joined with `,`.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of `headers`: one valid `traceparent` header (two are invalid), and the
    /// `tracestate` headers that go with it.
    pub fn of(headers: &HeaderMap) -> Option<TraceContext> {
        let mut parents = headers.get_all("traceparent").iter();
        let (Some(parent), None) = (parents.next(), parents.next()) else {
            return None;
        };
        let traceparent = parent.to_str().ok().filter(|p| valid_traceparent(p))?;
        let states: Vec<&str> = headers
            .get_all("tracestate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        Some(TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: (!states.is_empty()).then(|| states.join(",")),
        })
    }

    /// The function's variables: `TRACEPARENT`, and `TRACESTATE` when there is one.
    pub fn env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        std::iter::once(("TRACEPARENT".to_string(), self.traceparent.clone())).chain(
            self.tracestate
                .iter()
                .map(|s| ("TRACESTATE".to_string(), s.clone())),
        )
    }
}

/// `version-traceid-parentid-flags` in lower-case hex (Trace Context level 2, section
/// 3.2): version `ff` is invalid, all-zero ids are invalid, version `00` has exactly these
/// four fields, and a later version may add fields after a `-`.
pub fn valid_traceparent(v: &str) -> bool {
    let b = v.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r).is_some_and(|s| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        })
    };
    let zero = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(|&c| c == b'0'));
    let dashes = [2, 35, 52].iter().all(|&i| b.get(i) == Some(&b'-'));
    let fields = hex(0..2) && hex(3..35) && hex(36..52) && hex(53..55) && dashes;
    if !fields || v.starts_with("ff") || zero(3..35) || zero(36..52) {
        return false;
    }
    match (v.starts_with("00"), b.get(55)) {
        (_, None) => true,
        (true, Some(_)) => false,
        (false, Some(&c)) => c == b'-',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(GOOD));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn a_context_needs_one_valid_traceparent() {
        let mut h = HeaderMap::new();
        assert_eq!(TraceContext::of(&h), None);
        h.append("tracestate", "a=1".parse().unwrap());
        h.append("tracestate", " b=2 ".parse().unwrap());
        assert_eq!(TraceContext::of(&h), None, "tracestate alone");
        h.append("traceparent", GOOD.parse().unwrap());
        let c = TraceContext::of(&h).unwrap();
        assert_eq!(c.tracestate.as_deref(), Some("a=1,b=2"));
        let env: Vec<_> = c.env().collect();
        assert_eq!(env[0], ("TRACEPARENT".into(), GOOD.into()));
        assert_eq!(env[1], ("TRACESTATE".into(), "a=1,b=2".into()));
        h.append("traceparent", GOOD.parse().unwrap());
        assert_eq!(TraceContext::of(&h), None, "two traceparents");
    }

    proptest! {
        /// Any text is checked without a panic, and what passes is ASCII of the right shape.
        #[test]
        fn any_traceparent_is_checked_without_a_panic(v in "\\PC{0,80}", ver in "[0-9a-f]{2}") {
            if valid_traceparent(&v) {
                prop_assert!(v.is_ascii() && v.len() >= 55);
            }
            let mut good = GOOD.to_string();
            good.replace_range(0..2, &ver);
            prop_assert_eq!(valid_traceparent(&good), ver != "ff");
        }
    }
}
