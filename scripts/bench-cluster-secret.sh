#!/usr/bin/env bash
# What the cluster secret costs: three release nodes on 127.0.0.230-232 (cluster port 4100), with or
# without REALTIME_CLUSTER_SECRET, and `realtime-loadtest fanout` spreading receivers and publishers
# over all three, so every broadcast crosses two peer links. Prints fanout's table and the nodes' CPU
# seconds (user + system, from /proc) over the run.
#
#   scripts/bench-cluster-secret.sh secure|insecure [fanout flags...]
#   e.g. scripts/bench-cluster-secret.sh secure --connections 300 --channels 3 --rate 2000 --duration 20
#
# Needs `cargo build --release -p realtime-node -p realtime-loadtest` first. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?secure or insecure}
shift
bin=target/release/realtime
work=$(mktemp -d /tmp/bench-cluster-secret.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

secret_flags=()
if [ "$mode" = secure ]; then
  secret_flags=(--cluster-secret "$(head -c 48 /dev/urandom | base64 -w0)")
fi
seeds=127.0.0.230:4100,127.0.0.231:4100,127.0.0.232:4100
urls=()
for i in 0 1 2; do
  "$bin" --bind 127.0.0.23$i:0 --jwt-secret bench-secret --node-id node-$i \
    --cluster-bind 127.0.0.23$i:4100 --seeds $seeds --data-dir "$work/data-$i" \
    --max-joins-per-second 100000 --max-token-joins-per-second 100000 --max-events-per-second 100000 \
    "${secret_flags[@]}" >"$work/out-$i" 2>"$work/err-$i" &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    grep -q 'realtime listening on' "$work/out-$i" && break
    sleep 0.1
  done
  addr=$(sed -n 's/.*realtime listening on http:\/\///p' "$work/out-$i" | head -1)
  [ -n "$addr" ] || { echo "node-$i did not start:"; cat "$work/err-$i"; exit 1; }
  urls+=("ws://$addr/socket/websocket")
done
# Formed: every node sees two peers alive (bounded wait).
for _ in $(seq 100); do
  formed=1
  for url in "${urls[@]}"; do
    http=${url#ws://}; http=${http%/socket/websocket}
    alive=$(curl -fsS "http://$http/cluster" | grep -o '"state":"alive"' | wc -l || true)
    [ "$alive" -ge 2 ] || formed=0
  done
  [ $formed = 1 ] && break
  sleep 0.1
done
cpu() { # user + system clock ticks of the three nodes
  local total=0
  for pid in "${pids[@]}"; do
    read -r -a stat <"/proc/$pid/stat"
    total=$((total + stat[13] + stat[14]))
  done
  echo $total
}
before=$(cpu)
target/release/realtime-loadtest fanout --target "$(IFS=,; echo "${urls[*]}")" --jwt-secret bench-secret "$@"
after=$(cpu)
hz=$(getconf CLK_TCK)
echo "mode=$mode nodes_cpu_seconds=$(awk "BEGIN { printf \"%.2f\", ($after - $before) / $hz }")"
http=${urls[0]#ws://}; http=${http%/socket/websocket}
curl -fsS "http://$http/cluster" | python3 -c 'import json, sys; v = json.load(sys.stdin); print("secured:", v["secured"], "refused:", v["refused"], "link cuts:", sum(l["cuts"] for l in v["links"]))' || true
