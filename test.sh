#!/usr/bin/env bash
# The test command: every Rust test (unit and integration, real binary, real processes on
# loopback), the worker-mode templates and the C worker example under the real binary
# (tests/worker_host.sh; a part whose runtime is missing says SKIPPED), then the container
# suite (real images; it says SKIPPED loudly when no Docker engine answers, and fails
# instead when FWATCHDOG_REQUIRE_DOCKER=1, as in CI).
set -euo pipefail
cd "$(dirname "$0")"
cargo test --all-targets
sh tests/worker_host.sh
python3 tests/containers/run.py
