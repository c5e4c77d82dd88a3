//! Unit and property tests of the parsers that see the upstream's bytes: the response head,
//! the framing rules, the chunked decoder and Content-Length counting.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use proptest::prelude::*;

use super::framing::{chunk_step, length_step, Chunk, ChunkStep, RespFraming, MAX_CHUNK_LINE};
use super::head::{keep_alive_timeout, keeps_alive, parse_head, response_framing, MAX_HEADERS};

/// A decoded chunked message: its body, and the bytes that followed it.
type Decoded = (Vec<u8>, Vec<u8>);

/// Feeds `wire` to the chunked decoder `cut` bytes per read: the body, the bytes left after
/// the message, or the decoder's error; `Ok(None)` when the input ran out first.
fn decode(wire: &[u8], cut: usize) -> Result<Option<Decoded>, &'static str> {
    let mut buf = BytesMut::new();
    let mut state = RespFraming::Chunked(Chunk::Size);
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        let RespFraming::Chunked(c) = state else {
            assert_eq!(state, RespFraming::Done);
            let mut rest = buf.to_vec();
            rest.extend_from_slice(wire.get(fed..).unwrap_or_default());
            return Ok(Some((out, rest)));
        };
        match chunk_step(c, &mut buf)? {
            ChunkStep::Next(next, data) => {
                state = next;
                out.extend_from_slice(&data.unwrap_or_default());
            }
            ChunkStep::NeedMore => {
                if fed >= wire.len() {
                    return Ok(None);
                }
                let end = (fed + cut.max(1)).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_at_any_read_size() {
    let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n";
    for cut in 1..wire.len() {
        let (body, rest) = decode(wire, cut).unwrap().unwrap();
        assert_eq!(body, b"hello 0123456789abcdef", "cut {cut}");
        assert!(rest.is_empty());
    }
}

#[test]
fn bad_chunks_are_errors() {
    assert!(decode(b"zz\r\nhello\r\n0\r\n\r\n", 64).is_err());
    assert!(decode(b"5\r\nhelloXX0\r\n\r\n", 64).is_err());
    assert!(decode(b"-1\r\nhello\r\n0\r\n\r\n", 64).is_err());
    assert!(decode(b"fffffffffffffffff\r\n", 64).is_err());
    let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
    for cut in [16, 4096, long.len()] {
        assert!(decode(long.as_bytes(), cut).is_err(), "cut {cut}");
    }
    let endless_trailers = format!("0\r\n{}", "X-T: 1\r\n".repeat(10_000));
    assert!(decode(endless_trailers.as_bytes(), 512).is_err());
}

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn framing_follows_rfc_9112_strictly() {
    let get = Method::GET;
    let ok = StatusCode::OK;
    assert_eq!(
        response_framing(&get, ok, &map(&[])),
        Ok(RespFraming::Close)
    );
    let cl = map(&[("content-length", "12")]);
    assert_eq!(response_framing(&get, ok, &cl), Ok(RespFraming::Length(12)));
    assert_eq!(
        response_framing(&Method::HEAD, ok, &cl),
        Ok(RespFraming::Done)
    );
    let not_modified = StatusCode::NOT_MODIFIED;
    assert_eq!(
        response_framing(&get, not_modified, &cl),
        Ok(RespFraming::Done)
    );
    let same = map(&[("content-length", "12"), ("content-length", "12")]);
    assert_eq!(
        response_framing(&get, ok, &same),
        Ok(RespFraming::Length(12))
    );
    for bad in [
        "+5",
        "5, 5",
        "-1",
        "5x",
        "0x5",
        "",
        "99999999999999999999999",
        "5 5",
    ] {
        let h = map(&[("content-length", bad)]);
        assert!(response_framing(&get, ok, &h).is_err(), "{bad:?}");
    }
    let differ = map(&[("content-length", "12"), ("content-length", "13")]);
    assert!(response_framing(&get, ok, &differ).is_err());
    for te in [&["gzip, chunked"][..], &["gzip", "chunked"], &["Chunked"]] {
        let h: HeaderMap = te
            .iter()
            .map(|v| (header::TRANSFER_ENCODING, HeaderValue::from_static(v)))
            .collect();
        assert_eq!(
            response_framing(&get, ok, &h),
            Ok(RespFraming::Chunked(Chunk::Size)),
            "{te:?}"
        );
    }
    for te in [
        &["gzip"][..],
        &["chunked, gzip"],
        &["chunked", "chunked"],
        &[""],
    ] {
        let h: HeaderMap = te
            .iter()
            .map(|v| (header::TRANSFER_ENCODING, HeaderValue::from_static(v)))
            .collect();
        assert!(response_framing(&get, ok, &h).is_err(), "{te:?}");
    }
}

#[test]
fn keep_alive_rules() {
    let mut h = HeaderMap::new();
    assert!(keeps_alive(1, &h));
    assert!(!keeps_alive(0, &h));
    h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
    assert!(keeps_alive(0, &h));
    h.insert(header::CONNECTION, HeaderValue::from_static("foo, close"));
    assert!(!keeps_alive(1, &h));
}

#[test]
fn keep_alive_timeout_is_honoured_with_a_margin() {
    use std::time::Duration;
    let t = |v: &'static str| keep_alive_timeout(&map(&[("keep-alive", v)]));
    assert_eq!(t("timeout=5"), Some(Duration::from_secs(4)));
    assert_eq!(t("max=100, timeout=1"), Some(Duration::from_millis(500)));
    assert_eq!(t("timeout=0"), Some(Duration::ZERO));
    assert_eq!(t("timeout=x"), None);
    assert_eq!(t("max=3"), None);
}

/// A response head (status line and headers, no body) as an upstream would write it.
fn head_bytes(status: u16, reason: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn header_pair() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("content-length".to_string()),
        Just("transfer-encoding".to_string()),
        Just("Connection".to_string()),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
    ];
    let value = prop_oneof![
        "[0-9]{1,3}",
        Just("chunked".to_string()),
        Just("gzip, chunked".to_string()),
        Just("+5".to_string()),
        "[!-~]([ -~]{0,20}[!-~])?",
    ];
    (name, value)
}

/// A head as an upstream would write it, with headers the framing rules look at.
fn valid_head() -> impl Strategy<Value = Vec<u8>> {
    (
        0u16..1000,
        "[A-Za-z ]{0,12}",
        proptest::collection::vec(header_pair(), 0..8),
    )
        .prop_map(|(s, r, h)| head_bytes(s, &r, &h))
}

/// A valid head, or one with a few bytes changed, or noise.
fn head_like() -> impl Strategy<Value = Vec<u8>> {
    let valid = valid_head();
    let mutated = (
        valid_head(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    )
        .prop_map(|(mut b, flips)| {
            for (at, byte) in flips {
                let i = at % b.len();
                b[i] = byte;
            }
            b
        });
    prop_oneof![
        valid,
        mutated,
        proptest::collection::vec(any::<u8>(), 0..256)
    ]
}

/// Independent statement of where the proxy is stricter than httparse about framing.
fn framing_acceptable(method: &Method, status: u16, headers: &[httparse::Header<'_>]) -> bool {
    let named = |n: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(n))
    };
    let bodiless = *method == Method::HEAD || status < 200 || status == 204 || status == 304;
    if named("transfer-encoding").next().is_some() {
        if bodiless {
            return true;
        }
        // A coding is a token: a value with bytes outside ASCII names none we know.
        if named("transfer-encoding").any(|h| !h.value.is_ascii()) {
            return false;
        }
        let joined: Vec<String> = named("transfer-encoding")
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect();
        let joined = joined.join(",");
        let codings: Vec<&str> = joined
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let chunked = codings
            .iter()
            .filter(|c| c.eq_ignore_ascii_case("chunked"))
            .count();
        return chunked == 1
            && codings
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
    }
    let lengths: Vec<Option<u64>> = named("content-length")
        .map(|h| {
            let v = std::str::from_utf8(h.value).ok()?;
            v.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse().ok())?
        })
        .collect();
    lengths.iter().all(Option::is_some) && lengths.windows(2).all(|w| w[0] == w[1])
}

proptest! {
    #[test]
    fn chunk_decoder_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..2048), cut in 1usize..64) {
        let _ = decode(&wire, cut);
    }

    #[test]
    fn chunk_decoder_never_panics_on_chunk_like_input(
        parts in proptest::collection::vec(prop_oneof![
            "[0-9a-fA-F]{1,17}".prop_map(String::into_bytes),
            Just(b"\r\n".to_vec()),
            Just(b";".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..16),
        ], 0..40),
        cut in 1usize..64,
    ) {
        let _ = decode(&parts.concat(), cut);
    }

    #[test]
    fn chunked_bodies_round_trip(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
        ext in any::<bool>(),
        trailer in any::<bool>(),
        after in proptest::collection::vec(any::<u8>(), 0..16),
        cut in 1usize..512,
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            wire.extend_from_slice(format!("{:x}{}\r\n", c.len(), if ext { ";a=b" } else { "" }).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        if trailer {
            wire.extend_from_slice(b"X-Sum: 1\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&after);
        let (body, rest) = decode(&wire, cut).unwrap().unwrap();
        prop_assert_eq!(body, chunks.concat());
        // Whatever followed the message is left over, never taken as body.
        prop_assert_eq!(rest, after);
    }

    #[test]
    fn content_length_counts_every_byte(
        wire in proptest::collection::vec(any::<u8>(), 0..2048),
        declared in 1u64..2048,
        cut in 1usize..300,
    ) {
        let mut buf = BytesMut::new();
        let mut framing = RespFraming::Length(declared);
        let mut out = Vec::new();
        let mut fed = 0;
        while let RespFraming::Length(left) = framing {
            if buf.is_empty() {
                if fed == wire.len() {
                    break;
                }
                let end = (fed + cut).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
            let (data, next) = length_step(left, &mut buf);
            out.extend_from_slice(&data);
            framing = next;
        }
        let body_len = (declared as usize).min(wire.len());
        prop_assert_eq!(&out[..], &wire[..body_len]);
        let mut rest = buf.to_vec();
        rest.extend_from_slice(&wire[fed..]);
        prop_assert_eq!(&rest[..], &wire[body_len..]);
        prop_assert_eq!(framing == RespFraming::Done, wire.len() >= declared as usize);
    }

    #[test]
    fn head_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(head)) = parse_head(&mut buf) {
            let _ = response_framing(&Method::GET, head.status, &head.headers);
            let _ = response_framing(&Method::HEAD, head.status, &head.headers);
        }
    }

    #[test]
    fn valid_heads_round_trip(
        status in 100u16..1000,
        reason in "[A-Za-z ]{0,20}",
        headers in proptest::collection::vec(
            ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", "([!-~]([ -~]{0,30}[!-~])?)?"),
            0..20,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut wire = head_bytes(status, &reason, &headers);
        wire.extend_from_slice(&body);
        let mut buf = BytesMut::from(&wire[..]);
        let head = parse_head(&mut buf).unwrap().unwrap();
        prop_assert_eq!(head.status.as_u16(), status);
        let got: Vec<(String, Vec<u8>)> = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        // HeaderMap groups repeated names together; compare per name, in order.
        for (name, _) in &headers {
            let lower = name.to_ascii_lowercase();
            let want: Vec<&[u8]> = headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
                .collect();
            let have: Vec<&[u8]> = got.iter().filter(|(k, _)| *k == lower).map(|(_, v)| &v[..]).collect();
            prop_assert_eq!(want, have);
        }
        prop_assert_eq!(got.len(), headers.len());
        prop_assert_eq!(&buf[..], &body[..]);
    }

    /// Accepting a head means httparse accepts it with the same status and headers; where
    /// the proxy refuses what httparse accepts, it is for a documented reason: a status
    /// below 100, or framing (Content-Length, Transfer-Encoding) that is not strict.
    #[test]
    fn head_parser_agrees_with_httparse(bytes in head_like(), head_req in any::<bool>()) {
        let method = if head_req { Method::HEAD } else { Method::GET };
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut theirs = httparse::Response::new(&mut storage);
        let their_status = theirs.parse(&bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        let ours = parse_head(&mut buf);
        let ours = ours.map(|h| h.map(|h| {
            let framing = response_framing(&method, h.status, &h.headers);
            (h, framing)
        }));
        match (their_status, ours) {
            (Ok(httparse::Status::Complete(len)), Ok(Some((head, framing)))) => {
                prop_assert_eq!(bytes.len() - len, buf.len(), "same head length");
                prop_assert_eq!(theirs.code, Some(head.status.as_u16()));
                let mut expected: Vec<(String, &[u8])> = theirs
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value))
                    .collect();
                let mut actual: Vec<(String, &[u8])> = head
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.as_bytes()))
                    .collect();
                // HeaderMap keeps each name's values in order; compare as ordered groups.
                expected.sort_by(|a, b| a.0.cmp(&b.0));
                actual.sort_by(|a, b| a.0.cmp(&b.0));
                prop_assert_eq!(expected, actual);
                let acceptable = framing_acceptable(&method, head.status.as_u16(), theirs.headers);
                prop_assert_eq!(framing.is_ok(), acceptable, "framing {:?}", framing);
            }
            (Ok(httparse::Status::Complete(_)), Err(_)) => {
                let code = theirs.code.unwrap_or(0);
                prop_assert!(code < 100, "refused a head httparse accepts with status {}", code);
            }
            (Ok(httparse::Status::Partial), Ok(None)) | (Err(_), Err(_)) => {}
            (theirs, ours) => prop_assert!(false, "httparse {:?}, ours {:?}", theirs, ours.map(|o| o.map(|h| h.0.status))),
        }
    }
}
