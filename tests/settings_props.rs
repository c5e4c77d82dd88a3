//! Property tests for what an operator or a client can type: durations and every setting.
//! Never a panic (a panic aborts the process); a bad value is an error naming its variable;
//! a valid duration round-trips.

use std::collections::HashMap;
use std::time::Duration;

use fwatchdog::config::{parse_duration, Config, MAX_DURATION, SETTINGS};
use proptest::prelude::*;

/// Strings shaped like durations and numbers, and some that are not.
fn duration_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-+]?[0-9]{0,30}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,4})?",
        "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y|days|hours|months|years)( ?[0-9]{1,25}(s|m|h|d))?",
        Just("inf".to_string()),
        Just("NaN".to_string()),
        Just("1e400".to_string()),
    ]
}

proptest! {
    #[test]
    fn durations_never_panic_and_stay_in_range(v in duration_like()) {
        if let Ok(d) = parse_duration(&v) {
            prop_assert!(d <= MAX_DURATION, "{v:?} gave {d:?}");
        }
    }

    #[test]
    fn valid_durations_round_trip(ms in 0u64..(365 * 24 * 3600 * 1000)) {
        let d = Duration::from_millis(ms);
        let text = humantime::format_duration(d).to_string();
        prop_assert_eq!(parse_duration(&text), Ok(d));
        let secs = format!("{}.{:03}", ms / 1000, ms % 1000);
        prop_assert_eq!(parse_duration(&secs), Ok(d));
    }

    #[test]
    fn any_value_of_any_setting_is_accepted_or_names_the_variable(
        index in 0..SETTINGS.len(),
        value in prop_oneof![duration_like(), "[a-z0-9:/._-]{0,40}"],
    ) {
        let setting = &SETTINGS[index];
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("fprocess".into(), "cat".into());
        if setting.name == "mode" || setting.name == "upstream_url" {
            env.insert("upstream_url".into(), "http://127.0.0.1:5000".into());
        }
        env.insert(setting.name.to_string(), value.clone());
        if let Err(e) = Config::from_lookup(&env, None) {
            let named = std::iter::once(setting.name)
                .chain(setting.aliases.iter().copied())
                .any(|n| n == e.var);
            // A mode needing something else (static without a folder, file without
            // TMPDIR...) may name that setting instead; it is still one line and a name.
            prop_assert!(named || SETTINGS.iter().any(|s| s.name == e.var),
                "{}={value:?} gave an error naming {:?}: {e}", setting.name, e.var);
            prop_assert!(e.to_string().starts_with(&e.var));
            prop_assert!(!e.to_string().contains('\n'));
        }
    }
}
