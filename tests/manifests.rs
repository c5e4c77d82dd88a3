//! What `fwfn manifest` writes, checked without Docker: every example's and template's
//! Knative Service against the Service CRD, and `--trigger` Triggers against the Trigger CRD
//! and the rules of Knative's webhook (`tests/containers/run.py --manifests`, the same checks
//! the container suite runs). They need python3-yaml, which tests/containers/setup.sh
//! installs: without it this says SKIPPED, or fails under FWATCHDOG_REQUIRE_DOCKER=1 (CI).

use std::process::Command;

const RUN_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/containers/run.py");

fn yaml_available() -> bool {
    ["python3", "/usr/bin/python3"].iter().any(|py| {
        Command::new(py)
            .args(["-c", "import yaml"])
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn fwfn_manifests_are_valid_knative_services_and_triggers() {
    if !yaml_available() {
        if std::env::var("FWATCHDOG_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("python3-yaml is missing (sh tests/containers/setup.sh installs it)");
        }
        eprintln!("SKIPPED: the manifest checks need python3-yaml (sh tests/containers/setup.sh)");
        return;
    }
    let out = Command::new("python3")
        .args([RUN_PY, "--manifests"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tests/containers/run.py --manifests");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "manifest checks failed:\n{text}");
}
