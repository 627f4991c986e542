#!/usr/bin/env bash
# Runs every test: Rust unit, golden and integration tests, then the real-client suite
# (@supabase/realtime-js from npm, pinned by tests/js/package-lock.json) against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build (workspace)"
cargo build --workspace --all-targets

echo "== cargo test (workspace)"
cargo test --workspace

echo "== real-client suite (realtime-js, node --test)"
(
  cd tests/js
  if [ ! -d node_modules/@supabase/realtime-js ]; then
    npm ci --no-audit --no-fund
  fi
  REALTIME_BIN="$(pwd)/../../target/debug/realtime" npm test
)
