use super::InputKind::{self, *};

#[test]
fn media_types() {
    for (ct, want) in [
        ("application/json", Json),
        ("Application/JSON; charset=utf-8", Json),
        (" application/json ;charset=\"utf-8\"", Json),
        ("application/vnd.api+json", Json),
        ("application/ld+JSON; profile=x", Json),
        ("text/plain", Text),
        ("TEXT/csv; charset=latin1", Text),
        ("text/html", Text),
        ("application/octet-stream", Binary),
        ("image/png", Binary),
        ("application/jsonx", Binary),
        ("json", Binary),
        ("text/", Binary),
        ("/json", Binary),
        ("", Binary),
        (
            "multipart/form-data; boundary=\"a;application/json\"",
            Binary,
        ),
    ] {
        assert_eq!(InputKind::from_media_type(ct), want, "{ct:?}");
    }
}

#[test]
fn no_content_type_is_binary() {
    assert_eq!(InputKind::of(&http::HeaderMap::new()), Binary);
}
