#!/usr/bin/env bash
# The test command: every Rust test (unit and integration, real binary, real processes on
# loopback), then the container suite (real images; it says SKIPPED loudly when no Docker
# engine answers, and fails instead when FWATCHDOG_REQUIRE_DOCKER=1, as in CI).
set -euo pipefail
cd "$(dirname "$0")"
cargo test --all-targets
python3 tests/containers/run.py
