use std::collections::HashMap;
use std::time::Duration;

use super::parse::parse_upstream;
use super::*;

fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(&map, None)
}

fn fork(c: &Config) -> &ForkConfig {
    match &c.function {
        ModeConfig::Fork(f) => f,
        other => panic!("not a fork mode: {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = cfg(&[("fprocess", "cat")]).unwrap();
    assert_eq!(c.mode, Mode::Streaming);
    assert_eq!(c.port, 8080);
    assert_eq!(c.exec_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.healthcheck_interval, Duration::from_secs(30));
    assert_eq!(c.metrics_port, Some(8081));
    assert!(fork(&c).cgi_headers && !fork(&c).cgi_response && c.prefix_logs);
    assert_eq!(fork(&c).content_type, "application/octet-stream");
    assert!(c.ignored.is_empty());
}

#[test]
fn shell_words_and_alias() {
    let c = cfg(&[("fprocess", "sh -c 'echo \"a b\"' x\\ y")]).unwrap();
    let argv = &fork(&c).fprocess;
    assert_eq!(argv.program(), "sh");
    assert_eq!(argv.args(), ["-c", "echo \"a b\"", "x y"]);
    let c = cfg(&[("fprocess", "cat"), ("function_process", "wc -c")]).unwrap();
    assert_eq!(fork(&c).fprocess.to_shell(), "wc -c");
    let map: HashMap<String, String> = [("fprocess".to_string(), "cat".to_string())].into();
    let c = Config::from_lookup(&map, Some(vec!["tr".into(), "a".into(), "b".into()])).unwrap();
    assert_eq!(fork(&c).fprocess.to_shell(), "tr a b");
}

#[test]
fn port_precedence() {
    let c = cfg(&[("fprocess", "cat"), ("port", "9000"), ("PORT", "9001")]).unwrap();
    assert_eq!(c.port, 9001);
    let c = cfg(&[("fprocess", "cat"), ("port", "9000")]).unwrap();
    assert_eq!(c.port, 9000);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert!(parse_duration("soon").is_err());
    let c = cfg(&[("fprocess", "cat"), ("exec_timeout", "0")]).unwrap();
    assert_eq!(c.exec_timeout, None);
    let c = cfg(&[("fprocess", "cat"), ("write_timeout", "7s")]).unwrap();
    assert_eq!(c.healthcheck_interval, Duration::from_secs(7));
}

#[test]
fn busy_poll_is_auto_unless_given_a_duration() {
    let bp = |v: Option<&str>| {
        let mut pairs = vec![("fprocess", "cat")];
        pairs.extend(v.map(|v| ("busy_poll", v)));
        cfg(&pairs).unwrap().busy_poll
    };
    assert_eq!(bp(None), BusyPoll::Auto);
    assert_eq!(bp(Some(" AUTO ")), BusyPoll::Auto);
    assert_eq!(bp(Some("0")), BusyPoll::Budget(Duration::ZERO));
    assert_eq!(
        bp(Some("50us")),
        BusyPoll::Budget(Duration::from_micros(50))
    );
}

#[test]
fn errors_name_the_variable() {
    for (pairs, var) in [
        (vec![("fprocess", "cat"), ("mode", "afterburn")], "mode"),
        (
            vec![("fprocess", "cat"), ("exec_timeout", "soon")],
            "exec_timeout",
        ),
        (vec![("fprocess", "cat"), ("port", "abc")], "port"),
        (
            vec![("fprocess", "cat"), ("cgi_headers", "maybe")],
            "cgi_headers",
        ),
        (vec![("mode", "http"), ("fprocess", "x")], "upstream_url"),
        (
            vec![
                ("mode", "http"),
                ("fprocess", "x"),
                ("upstream_url", "ftp://x"),
            ],
            "upstream_url",
        ),
        (vec![("fprocess", "'unterminated")], "fprocess"),
        (vec![], "fprocess"),
        (
            vec![("fprocess", "cat"), ("api_key_secret", "../x")],
            "api_key_secret",
        ),
    ] {
        let err = cfg(&pairs).unwrap_err();
        assert_eq!(err.var, var, "{pairs:?} -> {err}");
        assert!(err.to_string().starts_with(var));
    }
}

#[test]
fn upstreams() {
    assert_eq!(
        parse_upstream("http://127.0.0.1:5000").unwrap(),
        Upstream::Tcp {
            authority: "127.0.0.1:5000".into(),
            prefix: "".into()
        }
    );
    assert_eq!(
        parse_upstream("http://localhost/api/").unwrap(),
        Upstream::Tcp {
            authority: "localhost:80".into(),
            prefix: "/api".into()
        }
    );
    assert_eq!(
        parse_upstream("unix:/tmp/s.sock").unwrap(),
        Upstream::Unix("/tmp/s.sock".into())
    );
}

/// What each mode needs to start, so a setting can be tried in a mode that reads it.
fn base(mode: Mode) -> Vec<(&'static str, &'static str)> {
    match mode {
        Mode::Http => vec![
            ("mode", "http"),
            ("fprocess", "srv"),
            ("upstream_url", "http://127.0.0.1:5000"),
        ],
        Mode::Static => vec![("mode", "static")],
        m => vec![("mode", m.name()), ("fprocess", "cat")],
    }
}

/// Every setting: (name, a good value, a bad value). `None` where no value is wrong
/// (free-form strings).
const CASES: &[(&str, &str, Option<&str>)] = &[
    ("mode", "serializing", Some("afterburn")),
    ("fprocess", "wc -c", Some("'open")),
    ("PORT", "9000", Some("70000")),
    ("read_timeout", "5s", Some("0")),
    ("read_header_timeout", "2s", Some("soon")),
    ("idle_timeout", "90s", Some("-1")),
    ("max_connections", "100", Some("0")),
    ("LISTEN_FDS", "1", None),
    ("write_timeout", "5s", Some("1e30")),
    ("exec_timeout", "1m", Some("forever")),
    ("healthcheck_interval", "5", Some("x")),
    ("max_inflight", "4", Some("-4")),
    ("max_header_bytes", "8192", Some("100")),
    ("max_body_size", "1024", Some("1k")),
    ("upstream_url", "unix:/run/f.sock", Some("ftp://x")),
    ("ready_path", "/ready", Some("ready")),
    ("buffer_http", "true", Some("perhaps")),
    ("content_type", "text/plain", None),
    ("cgi_headers", "false", Some("maybe")),
    ("cgi_response", "true", Some("2")),
    ("combine_output", "yes", Some("y")),
    ("compat", "classic", Some("modern")),
    ("prefix_logs", "off", Some("of")),
    ("log_buffer_size", "1024", Some("1")),
    ("log_format", "json", Some("xml")),
    ("suppress_lock", "true", Some("t")),
    ("static_path", "/srv", None),
    ("metrics_port", "0", Some("port")),
    ("RAW_BODY", "true", Some("raw")),
    ("secret_mount_path", "/run/secrets", None),
    ("secrets", "a,b", Some("a,../b")),
    ("api_key_secret", "key", Some("..")),
    ("hmac_secret", "hmac", Some("a/b")),
    ("hmac_buffer_limit", "1048576", Some("lots")),
    ("TMPDIR", "/var/tmp", None),
    ("busy_poll", "50us", Some("5ms")),
    ("workers", "3", Some("0")),
    ("worker_max_requests", "100", Some("-1")),
    ("cloudevents", "true", Some("sometimes")),
    ("ce_source", "/orders", Some("/a\nb")),
    ("ce_reply_type", "com.example.done", Some("a\tb")),
];

#[test]
fn every_setting_has_a_default_a_good_value_and_a_bad_value() {
    for s in SETTINGS {
        assert!(
            CASES.iter().any(|(n, ..)| *n == s.name),
            "{} has no case in this test",
            s.name
        );
    }
    for (name, good, bad) in CASES {
        let setting = SETTINGS
            .iter()
            .find(|s| s.name == *name)
            .unwrap_or_else(|| panic!("{name} is not in the table"));
        let mode = [
            Mode::Streaming,
            Mode::Http,
            Mode::File,
            Mode::Static,
            Mode::Serializing,
            Mode::Worker,
        ]
        .into_iter()
        .find(|m| setting.applies_to(*m))
        .unwrap();
        let mut pairs: Vec<(&str, &str)> =
            base(mode).into_iter().filter(|(n, _)| n != name).collect();
        if *name == "mode" {
            pairs.push(("fprocess", "cat"));
        }
        // Not given, it takes its default (or, where the mode cannot do without it, the
        // start fails naming it); a good value starts; a bad one names the setting.
        if ["fprocess", "upstream_url"].contains(name) {
            assert_eq!(cfg(&pairs).unwrap_err().var, *name);
        } else {
            let c = cfg(&pairs).unwrap_or_else(|e| panic!("{name} default: {e}"));
            assert!(!c.ignored.contains(name), "{name}");
        }
        pairs.push((name, good));
        let c = cfg(&pairs).unwrap_or_else(|e| panic!("{name}={good}: {e}"));
        assert!(!c.ignored.contains(name), "{name}");
        if let Some(bad) = bad {
            pairs.pop();
            pairs.push((name, bad));
            let err = cfg(&pairs).expect_err(&format!("{name}={bad} accepted"));
            assert_eq!(err.var, *name, "{name}={bad}: {err}");
        }
    }
}

#[test]
fn a_setting_of_another_mode_is_named_not_silently_taken() {
    let c = cfg(&[
        ("fprocess", "cat"),
        ("ready_path", "/r"),
        ("static_path", "/srv"),
    ])
    .unwrap();
    assert_eq!(c.ignored, vec!["ready_path", "static_path"]);
    let c = cfg(&[("mode", "static"), ("fprocess", "cat")]).unwrap();
    assert_eq!(c.ignored, vec!["fprocess"]);
    // Empty counts as not given.
    let c = cfg(&[("fprocess", "cat"), ("upstream_url", "")]).unwrap();
    assert!(c.ignored.is_empty());
}

#[test]
fn the_docs_table_is_the_settings_table() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let begin = "<!-- settings:begin -->\n";
    let end = "<!-- settings:end -->";
    let start = doc.find(begin).expect("settings:begin marker") + begin.len();
    let stop = doc[start..].find(end).expect("settings:end marker") + start;
    let want = table::markdown_table();
    if doc[start..stop] != want {
        if std::env::var_os("FWATCHDOG_UPDATE_DOCS").is_some() {
            let fixed = format!("{}{want}{}", &doc[..start], &doc[stop..]);
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"),
                fixed,
            )
            .unwrap();
        } else {
            panic!(
                "docs/configuration.md's settings table differs from the code's; \
                 rerun with FWATCHDOG_UPDATE_DOCS=1 to rewrite it. Expected:\n{want}"
            );
        }
    }
}

#[test]
fn help_lists_every_setting_with_its_default() {
    let h = help_text();
    for s in SETTINGS {
        let line = h
            .lines()
            .find(|l| l.trim_start().starts_with(s.name))
            .unwrap_or_else(|| panic!("--help lacks {}", s.name));
        assert!(line.contains(s.default), "{line}");
        for a in s.aliases {
            assert!(line.contains(a), "{line}");
        }
    }
}

#[test]
fn compat_classic_gives_the_classic_defaults_and_settings_still_win() {
    let c = cfg(&[("compat", "classic"), ("fprocess", "cat")]).unwrap();
    assert_eq!(c.mode, Mode::Serializing);
    let f = fork(&c);
    assert!(f.classic && f.combine_output);
    assert_eq!(
        f.content_type, "",
        "no content_type: the request's is echoed"
    );
    let c = cfg(&[
        ("compat", "classic"),
        ("fprocess", "cat"),
        ("mode", "streaming"),
        ("combine_output", "false"),
        ("content_type", "application/json"),
    ])
    .unwrap();
    assert_eq!(c.mode, Mode::Streaming);
    let f = fork(&c);
    assert!(f.classic && !f.combine_output);
    assert_eq!(f.content_type, "application/json");
    assert!(!fork(&cfg(&[("fprocess", "cat")]).unwrap()).classic);
}
