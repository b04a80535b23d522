#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), builds the workspace
# once, checks formatting and lints, and runs every test with nextest against real
# nats-server, SQLite, PostgreSQL and the real Claude Code CLI.
# PostgreSQL: PADDOCK_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo fmt --all -- --check
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --profile "$profile" "$@"
