#!/usr/bin/env bash
# Sets up and starts a whole single-machine paddock: installs nats-server, the Claude
# Code CLI and bubblewrap (idempotent), builds the release binaries and runs
# `paddock up` with the data folder .paddock/. Extra arguments go to `paddock up`
# (e.g. --model-double to try it without an Anthropic credential).
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
cargo build --release --bins
exec target/release/paddock up "$@"
