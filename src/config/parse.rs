//! Parsers for setting values, and the reader that applies them to the table's settings.
//! Every input is bounded before it is converted, so no value can reach a panic.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Lookup, Setting, Upstream};

/// Reads settings from a [`Lookup`]; a setting not given takes its table default.
pub(super) struct Reader<'a> {
    pub(super) lookup: &'a dyn Lookup,
}

impl Reader<'_> {
    /// The value of `s` or the first of its aliases that is set, with the name it came from.
    pub(super) fn raw(&self, s: &Setting) -> Option<(&'static str, String)> {
        s.names().find_map(|n| self.lookup.get(n).map(|v| (n, v)))
    }

    /// The value given for `s`, or its default, with the name to blame; `None` when
    /// neither says anything. An empty value is not given for strings; for typed values it
    /// goes to the parser (an empty boolean is false, as it always was).
    fn given_or_default(
        &self,
        s: &Setting,
        empty_is_unset: bool,
    ) -> Option<(&'static str, String)> {
        match self
            .raw(s)
            .filter(|(_, v)| !(empty_is_unset && v.trim().is_empty()))
        {
            Some(given) => Some(given),
            None if s.default == "-" => None,
            None => Some((s.name, s.default.to_string())),
        }
    }

    /// A free-form string (trimmed of nothing: paths and content types are taken as given).
    pub(super) fn string(&self, s: &Setting) -> Option<String> {
        self.given_or_default(s, true).map(|(_, v)| v)
    }

    /// A value through `parse`, which returns the reason when it fails.
    pub(super) fn parsed<T>(
        &self,
        s: &Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.given_or_default(s, false) {
            None => Ok(None),
            Some((var, v)) => parse(v.trim())
                .map(Some)
                .map_err(|r| ConfigError::new(var, r)),
        }
    }

    /// Like [`Reader::parsed`] for a setting whose table default always parses.
    pub(super) fn required<T>(
        &self,
        s: &Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.parsed(s, parse)?
            .ok_or_else(|| ConfigError::new(s.name, "has no value"))
    }

    pub(super) fn bool(&self, s: &Setting) -> Result<bool, ConfigError> {
        self.required(s, |v| {
            parse_bool(v).ok_or_else(|| format!("{v:?} is not a boolean (use true or false)"))
        })
    }

    pub(super) fn duration(&self, s: &Setting) -> Result<Duration, ConfigError> {
        self.required(s, parse_duration)
    }

    pub(super) fn number<T: std::str::FromStr>(&self, s: &Setting) -> Result<T, ConfigError> {
        self.required(s, |v| {
            v.parse()
                .map_err(|_| format!("{v:?} is not a valid number"))
        })
    }

    /// A number within `range`, or `auto` (then `auto()`).
    pub(super) fn number_or_auto<T>(
        &self,
        s: &Setting,
        auto: impl FnOnce() -> T,
        valid: impl FnOnce(&T) -> bool,
        what: &str,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
    {
        self.required(s, |v| {
            if v.eq_ignore_ascii_case("auto") {
                return Ok(auto());
            }
            match v.parse::<T>() {
                Ok(n) if valid(&n) => Ok(n),
                _ => Err(format!("{v:?} is not {what} or auto")),
            }
        })
    }
}

/// `true`/`1`/`yes`/`on` and `false`/`0`/`no`/`off`, any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Longest duration any setting or `X-Timeout` may give: long enough for any function,
/// short enough that every deadline computed from it fits an `Instant` (a bigger value used
/// to pass start-up and abort the process on the first request).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A bare number of seconds (`10`, `1.5`) or a humantime duration (`1m30s`, `250ms`), at
/// most [`MAX_DURATION`]. Input is bounded before any conversion, so no value panics.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if v.len() > 64 {
        return Err("is too long to be a duration".into());
    }
    let d = if let Some(d) = exact_seconds(v) {
        d
    } else if let Ok(secs) = v.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return Err(format!("{v:?} must be a number of seconds, not negative"));
        }
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(v));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| too_long(v))?
    } else {
        humantime::parse_duration(v).map_err(|e| format!("{v:?} is not a duration ({e})"))?
    };
    if d > MAX_DURATION {
        return Err(too_long(v));
    }
    Ok(d)
}

/// `123` or `123.456`: seconds read exactly (to the nanosecond), where going through an
/// `f64` would round `17481325.343` to `17481325.342999998`.
fn exact_seconds(v: &str) -> Option<Duration> {
    let (whole, frac) = match v.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (v, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let mut nanos = 0u32;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(Duration::new(secs, nanos))
}

fn too_long(v: &str) -> String {
    format!("{v:?} is longer than the 365 days allowed")
}

pub(super) fn parse_upstream(v: &str) -> Result<Upstream, String> {
    if let Some(path) = v.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(Upstream::Unix(PathBuf::from(path)));
    }
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("h2c://"))
        .ok_or_else(|| format!("{v:?} must start with http://, h2c:// or unix:"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.parse::<http::uri::Authority>().is_err() {
        return Err(format!("{v:?} has no valid host:port"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Upstream::Tcp {
        authority,
        prefix: prefix.to_string(),
    })
}

/// A secret name is a single path component.
pub(super) fn valid_secret_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

pub(super) fn parse_port(v: &str, allow_zero: bool) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(0) if !allow_zero => Err("0 is not a valid port".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{v:?} is not a port number")),
    }
}
