//! A request as a CloudEvent (CloudEvents 1.0, HTTP protocol binding): which content mode
//! it uses, and its attributes and data. Everything here is a client's bytes: attribute
//! values are bounded (headers by `max_header_bytes`, a structured event's attributes by
//! the same), names and values are checked before they can become environment variables
//! or header values, and nothing panics on any input.

use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use http::{header, HeaderMap};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::Error;

/// The structured JSON format's media type.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The batch format's media type.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The attributes every event has.
pub const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];

/// How a request carries an event, told from its headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No CloudEvent: neither a `ce-` required attribute header nor a CloudEvents media type.
    None,
    /// Attributes in `ce-` headers, the body is the data.
    Binary,
    /// `application/cloudevents+json`: the body is the event.
    Structured,
    /// `application/cloudevents-batch+json`.
    Batch,
    /// Another CloudEvents format (`application/cloudevents+avro`, ...): its media type.
    OtherFormat(String),
}

/// The binding's rule: the media type decides first (structured and batch modes), then any
/// of the required attributes as a `ce-` header means binary mode.
pub fn mode(headers: &HeaderMap) -> Mode {
    if let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_essence)
    {
        if essence == STRUCTURED {
            return Mode::Structured;
        }
        if essence == BATCH {
            return Mode::Batch;
        }
        if essence.starts_with("application/cloudevents") {
            return Mode::OtherFormat(essence);
        }
    }
    if ["ce-specversion", "ce-id", "ce-source", "ce-type"]
        .iter()
        .any(|h| headers.contains_key(*h))
    {
        return Mode::Binary;
    }
    Mode::None
}

/// `type/subtype` of a media type, lower case, parameters dropped.
pub fn media_essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// True for the media types whose `data` is JSON itself (the JSON format's rule), and for
/// none at all, which the format reads as `application/json`.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let e = media_essence(ct);
        e == "application/json" || (e.contains('/') && e.ends_with("+json"))
    })
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Every attribute given, by name (lower-case letters and digits), in arrival order,
    /// each once; the required four are always among them.
    pub attributes: Vec<(String, String)>,
    /// Structured mode: the data, which becomes the body. Binary mode: `None`, the body
    /// already is the data.
    pub data: Option<Bytes>,
    /// The data's media type, the function's `Content-Type`: `datacontenttype`, or in
    /// structured mode `application/json` for a `data` member without one.
    pub content_type: Option<String>,
}

impl Event {
    /// An attribute's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The attributes as the function's variables: `CE_<NAME>` (`CE_ID`, `CE_TRACEPARENT`).
    pub fn env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.attributes
            .iter()
            .map(|(n, v)| (format!("CE_{}", n.to_ascii_uppercase()), v.clone()))
    }
}

fn invalid(why: impl fmt::Display) -> Error {
    Error::BadRequest(format!("not a valid CloudEvent: {why}"))
}

/// CloudEvents attribute names: lower-case ASCII letters and digits.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The checks every event passes, whatever its mode: a value is text without control
/// characters (CloudEvents' String type disallows them, and they could not travel in an
/// environment variable or a header), the required attributes are there and not empty, and
/// `specversion` is 1.0.
fn finish(event: Event) -> Result<Event, Error> {
    for (name, value) in &event.attributes {
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "attribute {name} holds a control character"
            )));
        }
    }
    for name in REQUIRED {
        match event.get(name) {
            None => return Err(invalid(format!("the required attribute {name} is missing"))),
            Some("") => return Err(invalid(format!("the required attribute {name} is empty"))),
            Some(_) => {}
        }
    }
    match event.get("specversion") {
        Some("1.0") => Ok(event),
        Some(v) => Err(invalid(format!("specversion {v:?} is not 1.0"))),
        None => Err(invalid("the required attribute specversion is missing")),
    }
}

/// Binary mode: each `ce-<name>` header is an attribute (percent-decoded, as the binding's
/// 1.0.2 revision has senders encode), `Content-Type` is `datacontenttype`. A header given
/// twice is refused: which one would a proxy in front have looked at?
pub fn binary(headers: &HeaderMap) -> Result<Event, Error> {
    let mut attributes: Vec<(String, String)> = Vec::new();
    for name in headers.keys() {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(invalid(format!("{name} given more than once")));
        };
        if !valid_name(attr) {
            return Err(invalid(format!(
                "{name}: attribute names are lower-case letters and digits"
            )));
        }
        if attr == "datacontenttype" {
            return Err(invalid(
                "binary mode carries datacontenttype as Content-Type, not ce-datacontenttype",
            ));
        }
        let value = String::from_utf8(percent_decode(value.as_bytes()))
            .map_err(|_| invalid(format!("{name} is not UTF-8 once percent-decoded")))?;
        attributes.push((attr.to_string(), value));
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let content_type = match (types.next(), types.next()) {
        (_, Some(_)) => return Err(invalid("more than one Content-Type")),
        (None, None) => None,
        (Some(v), None) => Some(
            std::str::from_utf8(v.as_bytes())
                .map_err(|_| invalid("Content-Type is not UTF-8"))?
                .to_string(),
        ),
    };
    if let Some(ct) = &content_type {
        attributes.push(("datacontenttype".into(), ct.clone()));
    }
    finish(Event {
        attributes,
        data: None,
        content_type,
    })
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is kept as it is (senders of
/// the binding's first revision did not encode).
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let pair = input
            .get(i + 1)
            .copied()
            .and_then(hex)
            .zip(input.get(i + 2).copied().and_then(hex));
        match (b, pair) {
            (b'%', Some((hi, lo))) => {
                out.push((hi << 4) | lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Structured mode: the body is one JSON object. Its members other than `data` and
/// `data_base64` are the attributes (strings; an extension may also be a number or a
/// boolean; `null` means absent), held to `max_attr_bytes` together (counted as headers are,
/// name + value + 4), since each becomes a variable. `data` is handed on as the exact JSON
/// text sent when the data is JSON, as the string's text when it is a string of another
/// type; `data_base64` decoded. A member given twice is refused.
pub fn structured(body: &[u8], max_attr_bytes: usize) -> Result<Event, Error> {
    let text = std::str::from_utf8(body)
        .map_err(|e| invalid(format!("the body is not UTF-8 JSON ({e})")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let members = MembersSeed {
        limit: max_attr_bytes,
    }
    .deserialize(&mut de)
    .and_then(|m| de.end().map(|()| m))
    .map_err(invalid)?;
    let mut attributes = Vec::new();
    let (mut data, mut data_base64) = (None, None);
    for (name, raw) in members {
        match name.as_str() {
            "data" => data = Some(raw),
            "data_base64" => data_base64 = Some(raw),
            _ => {
                if !valid_name(&name) {
                    return Err(invalid(format!(
                        "member {name:?}: attribute names are lower-case letters and digits"
                    )));
                }
                let value: Value = serde_json::from_str(raw.get()).map_err(invalid)?;
                let text = match value {
                    Value::Null => continue,
                    Value::String(s) => s,
                    // Extensions may be Integer or Boolean; every attribute the spec defines
                    // is a String (or a URI or a time, written as strings in JSON).
                    Value::Number(_) | Value::Bool(_) if !is_defined(&name) => {
                        raw.get().to_string()
                    }
                    _ if is_defined(&name) => {
                        return Err(invalid(format!("attribute {name} must be a string")))
                    }
                    _ => {
                        return Err(invalid(format!(
                            "attribute {name} must be a string, a number or a boolean"
                        )))
                    }
                };
                attributes.push((name, text));
            }
        }
    }
    let datacontenttype = attributes
        .iter()
        .find(|(n, _)| n == "datacontenttype")
        .map(|(_, v)| v.clone());
    let data_null = |r: &Option<&RawValue>| r.is_some_and(|r| r.get() == "null");
    if data_null(&data) {
        data = None;
    }
    if data_null(&data_base64) {
        data_base64 = None;
    }
    let (bytes, implied) = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(invalid("both data and data_base64 are given")),
        (None, None) => (Bytes::new(), None),
        (None, Some(raw)) => {
            let Ok(Value::String(s)) = serde_json::from_str::<Value>(raw.get()) else {
                return Err(invalid("data_base64 must be a string"));
            };
            let bytes = base64_decode(&s).ok_or_else(|| invalid("data_base64 is not base64"))?;
            (Bytes::from(bytes), None)
        }
        (Some(raw), None) => {
            let bytes = if is_json(datacontenttype.as_deref()) {
                Bytes::copy_from_slice(raw.get().as_bytes())
            } else {
                match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::String(s)) => Bytes::from(s),
                    _ => Bytes::copy_from_slice(raw.get().as_bytes()),
                }
            };
            (bytes, Some("application/json"))
        }
    };
    let content_type = datacontenttype.or_else(|| implied.map(str::to_string));
    finish(Event {
        attributes,
        data: Some(bytes),
        content_type,
    })
}

/// The attributes CloudEvents 1.0 defines; all are strings in JSON.
fn is_defined(name: &str) -> bool {
    REQUIRED.contains(&name) || ["datacontenttype", "dataschema", "subject", "time"].contains(&name)
}

/// The members of a JSON object, each name once, borrowed from the input; the attributes'
/// bytes are counted as they are read, so an object of a million members stops early.
struct MembersSeed {
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for MembersSeed {
    type Value = Vec<(String, &'de RawValue)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object (the event)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(name) = map.next_key::<String>()? {
            let value: &RawValue = map.next_value()?;
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom(format!("member {name:?} given twice")));
            }
            if name != "data" && name != "data_base64" {
                bytes = bytes.saturating_add(name.len() + value.get().len() + 4);
                if bytes > self.limit {
                    return Err(de::Error::custom(format!(
                        "the attributes are larger than {} bytes (max_header_bytes)",
                        self.limit
                    )));
                }
            }
            out.push((name, value));
        }
        Ok(out)
    }
}

/// Standard base64 (RFC 4648 section 4), padding optional; `None` on any other character,
/// misplaced padding or an impossible length.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    let body = match s {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => s,
    };
    // Padding, when there is any, fills the last group of four.
    if body.len() % 4 == 1 || (body.len() != s.len() && !s.len().is_multiple_of(4)) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        // 2, 3 or 4 characters carry 1, 2 or 3 bytes.
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
