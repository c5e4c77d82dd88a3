//! The `cloudevents`, `ce_source` and `ce_reply_type` settings. Their defaults are not
//! values the table can hold: the source names the Knative service (or the host), and the
//! reply type depends on each request, so they are resolved here and in `events`.

use super::parse::Reader;
use super::{table as t, ConfigError, Lookup, Mode};

/// What `cloudevents=true` needs (`None` in [`super::Config`] when it is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvents {
    /// `ce-source` of reply events: `ce_source`, else `/<K_SERVICE>`, else `/<hostname>`.
    pub source: String,
    /// `ce-type` of reply events; `None`: the incoming type with `.reply` appended.
    pub reply_type: Option<String>,
}

/// Reads the three settings. Both texts are checked whether or not `cloudevents` is on, so
/// a bad one is found at the first start, not when it is switched on. Static mode runs no
/// function, so there it is always off.
pub(super) fn read(r: &Reader<'_>, mode: Mode) -> Result<Option<CloudEvents>, ConfigError> {
    let text = |s: &t::Setting| -> Result<Option<String>, ConfigError> {
        match r.raw(s).filter(|(_, v)| !v.trim().is_empty()) {
            None => Ok(None),
            Some((var, v)) if v.chars().any(char::is_control) => Err(ConfigError::new(
                var,
                format!("{v:?} must not hold control characters"),
            )),
            Some((_, v)) => Ok(Some(v.trim().to_string())),
        }
    };
    let source = text(&t::CE_SOURCE)?;
    let reply_type = text(&t::CE_REPLY_TYPE)?;
    if !r.bool(&t::CLOUDEVENTS)? || mode == Mode::Static {
        return Ok(None);
    }
    Ok(Some(CloudEvents {
        source: source.unwrap_or_else(|| default_source(r.lookup)),
        reply_type,
    }))
}

/// `/` and the Knative service's name (Knative sets `K_SERVICE`), or the host name, which
/// is the pod's or the container's name elsewhere.
fn default_source(lookup: &dyn Lookup) -> String {
    let name = lookup
        .get("K_SERVICE")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && !v.chars().any(char::is_control))
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty() && !h.chars().any(char::is_control))
        })
        .unwrap_or_else(|| "fwatchdog".to_string());
    format!("/{name}")
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::collections::HashMap;

    fn events(pairs: &[(&str, &str)]) -> Option<super::CloudEvents> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.entry("fprocess".into()).or_insert_with(|| "cat".into());
        Config::from_lookup(&map, None).unwrap().cloudevents
    }

    #[test]
    fn off_by_default_and_in_static_mode() {
        assert_eq!(events(&[]), None);
        assert_eq!(events(&[("cloudevents", "true"), ("mode", "static")]), None);
    }

    #[test]
    fn the_source_is_the_setting_then_k_service_then_the_host() {
        let on = ("cloudevents", "true");
        let e = events(&[on, ("ce_source", " /orders "), ("K_SERVICE", "svc")]).unwrap();
        assert_eq!(e.source, "/orders");
        assert_eq!(e.reply_type, None);
        let e = events(&[on, ("K_SERVICE", "svc"), ("ce_reply_type", "t.done")]).unwrap();
        assert_eq!(
            (e.source.as_str(), e.reply_type.as_deref()),
            ("/svc", Some("t.done"))
        );
        let e = events(&[on]).unwrap();
        assert!(
            e.source.len() > 1 && e.source.starts_with('/'),
            "{}",
            e.source
        );
    }
}
