use super::*;
use http::{HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    h
}

const REQUIRED_HEADERS: [(&str, &[u8]); 4] = [
    ("ce-specversion", b"1.0"),
    ("ce-id", b"A234-1234-1234"),
    ("ce-source", b"/mycontext"),
    ("ce-type", b"com.example.someevent"),
];

fn reason(e: Error) -> String {
    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
    e.to_string()
}

/// RFC 4648 base64 with padding, to check the decoder against.
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_mode_comes_from_the_media_type_then_the_ce_headers() {
    let ct = |v: &str| headers(&[("content-type", v.as_bytes())]);
    assert_eq!(
        mode(&ct("application/cloudevents+json; charset=UTF-8")),
        Mode::Structured
    );
    assert_eq!(mode(&ct("Application/CloudEvents+JSON")), Mode::Structured);
    assert_eq!(mode(&ct("application/cloudevents-batch+json")), Mode::Batch);
    assert_eq!(
        mode(&ct("application/cloudevents+avro")),
        Mode::OtherFormat("application/cloudevents+avro".into())
    );
    assert_eq!(mode(&ct("application/json")), Mode::None);
    assert_eq!(mode(&headers(&[("ce-traceparent", b"x")])), Mode::None);
    assert_eq!(mode(&headers(&[("ce-id", b"1")])), Mode::Binary);
    let mut both = headers(&REQUIRED_HEADERS);
    assert_eq!(mode(&both), Mode::Binary);
    both.insert("content-type", HeaderValue::from_static(STRUCTURED));
    assert_eq!(mode(&both), Mode::Structured);
}

#[test]
fn a_binary_event_is_its_ce_headers_and_content_type() {
    let mut pairs = REQUIRED_HEADERS.to_vec();
    pairs.extend([
        ("ce-subject", &b"caf%C3%A9 %25 100%"[..]),
        ("ce-time", b"2018-04-05T17:31:00Z"),
        (
            "ce-traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("content-type", b"application/json"),
        ("x-other", b"ignored"),
    ]);
    let e = binary(&headers(&pairs)).unwrap();
    assert_eq!(e.get("id"), Some("A234-1234-1234"));
    assert_eq!(e.get("subject"), Some("café % 100%"));
    assert_eq!(e.get("datacontenttype"), Some("application/json"));
    assert_eq!(e.content_type.as_deref(), Some("application/json"));
    assert_eq!(e.data, None);
    let env: Vec<(String, String)> = e.env().collect();
    assert!(env.contains(&("CE_SPECVERSION".into(), "1.0".into())));
    assert!(env.contains(&(
        "CE_TRACEPARENT".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()
    )));
    assert!(env.contains(&("CE_DATACONTENTTYPE".into(), "application/json".into())));
    assert_eq!(env.len(), 8);
}

#[test]
fn bad_binary_events_are_400_with_the_reason() {
    let with = |extra: &[(&str, &[u8])], drop: &str| {
        let mut pairs: Vec<(&str, &[u8])> = REQUIRED_HEADERS
            .iter()
            .copied()
            .filter(|(k, _)| *k != drop)
            .collect();
        pairs.extend_from_slice(extra);
        reason(binary(&headers(&pairs)).unwrap_err())
    };
    assert!(with(&[], "ce-source").contains("source is missing"));
    assert!(with(&[("ce-source", b"")], "ce-source").contains("source is empty"));
    assert!(with(&[("ce-specversion", b"0.3")], "ce-specversion").contains("\"0.3\" is not 1.0"));
    assert!(with(&[("ce-id", b"2")], "").contains("ce-id given more than once"));
    assert!(with(&[("ce-foo-bar", b"x")], "").contains("lower-case letters and digits"));
    assert!(with(&[("ce-", b"x")], "").contains("lower-case letters and digits"));
    assert!(with(&[("ce-subject", b"a%0Ab")], "").contains("control character"));
    assert!(with(&[("ce-subject", b"a\tb")], "").contains("control character"));
    assert!(with(&[("ce-subject", b"%FF")], "").contains("not UTF-8"));
    assert!(with(&[("ce-datacontenttype", b"text/plain")], "").contains("Content-Type"));
    assert!(
        with(&[("content-type", b"a/b"), ("content-type", b"c/d")], "").contains("Content-Type")
    );
}

#[test]
fn structured_data_is_the_exact_json_text_or_the_string_or_base64() {
    let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data": {"b" : [1, 2.50]} ,"ext":7,"flag":true,"subject":null}"#;
    let e = structured(body, 4096).unwrap();
    assert_eq!(e.data.as_deref(), Some(&br#"{"b" : [1, 2.50]}"#[..]));
    assert_eq!(e.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        e.get("datacontenttype"),
        None,
        "not an attribute the sender gave"
    );
    assert_eq!(
        (e.get("ext"), e.get("flag"), e.get("subject")),
        (Some("7"), Some("true"), None)
    );

    let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"h\u00e9\"llo\n"}"#;
    let e = structured(body, 4096).unwrap();
    assert_eq!(e.data.as_deref(), Some("hé\"llo\n".as_bytes()));
    assert_eq!(e.content_type.as_deref(), Some("text/plain"));

    let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/vnd.x+json","data":"a string"}"#;
    assert_eq!(
        structured(body, 4096).unwrap().data.as_deref(),
        Some(&br#""a string""#[..])
    );

    let body = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"image/png","data_base64":"{}"}}"#,
        b64(b"\x89PNG\x00\xff")
    );
    let e = structured(body.as_bytes(), 4096).unwrap();
    assert_eq!(e.data.as_deref(), Some(&b"\x89PNG\x00\xff"[..]));
    assert_eq!(e.content_type.as_deref(), Some("image/png"));

    let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}"#;
    let e = structured(body, 4096).unwrap();
    assert_eq!(
        (e.data.as_deref(), e.content_type.as_deref()),
        (Some(&[0u8, 1][..]), None)
    );

    let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
    let e = structured(body, 4096).unwrap();
    assert_eq!((e.data.as_deref(), e.content_type), (Some(&b""[..]), None));
}

#[test]
fn bad_structured_events_are_400_with_the_reason() {
    let bad = |body: &str| reason(structured(body.as_bytes(), 200).unwrap_err());
    let base = r#""specversion":"1.0","id":"1","source":"/s","type":"t""#;
    assert!(bad("not json").contains("not a valid CloudEvent"));
    assert!(bad("[1]").contains("JSON object"));
    assert!(bad(&format!("{{{base}}} x")).contains("trailing"));
    assert!(bad(r#"{"id":"1","source":"/s","type":"t"}"#).contains("specversion is missing"));
    assert!(bad(r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#).contains("not 1.0"));
    assert!(
        bad(r#"{"specversion":1.0,"id":"1","source":"/s","type":"t"}"#)
            .contains("specversion must be a string")
    );
    assert!(bad(&format!(r#"{{{base},"id":"2"}}"#)).contains("given twice"));
    assert!(bad(&format!(r#"{{{base},"Bad":"x"}}"#)).contains("lower-case"));
    assert!(bad(&format!(r#"{{{base},"ext":{{}}}}"#)).contains("string, a number or a boolean"));
    assert!(bad(&format!(r#"{{{base},"subject":"a\u0000b"}}"#)).contains("control character"));
    assert!(bad(&format!(r#"{{{base},"data":1,"data_base64":"AA=="}}"#)).contains("both"));
    assert!(bad(&format!(r#"{{{base},"data_base64":"A"}}"#)).contains("not base64"));
    assert!(bad(&format!(r#"{{{base},"data_base64":7}}"#)).contains("must be a string"));
    assert!(bad(&format!(r#"{{{base},"big":"{}"}}"#, "x".repeat(200))).contains("max_header_bytes"));
    assert!(reason(structured(b"{\"a\":\xff}", 200).unwrap_err()).contains("UTF-8"));
    // The data itself does not count against the attributes' bound.
    let big = format!(r#"{{{base},"data":"{}"}}"#, "x".repeat(10_000));
    assert_eq!(
        structured(big.as_bytes(), 200).unwrap().data.unwrap().len(),
        10_002
    );
}

#[test]
fn base64_is_rfc_4648() {
    for data in [
        &b""[..],
        b"f",
        b"fo",
        b"foo",
        b"foob",
        b"fooba",
        b"foobar",
        b"\xff\x00\xfe",
    ] {
        let enc = b64(data);
        assert_eq!(base64_decode(&enc).as_deref(), Some(data), "{enc}");
        assert_eq!(
            base64_decode(enc.trim_end_matches('=')).as_deref(),
            Some(data),
            "{enc} unpadded"
        );
    }
    for bad in [
        "A", "AAAAA", "AA=A", "A===", "AAA==", "AB-_", "AA AA", "=", "AA=", "é",
    ] {
        assert_eq!(base64_decode(bad), None, "{bad}");
    }
}

/// Attribute names and values a sender may use, extensions among them.
fn attribute() -> impl Strategy<Value = (String, String)> {
    ("[a-z][a-z0-9]{0,9}", "[^\\p{Cc}]{0,24}")
        .prop_filter("not a required or data member", |(n, _)| {
            !REQUIRED.contains(&n.as_str()) && !n.starts_with("data")
        })
}

proptest! {
    /// Whatever the body, structured decoding answers an event or a 400, never a panic.
    #[test]
    fn any_structured_body_is_an_event_or_a_400(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = structured(&body, 1024) {
            prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }

    /// JSON-shaped bodies reach deeper: any member names and values, still no panic.
    #[test]
    fn any_json_object_is_an_event_or_a_400(
        members in proptest::collection::vec(("[a-z_A-Z0-9]{0,8}", prop_oneof![
            Just(serde_json::json!("1.0")), Just(serde_json::json!(null)), Just(serde_json::json!(3)),
            Just(serde_json::json!([1])), "\\PC{0,10}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"a": 1})), Just(serde_json::json!(true)),
        ]), 0..10),
    ) {
        let map: serde_json::Map<String, serde_json::Value> = members.into_iter().collect();
        let body = serde_json::to_vec(&map).unwrap();
        if let Err(e) = structured(&body, 1024) {
            prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }

    /// Any ce- headers with any bytes: an event or a 400.
    #[test]
    fn any_ce_headers_are_an_event_or_a_400(
        extra in proptest::collection::vec(("ce-[a-z0-9_-]{0,6}", proptest::collection::vec(any::<u8>(), 0..20)), 0..6),
        keep in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let mut h = HeaderMap::new();
        for ((name, value), keep) in REQUIRED_HEADERS.iter().zip(keep) {
            if keep {
                h.append(*name, HeaderValue::from_bytes(value).unwrap());
            }
        }
        for (name, value) in extra {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
                h.append(n, v);
            }
        }
        match binary(&h) {
            Ok(e) => {
                for (n, v) in &e.attributes {
                    prop_assert!(valid_name(n));
                    prop_assert!(!v.chars().any(char::is_control));
                }
            }
            Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
        }
    }

    /// An event a sender builds comes back whole: structured with binary data (base64) or
    /// JSON data, and binary mode with percent-encoded headers, give the same attributes and
    /// the same bytes.
    #[test]
    fn accepted_events_round_trip(
        id in "[^\\p{Cc}]{1,20}",
        extensions in proptest::collection::btree_map("[a-z][a-z0-9]{0,9}", "[^\\p{Cc}]{0,24}", 0..5),
        data in proptest::collection::vec(any::<u8>(), 0..200),
        json in proptest::option::of(proptest::collection::vec("\\PC{0,8}", 0..5)),
        (subject_name, subject) in attribute(),
    ) {
        let mut attrs: Vec<(String, String)> = vec![
            ("specversion".into(), "1.0".into()),
            ("id".into(), id),
            ("source".into(), "/orders/é".into()),
            ("type".into(), "com.example.order created".into()),
        ];
        attrs.push((subject_name, subject));
        for (k, v) in extensions {
            if !attrs.iter().any(|(n, _)| *n == k) && !k.starts_with("data") {
                attrs.push((k, v));
            }
        }
        let mut obj = serde_json::Map::new();
        for (k, v) in &attrs {
            obj.insert(k.clone(), serde_json::Value::from(v.clone()));
        }
        let want_data = match &json {
            Some(list) => {
                obj.insert("data".into(), serde_json::json!(list));
                serde_json::to_vec(&serde_json::json!(list)).unwrap()
            }
            None => {
                obj.insert("data_base64".into(), serde_json::Value::from(b64(&data)));
                data.clone()
            }
        };
        let body = serde_json::to_vec(&obj).unwrap();
        let e = structured(&body, 64 * 1024).unwrap();
        prop_assert_eq!(e.data.as_deref(), Some(&want_data[..]));
        let mut got = e.attributes.clone();
        let mut want = attrs.clone();
        got.sort();
        want.sort();
        prop_assert_eq!(&got, &want);

        let mut h = HeaderMap::new();
        for (k, v) in &attrs {
            h.append(HeaderName::from_bytes(format!("ce-{k}").as_bytes()).unwrap(), super::super::reply::encode(v));
        }
        let e = binary(&h).unwrap();
        let mut got = e.attributes;
        got.sort();
        prop_assert_eq!(got, want);
    }

    /// The decoder against the reference encoder, for any bytes.
    #[test]
    fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100), junk in "\\PC{0,12}") {
        prop_assert_eq!(base64_decode(&b64(&data)), Some(data));
        let _ = base64_decode(&junk);
    }
}
