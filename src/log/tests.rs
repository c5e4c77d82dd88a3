//! [`Line`] against tracing-subscriber: the same event through a subscriber built as
//! [`crate::log::init`] builds it, and through our writer, must give the same bytes
//! (timestamps aside, which are microseconds apart).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;

/// Strings that need care in one format or the other.
const NASTY: &[&str] = &[
    "plain",
    "",
    " ",
    "with \"quotes\" and 'apostrophes'",
    "back\\slash \\n",
    "new\nline",
    "cr\rlf\r\n",
    "tab\there",
    "ünïcødé ✓ 日本語 🦀",
    "combining e\u{301} and \u{34f}",
    "\u{1b}[31mred\u{1b}[0m",
    "\0\x01\x07\x08\x0b\x0c\x1f\x7f",
    "\u{80}\u{85}\u{9f}\u{a0}\u{ad}",
    "\u{2028}\u{2029}\u{200b}\u{feff}\u{fffd}",
    "a{b}c {} %s",
    "key=value other=\"x\"",
    "/path?q=1&r=2#frag",
    "-",
];

/// Seconds that Debug or serde_json write in more than one way.
const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    0.5,
    0.000_012,
    0.000_123,
    0.001_234_5,
    123_456_789.123,
    1e21,
    f64::MIN_POSITIVE,
    f64::NAN,
    f64::INFINITY,
];

/// What a subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What tracing-subscriber prints for the events `emit` makes, with the settings of
/// [`crate::log::init`] (keep the two in step).
fn traced(format: LogFormat, emit: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let builder = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    match format {
        LogFormat::Text => tracing::subscriber::with_default(builder.finish(), emit),
        LogFormat::Json => {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit)
        }
    }
    let out = captured.0.lock().unwrap().clone();
    String::from_utf8(out).expect("tracing writes UTF-8")
}

/// The line with its timestamp's digits zeroed, after checking that the timestamp is the
/// RFC 3339 form both writers use, and recent.
fn masked(line: &str) -> String {
    let start = line
        .find(|c: char| c.is_ascii_digit())
        .expect("a timestamp");
    let end = start + line[start..].find('Z').expect("a UTC timestamp") + 1;
    let stamp = &line[start..end];
    let when = humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let age = SystemTime::now().duration_since(when).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{line:?}");
    let zeroed = stamp.replace(|c: char| c.is_ascii_digit(), "0");
    assert_eq!(zeroed, "0000-00-00T00:00:00.000000Z", "{line:?}");
    format!("{}{zeroed}{}", &line[..start], &line[end..])
}

fn ours(line: Line) -> String {
    String::from_utf8(line.finish()).expect("UTF-8 in, UTF-8 out")
}

/// tracing's text line with raw line breaks escaped, which is what [`Line`] writes instead
/// (Debug-quoted values already carry them escaped).
fn unbroken(traced: &str) -> String {
    let body = traced.strip_suffix('\n').expect("a whole line");
    format!("{}\n", body.replace('\n', "\\n").replace('\r', "\\r"))
}

/// Asserts that `line` is what tracing prints for `emit`'s one event.
fn assert_same(format: LogFormat, line: Line, emit: impl FnOnce()) {
    let mut expected = traced(format, emit);
    if format == LogFormat::Text {
        expected = unbroken(&expected);
    }
    assert_eq!(masked(&ours(line)), masked(&expected));
}

const FORMATS: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

#[test]
fn request_lines_are_tracings() {
    for format in FORMATS {
        for (i, s) in NASTY.iter().enumerate() {
            let path = *s;
            let call_id = NASTY[(i + 1) % NASTY.len()];
            let elapsed = Duration::from_nanos(1_234_567 * i as u64);
            let status = 200 + i as u16;
            assert_same(
                format,
                request(format, "GET", path, status, elapsed, call_id),
                || {
                    tracing::info!(
                        method = %"GET",
                        path,
                        status,
                        duration = elapsed.as_secs_f64(),
                        call_id,
                        "request"
                    )
                },
            );
        }
    }
}

#[test]
fn request_durations_are_tracings() {
    let elapsed = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(12),
        Duration::from_micros(99),
        Duration::from_micros(100),
        Duration::from_secs(1),
        Duration::from_secs(86_400 * 365),
    ];
    for format in FORMATS {
        for elapsed in elapsed {
            assert_same(
                format,
                request(format, "DELETE", "/", 503, elapsed, "id"),
                || {
                    tracing::info!(
                        method = %"DELETE",
                        path = "/",
                        status = 503u16,
                        duration = elapsed.as_secs_f64(),
                        call_id = "id",
                        "request"
                    )
                },
            );
        }
    }
}

#[test]
fn function_output_lines_are_tracings() {
    for stream in ["stdout", "stderr"] {
        for text in NASTY {
            assert_same(
                LogFormat::Json,
                function_output(stream, text.as_bytes()),
                || tracing::info!(stream, "{text}"),
            );
        }
    }
}

#[test]
fn function_output_that_is_not_utf8_is_converted_lossily() {
    let bytes: &[u8] = b"caf\xe9 \xff\xfe ok \xe2\x82";
    let lossy = String::from_utf8_lossy(bytes);
    assert_eq!(lossy, "caf\u{fffd} \u{fffd}\u{fffd} ok \u{fffd}");
    let line = ours(function_output("stdout", bytes));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], *lossy);
    assert_same(LogFormat::Json, function_output("stdout", bytes), || {
        tracing::info!(stream = "stdout", "{lossy}")
    });
}

#[test]
fn fatal_lines_are_tracings() {
    for msg in NASTY {
        for variable in [Some("exec_timeout"), None, Some(*msg)] {
            assert_same(LogFormat::Json, fatal(msg, variable), || {
                tracing::error!(variable, "fwatchdog: {msg}")
            });
        }
    }
}

#[test]
fn every_field_kind_and_level_is_tracings() {
    for format in FORMATS {
        for s in NASTY {
            for (i, level) in [Level::INFO, Level::WARN, Level::ERROR]
                .into_iter()
                .enumerate()
            {
                let f = FLOATS[i];
                let line = Line::new(format, level, s)
                    .str("s", s)
                    .display("d", s)
                    .u64("n", u64::MAX)
                    .f64("f", f)
                    .opt_str("none", None)
                    .opt_str("some", Some(s))
                    .secs("secs", Duration::from_millis(1500));
                let secs = 1.5f64;
                let none: Option<&str> = None;
                let some = Some(*s);
                let emit = || match level {
                    Level::INFO => {
                        tracing::info!(s, d = %s, n = u64::MAX, f, none, some, secs, "{s}")
                    }
                    Level::WARN => {
                        tracing::warn!(s, d = %s, n = u64::MAX, f, none, some, secs, "{s}")
                    }
                    _ => tracing::error!(s, d = %s, n = u64::MAX, f, none, some, secs, "{s}"),
                };
                assert_same(format, line, emit);
            }
        }
    }
}

#[test]
fn floats_are_tracings() {
    for format in FORMATS {
        for &f in FLOATS {
            assert_same(
                format,
                Line::new(format, Level::INFO, "m").f64("f", f),
                || tracing::info!(f, "m"),
            );
        }
    }
}

#[test]
fn text_lines_escape_line_breaks_where_tracing_does_not() {
    let line = ours(Line::new(LogFormat::Text, Level::INFO, "a\nb\rc").display("d", "e\nf"));
    assert!(line.ends_with("  INFO a\\nb\\rc d=e\\nf\n"), "{line:?}");
}

/// The number a JSON line gives `key`, read with std's exact parser: serde_json's own (without
/// its `float_roundtrip` feature) may be a bit off in the last place.
fn number(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!(",\"{key}\":"))? + key.len() + 4;
    let len = line[start..].find([',', '}'])?;
    line[start..start + len].parse().ok()
}

/// Anything, with the characters that need escaping somewhere well represented.
fn any_text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        any::<char>(),
        (0u8..0x80).prop_map(char::from),
        (0x80u32..=0xa0).prop_map(|c| char::from_u32(c).unwrap()),
        proptest::sample::select(vec![
            '"', '\\', '\n', '\r', '\u{1b}', '\u{2028}', '\u{fffd}'
        ]),
    ];
    proptest::collection::vec(ch, 0..24).prop_map(String::from_iter)
}

proptest! {
    #[test]
    fn random_fields_round_trip_through_json(
        method in any_text(), path in any_text(), call_id in any_text(), msg in any_text(),
        variable in proptest::option::of(any_text()), bytes in any::<Vec<u8>>(),
        status in any::<u16>(), nanos in any::<u64>(), f in any::<f64>(), n in any::<u64>(),
    ) {
        let elapsed = Duration::from_nanos(nanos);
        let texts = std::cell::RefCell::new(Vec::new());
        let parse = |line: Line| {
            let text = ours(line);
            texts.borrow_mut().push(text.clone());
            prop_assert_eq!(text.matches('\n').count(), 1);
            prop_assert!(text.ends_with('\n'));
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text:?}")))?;
            prop_assert!(v["timestamp"].is_string());
            Ok(v)
        };
        let v = parse(request(LogFormat::Json, &method, &path, status, elapsed, &call_id))?;
        prop_assert_eq!(&v["level"], "INFO");
        prop_assert_eq!(&v["message"], "request");
        prop_assert_eq!(&v["method"], method.as_str());
        prop_assert_eq!(&v["path"], path.as_str());
        prop_assert_eq!(&v["status"], status);
        prop_assert_eq!(number(&texts.borrow()[0], "duration"), Some(elapsed.as_secs_f64()));
        prop_assert_eq!(&v["call_id"], call_id.as_str());

        let v = parse(function_output(&path, &bytes))?;
        prop_assert_eq!(&v["message"], &*String::from_utf8_lossy(&bytes));
        prop_assert_eq!(&v["stream"], path.as_str());

        let v = parse(fatal(&msg, variable.as_deref()))?;
        prop_assert_eq!(&v["level"], "ERROR");
        let expected = format!("fwatchdog: {msg}");
        prop_assert_eq!(&v["message"], expected.as_str());
        prop_assert_eq!(v.get("variable").and_then(|v| v.as_str()), variable.as_deref());

        let v = parse(Line::new(LogFormat::Json, Level::WARN, &msg).f64("f", f).u64("n", n))?;
        prop_assert_eq!(&v["level"], "WARN");
        prop_assert!(v["f"].is_number() || (v["f"].is_null() && !f.is_finite()));
        prop_assert_eq!(number(&texts.borrow()[3], "f"), f.is_finite().then_some(f));
        prop_assert_eq!(&v["n"], n);
    }

    #[test]
    fn random_fields_match_tracing_and_text_stays_one_line(
        method in any_text(), path in any_text(), call_id in any_text(),
        status in any::<u16>(), nanos in any::<u64>(),
    ) {
        let elapsed = Duration::from_nanos(nanos);
        for format in FORMATS {
            let text = ours(request(format, &method, &path, status, elapsed, &call_id));
            prop_assert_eq!(text.matches('\n').count(), 1);
            assert_same(format, request(format, &method, &path, status, elapsed, &call_id), || {
                tracing::info!(
                    method = %method, path, status, duration = elapsed.as_secs_f64(), call_id,
                    "request"
                )
            });
        }
    }
}

proptest! {
    /// The cached-second timestamp against humantime's own formatting, for any instant from
    /// 1970 to 9999, several within one second (which hit the cache) and across seconds.
    #[test]
    fn timestamps_are_humantimes(secs in 0u64..253_402_300_800, micros in proptest::collection::vec(0u32..1_000_000, 1..4)) {
        for m in micros {
            let at = SystemTime::UNIX_EPOCH + Duration::new(secs, m * 1000 + 999);
            let mut out = Vec::new();
            timestamp(&mut out, at);
            prop_assert_eq!(String::from_utf8(out).unwrap(), humantime::format_rfc3339_micros(at).to_string());
        }
    }
}

#[test]
fn clocks_outside_1970_to_9999_are_written_as_the_nearest_end() {
    let stamp = |at: SystemTime| {
        let mut out = Vec::new();
        timestamp(&mut out, at);
        String::from_utf8(out).unwrap()
    };
    let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert_eq!(stamp(before), "1970-01-01T00:00:00.000000Z");
    let after = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
    assert_eq!(stamp(after), "9999-12-31T23:59:59.999999Z");
}
