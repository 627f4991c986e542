#!/usr/bin/env bash
# Runs every test: Rust unit, golden and integration tests, then the real-client suite
# (@supabase/realtime-js from npm, pinned by tests/js/package-lock.json) against the real binary, then the
# image as a three-container cluster (scripts/image-test.sh: needs root, docker.io and debootstrap;
# REALTIME_SKIP_IMAGE_TEST=1 leaves it out, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."

# One throwaway PostgreSQL (wal_level=logical) for every test that needs one; each test makes its own
# database. Set REALTIME_TEST_DATABASE_URL to use an existing server instead.
if [ -z "${REALTIME_TEST_DATABASE_URL:-}" ]; then
  pgdir=$(mktemp -d /tmp/realtime-pg.XXXXXX)
  chmod 755 "$pgdir"
  trap 'scripts/pg.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
  REALTIME_TEST_DATABASE_URL=$(scripts/pg.sh start "$pgdir")
  export REALTIME_TEST_DATABASE_URL
  echo "== PostgreSQL for tests: $REALTIME_TEST_DATABASE_URL"
fi

echo "== cargo build (workspace)"
cargo build --workspace --all-targets

echo "== cargo test (workspace)"
cargo test --workspace

echo "== real-client suite (realtime-js, node --test)"
(
  cd tests/js
  if [ ! -d node_modules/@supabase/realtime-js ] || [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund
  fi
  REALTIME_BIN="${CARGO_TARGET_DIR:-$(pwd)/../../target}/debug/realtime" npm test
)

if [ "${REALTIME_SKIP_IMAGE_TEST:-0}" = 1 ]; then
  echo "== image test: SKIPPED (REALTIME_SKIP_IMAGE_TEST=1)"
else
  echo "== image test (scripts/image-test.sh: dist build, base and image, three containers, leader stopped)"
  ./scripts/image-test.sh
fi
