#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests, then the amqplib
# and pika conformance suites against a freshly started Warren, then the
# web UI's browser tests (Debian's chromium, driven by playwright-core).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --bin warren
# The README's run command must pick the broker among the binaries.
cargo run --quiet -- --version
cargo test --all-targets
conformance/run.sh target/debug/warren
ui/tests/run.sh target/debug/warren
