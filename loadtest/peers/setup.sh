#!/usr/bin/env bash
# Installs the reference peers `realtime-loadtest compare` runs beside this server: the FastAPI peer's
# venv (loadtest/peers/fastapi/.venv, pinned requirements.txt) and the Socket.IO peer's node_modules
# (npm ci from the committed package-lock.json). Idempotent: a venv whose requirements are already
# installed and a node_modules matching the lock are left as they are.
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
