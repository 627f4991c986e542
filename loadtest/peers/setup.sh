#!/usr/bin/env bash
# Installs the reference peers `realtime-loadtest compare` runs beside this server: the FastAPI peer's
# venv (loadtest/peers/fastapi/.venv, pinned requirements.txt), the Socket.IO peer's node_modules
# (npm ci from the committed package-lock.json), and builds the two Rust peers, socketioxide (Socket.IO
# in Rust) and tokio-fanout (the minimal fan-out), each its own cargo project with a committed
# Cargo.lock (cargo build --release --locked; binaries in each project's target/release/, where compare
# looks). Idempotent: a venv whose requirements are already installed, a node_modules matching the lock
# and an up-to-date cargo build are left as they are.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

venv="$here/fastapi/.venv"
req="$here/fastapi/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
echo "fastapi peer: $("$venv/bin/python" -c 'import fastapi, uvicorn; print("fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__)')"

sio="$here/socketio"
lockstamp="$sio/node_modules/.package-lock.sha256"
want="$(sha256sum "$sio/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$lockstamp" 2>/dev/null || true)" != "$want" ]]; then
  (cd "$sio" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$lockstamp"
fi
echo "socketio peer: socket.io $(node -p "require('$sio/node_modules/socket.io/package.json').version"), node $(node --version)"

for peer in socketioxide tokio-fanout; do
  cargo build --release --locked --quiet --manifest-path "$here/$peer/Cargo.toml"
done
echo "socketioxide peer: socketioxide $(grep -A1 '^name = "socketioxide"$' "$here/socketioxide/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p'), $(rustc --version)"
echo "tokio-fanout peer: tokio $(grep -A1 '^name = "tokio"$' "$here/tokio-fanout/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p'), its own handshake and framing"
