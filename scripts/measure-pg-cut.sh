#!/usr/bin/env bash
# Cuts one node's path to PostgreSQL for CUT seconds and prints when the node noticed and when its
# replication stream was back (docs/benchmarks.md, "A node that loses PostgreSQL").
#   REALTIME_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres scripts/measure-pg-cut.sh CUT [BINARY]
# The node reaches the database through scripts/freeze-proxy.py, which stops forwarding without
# closing anything (as a cut network path) and holds new connections unanswered until the heal. The
# node runs with its defaults (REALTIME_REPLICATION_TIMEOUT_MS 6000); PostgreSQL with its own
# (wal_sender_timeout 60 s). Needs psql and bc; makes and drops a database and slot of its own.
set -euo pipefail
cut=${1:?cut seconds}
bin=${2:-target/debug/realtime}
url=${REALTIME_TEST_DATABASE_URL:?a superuser URL}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
base=${url%/*}
hostport=${base##*@}; port=${hostport##*:}
db=cut_$RANDOM$RANDOM; slot=s_$db
psql() { command psql -q -X -v ON_ERROR_STOP=1 "$@"; }
psql "$url" -c "create database $db" >/dev/null
psql "$base/$db" -c "create table t (n int8 primary key); create publication supabase_realtime for table t;" >/dev/null
pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$here/freeze-proxy.py" "$pport" "$port" & proxy=$!
for _ in $(seq 1 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $pport)).close()" 2>/dev/null && break; sleep 0.1; done
log=$work/node.log
RUST_LOG=info "$bin" --bind 127.0.0.1:0 --jwt-secret "measure-secret-$RANDOM-0123456789abcdef" \
  --database-url "postgres://postgres@127.0.0.1:$pport/$db" --slot "$slot" --data-dir "$work/data" >"$log" 2>&1 & node=$!
cleanup() {
  kill "$node" "$proxy" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$url" -c "select pg_drop_replication_slot('$slot')" >/dev/null 2>&1 || true
  psql "$url" -c "drop database $db with (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
plain() { sed 's/\x1b\[[0-9;]*m//g' "$log" 2>/dev/null; }
until_logged() { for _ in $(seq 1 "$2"); do plain | grep -q "$1" && return 0; sleep 0.1; done; return 1; }
until_logged "replication stream live" 300 || { echo "the node did not stream"; plain | tail; exit 1; }
sleep 2
t0=$(date +%s.%N); kill -USR1 "$proxy"
sleep "$cut"
t1=$(date +%s.%N); kill -USR2 "$proxy"
until_logged "replication stream back" 1200 || { echo "the stream did not come back within 120 s"; plain | tail; exit 1; }
at() { date -d "$(plain | grep -m1 "$1" | awk '{print $1}')" +%s.%N; }
echo "cut ${cut} s: noticed $(echo "$(at 'replication stream lost') - $t0" | bc) s after the cut," \
  "stream back $(echo "$(at 'replication stream back') - $t1" | bc) s after the heal"
plain | grep -E "replication stream (lost|back)|PostgreSQL is" | cut -c1-200
