//! The watchdog's log lines that do not go through tracing, and the stderr buffer all log
//! lines go to.
//!
//! Three lines are written by hand: the access-log line (through tracing's field visitors
//! it cost about 7 % of the proxy's throughput), the function's forwarded output in JSON
//! format, and the fatal error `main` prints when there is no subscriber yet (or any
//! more). Each must look exactly like what the subscriber installed by
//! [`crate::log::init`] prints for the same event, so one log query covers all lines;
//! [`Line`] renders them that way, and the tests hold it to tracing-subscriber's output
//! byte for byte.

pub mod buffer;

use std::fmt::{Display, Write};
use std::time::{Duration, SystemTime};

pub use tracing::Level;

use crate::config::LogFormat;

/// One log line, rendered as tracing-subscriber's fmt layer renders an event with the
/// settings of [`crate::log::init`] (no ANSI, no target; JSON with `flatten_event`).
/// Fields appear in the order they are added, as an event's fields do in the order they
/// are named in the macro, the message first.
///
/// The one difference: in text format a line break in the message or a [`Line::display`]
/// value is written as `\n` or `\r`, where tracing writes it as is, so that one line is
/// always one event.
#[must_use = "a line is only logged by `write`"]
pub struct Line {
    format: LogFormat,
    out: Vec<u8>,
}

impl Line {
    /// Starts a line stamped now, like `tracing::event!(level, "{}", message)`.
    pub fn new(format: LogFormat, level: Level, message: &str) -> Line {
        // An access-log line is some 150 bytes: one allocation, no growing.
        let mut out = Vec::with_capacity(message.len() + 160);
        let now = SystemTime::now();
        match format {
            LogFormat::Text => {
                timestamp(&mut out, now);
                out.push(b' ');
                // tracing pads the level to five characters.
                let level: &[u8] = match level {
                    Level::ERROR => b"ERROR ",
                    Level::WARN => b" WARN ",
                    Level::INFO => b" INFO ",
                    Level::DEBUG => b"DEBUG ",
                    _ => b"TRACE ",
                };
                out.extend_from_slice(level);
                text_message(&mut out, message);
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                timestamp(&mut out, now);
                out.extend_from_slice(b"\",\"level\":\"");
                out.extend_from_slice(level.as_str().as_bytes());
                out.extend_from_slice(b"\",\"message\":");
                json_str(&mut out, message);
            }
        }
        Line { format, out }
    }

    /// A string field, like `key = value` in a tracing macro: Debug-quoted in text.
    pub fn str(mut self, key: &'static str, value: &str) -> Line {
        self.key(key);
        match self.format {
            LogFormat::Text => debug_str(&mut self.out, value),
            LogFormat::Json => json_str(&mut self.out, value),
        }
        self
    }

    /// A string field that is left out when `None`, as tracing leaves out a `None` value.
    pub fn opt_str(self, key: &'static str, value: Option<&str>) -> Line {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// A field written with Display, like `key = %value` in a tracing macro: unquoted in
    /// text, a string in JSON. For values that never need quoting (an HTTP method).
    pub fn display(mut self, key: &'static str, value: impl Display) -> Line {
        self.key(key);
        match self.format {
            LogFormat::Text => {
                let _ = write!(NoLineBreaks(&mut self.out), "{value}");
            }
            LogFormat::Json => {
                let mut ser = serde_json::Serializer::new(&mut self.out);
                let _ = serde::Serializer::collect_str(&mut ser, &value);
            }
        }
        self
    }

    /// An integer field.
    pub fn u64(mut self, key: &'static str, value: u64) -> Line {
        self.key(key);
        // Debug and JSON agree on integers. Through fmt, whose digits come from std (built
        // for speed): the watchdog's own code is built for size, and divides by 10 with `div`.
        let _ = write!(Bytes(&mut self.out), "{value}");
        self
    }

    /// A float field: Debug in text, serde_json's shortest form in JSON (`null` when not
    /// finite), as tracing's visitors write an `f64`.
    pub fn f64(mut self, key: &'static str, value: f64) -> Line {
        self.key(key);
        match self.format {
            LogFormat::Text => {
                let _ = write!(Bytes(&mut self.out), "{value:?}");
            }
            LogFormat::Json => {
                let _ = serde_json::to_writer(&mut self.out, &value);
            }
        }
        self
    }

    /// A duration as seconds, like `key = d.as_secs_f64()`.
    pub fn secs(self, key: &'static str, value: Duration) -> Line {
        self.f64(key, value.as_secs_f64())
    }

    /// The finished line, newline included.
    pub fn finish(mut self) -> Vec<u8> {
        if self.format == LogFormat::Json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
        self.out
    }

    /// Logs the line (through [`buffer::write`], in one piece, so lines never interleave).
    pub fn write(self) {
        buffer::write(&self.finish());
    }

    fn key(&mut self, key: &'static str) {
        // Keys are the watchdog's own names; tracing writes them without escaping too.
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        match self.format {
            LogFormat::Text => {
                self.out.push(b' ');
                self.out.extend_from_slice(key.as_bytes());
                self.out.push(b'=');
            }
            LogFormat::Json => {
                self.out.extend_from_slice(b",\"");
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"\":");
            }
        }
    }
}

/// `now` as tracing-subscriber stamps a line (humantime's RFC 3339 with microseconds,
/// "2026-01-02T03:04:05.123470Z"). The part up to the second is formatted once per second
/// and kept: calendar arithmetic on every line was a tenth of the access log's cost. A clock
/// outside the years 1970 to 9999 is written as the nearest end of that range (humantime
/// panics before 1970 and fails after 9999).
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    /// The last second formatted on this thread, and its "YYYY-MM-DDTHH:MM:SS".
    type Cached = Option<(u64, [u8; 19])>;
    thread_local! {
        static LAST: std::cell::Cell<Cached> = const { std::cell::Cell::new(None) };
    }
    /// 10000-01-01T00:00:00Z.
    const END: Duration = Duration::from_secs(253_402_300_800);
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(END - Duration::from_micros(1));
    let secs = since.as_secs();
    let prefix = match LAST.with(|l| l.get()) {
        Some((s, p)) if s == secs => p,
        _ => {
            let mut whole = Vec::with_capacity(32);
            let second = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let _ = write!(
                Bytes(&mut whole),
                "{}",
                humantime::format_rfc3339_seconds(second)
            );
            // "YYYY-MM-DDTHH:MM:SSZ" for every second in range.
            let mut p = *b"1970-01-01T00:00:00";
            if let Some(got) = whole.get(..19) {
                p.copy_from_slice(got);
            }
            LAST.with(|l| l.set(Some((secs, p))));
            p
        }
    };
    out.extend_from_slice(&prefix);
    let mut frac = *b".000000Z";
    put_decimal(&mut frac[1..7], since.subsec_micros().into());
    out.extend_from_slice(&frac);
}

/// `v`'s low decimal digits into `out`, zero-padded to its length, most significant first:
/// for the fixed-width numbers of timestamps and durations, where `fmt` costs more than the
/// rest of the work.
pub(crate) fn put_decimal(out: &mut [u8], mut v: u64) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The access-log line for one request.
pub fn request(
    format: LogFormat,
    method: &str,
    path: &str,
    status: u16,
    elapsed: Duration,
    call_id: &str,
) -> Line {
    Line::new(format, Level::INFO, "request")
        .display("method", method)
        .str("path", path)
        .u64("status", status.into())
        .secs("duration", elapsed)
        .str("call_id", call_id)
}

/// A line of the function's output in JSON format; bytes that are not UTF-8 become U+FFFD.
pub fn function_output(stream: &str, line: &[u8]) -> Line {
    Line::new(LogFormat::Json, Level::INFO, &String::from_utf8_lossy(line)).str("stream", stream)
}

/// The error a failed start or run ends with in JSON format, naming the setting at fault if
/// there is one.
pub fn fatal(msg: &str, variable: Option<&str>) -> Line {
    Line::new(LogFormat::Json, Level::ERROR, &format!("fwatchdog: {msg}"))
        .opt_str("variable", variable)
}

/// The bytes Debug writes as they are: printable ASCII bar `"` and `\`. A table, as the
/// check runs for every byte of every path and call id.
static DEBUG_AS_IS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        table[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    table
};

/// `s` as Debug writes it, as tracing's text format writes a string field. Debug's
/// escaping is the slow part of the access-log line, and the usual path and call id need
/// none.
fn debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| DEBUG_AS_IS[usize::from(b)]) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(Bytes(out), "{s:?}");
    }
}

/// `s` as serde_json writes a string (which is what tracing's JSON visitors use).
fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}

/// The message as tracing-subscriber 0.3.23 writes it in text format: as is, except that
/// characters that drive a terminal (ESC, BEL, BS, FF, DEL, the C1 controls) are escaped;
/// line breaks are escaped too (see [`Line`]).
fn text_message(out: &mut Vec<u8>, msg: &str) {
    // 0xc2 leads the UTF-8 of U+0080..U+00BF, the C1 controls among them.
    let plain = |b: u8| b >= 0x20 && b != 0x7f && b != 0xc2;
    if msg.bytes().all(plain) {
        out.extend_from_slice(msg.as_bytes());
        return;
    }
    for ch in msg.chars() {
        match ch {
            '\x1b' => out.extend_from_slice(b"\\x1b"),
            '\x07' => out.extend_from_slice(b"\\x07"),
            '\x08' => out.extend_from_slice(b"\\x08"),
            '\x0c' => out.extend_from_slice(b"\\x0c"),
            '\x7f' => out.extend_from_slice(b"\\x7f"),
            '\u{80}'..='\u{9f}' => {
                let _ = write!(Bytes(out), "\\u{{{:x}}}", ch as u32);
            }
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// Formats straight into the line (`Vec`'s `io::Write` would add an adapter to every
/// `write!`).
struct Bytes<'a>(&'a mut Vec<u8>);

impl Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Writes through to the line, with line breaks escaped (see [`Line`]).
struct NoLineBreaks<'a>(&'a mut Vec<u8>);

impl Write for NoLineBreaks<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // The usual case (every request's method), without splitting.
        if !s.bytes().any(|b| b == b'\n' || b == b'\r') {
            self.0.extend_from_slice(s.as_bytes());
            return Ok(());
        }
        for piece in s.split_inclusive(['\n', '\r']) {
            match piece.as_bytes().split_last() {
                Some((b'\n', rest)) => {
                    self.0.extend_from_slice(rest);
                    self.0.extend_from_slice(b"\\n");
                }
                Some((b'\r', rest)) => {
                    self.0.extend_from_slice(rest);
                    self.0.extend_from_slice(b"\\r");
                }
                _ => self.0.extend_from_slice(piece.as_bytes()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Installs the tracing subscriber for the watchdog's own log lines (stderr).
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(|| buffer::Writer)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
