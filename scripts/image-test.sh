#!/usr/bin/env bash
# The image, run as a cluster (issue 20 item 3): builds the `dist` binary, the base image and the image
# (deploy/ci/: no container registry is reachable here, so the base is made with debootstrap and the binary
# is built on the host), starts three containers on one Docker network sharing one DNS alias (as pods
# behind a headless Service, REALTIME_SEEDS naming that alias), and checks: every /cluster shows the two
# others alive and one raft leader, the HEALTHCHECK turns healthy, the process runs as uid 10001, a
# broadcast crosses between two containers through the real @supabase/realtime-js (both ways), then
# `docker stop -t 30` of the leader exits 0, the two survivors elect a new leader and a broadcast still
# crosses between them. Prints the sizes and timings. Every wait is bounded; containers, network and
# volumes are removed on exit, and a dockerd this script started is stopped.
#
# Installs nothing: it needs docker (Debian's docker.io), debootstrap, python3, curl, node and
# tests/js/node_modules (`npm ci` in tests/js); .ci/run installs them. Run as root (dockerd, debootstrap).
# Env: REALTIME_IMAGE (default realtime:ci), REALTIME_BASE_IMAGE (default realtime-base:bookworm),
# CARGO_TARGET_DIR, REALTIME_KEEP=1 (leave the containers running, for a look; remove them with
# `docker rm -f -v realtime-0 realtime-1 realtime-2 && docker network rm realtime-image-test`).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${REALTIME_IMAGE:-realtime:ci}"
BASE_IMAGE="${REALTIME_BASE_IMAGE:-realtime-base:bookworm}"
NETWORK=realtime-image-test
ALIAS=realtime-headless
NODES=(realtime-0 realtime-1 realtime-2)
LABEL=realtime-image-test
TARGET="${CARGO_TARGET_DIR:-target}"
DOCKERD_WAIT=30
FORM_WAIT=60
HEALTHY_WAIT=40
HANDOVER_WAIT=45
STOP_GRACE=30
SIZE_LIMIT=$((60 * 1000 * 1000))

fail() {
  echo "image-test: FAILED: $*" >&2
  exit 1
}
step() { echo "== image-test: $*"; }
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

for tool in docker debootstrap python3 curl node; do
  command -v "$tool" >/dev/null || fail "$tool is missing (.ci/run installs docker.io, debootstrap, python3, nodejs)"
done
[[ -d tests/js/node_modules/@supabase/realtime-js ]] || fail "tests/js/node_modules lacks realtime-js: run npm ci in tests/js"

work="$(mktemp -d /tmp/realtime-image-test.XXXXXX)"
dockerd_pid=""
# What a dockerd started here changes on the host and leaves when it stops: its nftables tables (whose
# NAT hooks put every later packet, loopback included, through conntrack: about 7 % of a loopback
# benchmark's CPU), IP forwarding and the docker0 bridge. Recorded before it starts, put back after.
host_tables="" host_forward="" host_bridge=0
restore_host() {
  if command -v nft >/dev/null; then
    nft list tables 2>/dev/null | while read -r _ family name; do
      grep -qxF "table $family $name" <<<"$host_tables" || nft delete table "$family" "$name" 2>/dev/null || true
    done
  fi
  [[ -n "$host_forward" ]] && sysctl -qw "net.ipv4.ip_forward=$host_forward" 2>/dev/null || true
  [[ $host_bridge == 1 ]] || ip link delete docker0 2>/dev/null || true
}
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]] && docker info >/dev/null 2>&1; then
    for node in "${NODES[@]}"; do
      if docker inspect "$node" >/dev/null 2>&1; then
        echo "---- docker logs --tail 40 $node" >&2
        docker logs --tail 40 "$node" >&2 2>&1 || true
      fi
    done
  fi
  if [[ "${REALTIME_KEEP:-0}" != 1 ]] && docker info >/dev/null 2>&1; then
    docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
    docker network rm "$NETWORK" >/dev/null 2>&1 || true
  fi
  if [[ -n "$dockerd_pid" && "${REALTIME_KEEP:-0}" != 1 ]]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    restore_host
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

# ---- a Docker daemon -------------------------------------------------------------------------------
if ! timeout 10 docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || fail "no Docker daemon answers and dockerd is missing (apt-get install docker.io)"
  [[ $(id -u) -eq 0 ]] || fail "no Docker daemon answers and starting dockerd needs root"
  step "starting dockerd (log: $work/dockerd.log)"
  host_tables=$(nft list tables 2>/dev/null || true)
  host_forward=$(sysctl -n net.ipv4.ip_forward 2>/dev/null || true)
  ip link show docker0 >/dev/null 2>&1 && host_bridge=1
  dockerd >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 "$DOCKERD_WAIT"); do
    timeout 5 docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  if ! timeout 5 docker info >/dev/null 2>&1; then
    tail -20 "$work/dockerd.log" >&2
    fail "dockerd did not answer within ${DOCKERD_WAIT}s (log above): this kernel or VM may not run containers" \
      "(it needs overlayfs or vfs, cgroups, iptables and network namespaces)"
  fi
fi

# ---- the binary, the base, the image ---------------------------------------------------------------
step "cargo build --profile dist -p realtime-node --bin realtime"
t0=$(now_ms)
cargo build --profile dist --locked -p realtime-node --bin realtime
build_secs=$(secs_since "$t0")
binary="$TARGET/dist/realtime"
[[ -x "$binary" ]] || fail "$binary was not built"

step "base image $BASE_IMAGE (deploy/ci/build-base.sh)"
REALTIME_BASE_IMAGE="$BASE_IMAGE" deploy/ci/build-base.sh

step "docker build -f deploy/ci/Dockerfile -t $IMAGE"
mkdir -p "$work/context"
cp "$binary" "$work/context/realtime"
t0=$(now_ms)
# The classic builder: it uses the local base image as it is (BuildKit may try to resolve it in a registry).
DOCKER_BUILDKIT=0 timeout 600 docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -f deploy/ci/Dockerfile \
  -t "$IMAGE" "$work/context" >/dev/null 2>"$work/build.log" || {
  cat "$work/build.log" >&2
  fail "docker build"
}
image_secs=$(secs_since "$t0")
image_size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
base_size=$(docker image inspect -f '{{.Size}}' "$BASE_IMAGE")
binary_size=$(stat -c %s "$binary")
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
echo "image-test: binary $(mb "$binary_size"), base $(mb "$base_size"), image $(mb "$image_size")" \
  "(dist build ${build_secs}s, image build ${image_secs}s)"
[[ $image_size -lt $SIZE_LIMIT ]] || fail "the image is $(mb "$image_size"), over $(mb "$SIZE_LIMIT")"

# ---- three containers behind one DNS alias ---------------------------------------------------------
docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f -v >/dev/null
docker network rm "$NETWORK" >/dev/null 2>&1 || true
docker network create --label "$LABEL" "$NETWORK" >/dev/null
secret() { head -c 48 /dev/urandom | base64 | tr -d '\n/+='; }
JWT_SECRET="$(secret)"
CLUSTER_SECRET="$(secret)"
ADMIN_TOKEN="$(secret)"

step "starting ${NODES[*]} on network $NETWORK, alias $ALIAS"
t_start=$(now_ms)
for node in "${NODES[@]}"; do
  docker run -d --name "$node" --hostname "$node" --label "$LABEL" \
    --network "$NETWORK" --network-alias "$ALIAS" -p 127.0.0.1::4000 \
    -e REALTIME_NODE_ID="$node" -e REALTIME_SEEDS="$ALIAS" \
    -e REALTIME_JWT_SECRET="$JWT_SECRET" -e REALTIME_CLUSTER_SECRET="$CLUSTER_SECRET" \
    -e REALTIME_ADMIN_TOKEN="$ADMIN_TOKEN" \
    "$IMAGE" >/dev/null
done
declare -A URL
for node in "${NODES[@]}"; do
  port="$(docker port "$node" 4000/tcp | grep -m1 '^127\.0\.0\.1:' | cut -d: -f2)"
  [[ -n "$port" ]] || fail "$node's port 4000 is not published on 127.0.0.1"
  URL[$node]="http://127.0.0.1:$port"
done

# /cluster of a node as "ready alive-peers leader" (leader "-" when none), or "down".
cluster_line() {
  curl -fsS --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN" "${URL[$1]}/cluster" 2>/dev/null \
    | python3 -c 'import json, sys
v = json.load(sys.stdin)
alive = sorted(m["node"] for m in v["members"] if m["state"] == "alive" and m["node"] != v["node"])
print(v["ready"], ",".join(alive) or "-", v.get("leader") or "-")' 2>/dev/null || echo down
}
# Waits until every node in $2.. is ready, sees the others of them alive and all name one leader (other
# than $1 when $1 is not "-"); sets LEADER.
wait_settled() {
  local not="$1" limit="$2" label="$3"
  shift 3
  local deadline=$((SECONDS + limit)) lines
  while :; do
    lines=()
    local ok=1 leaders=()
    for node in "$@"; do
      local line want
      line="$(cluster_line "$node")"
      lines+=("$node: $line")
      want="$(printf '%s\n' "$@" | grep -vx "$node" | sort | paste -sd, -)"
      read -r ready alive leader <<<"$line"
      if [[ "$ready" != True || "$alive" != "$want" || "$leader" == - || "$leader" == "$not" ]]; then ok=0; fi
      leaders+=("${leader:-}")
    done
    if [[ $ok -eq 1 && $(printf '%s\n' "${leaders[@]}" | sort -u | wc -l) -eq 1 ]]; then
      LEADER="${leaders[0]}"
      return 0
    fi
    if [[ $SECONDS -ge $deadline ]]; then
      printf '  %s\n' "${lines[@]}" >&2
      fail "$label: not within ${limit}s (ready, alive peers, leader per node above)"
    fi
    sleep 0.2
  done
}

wait_settled - "$FORM_WAIT" "the cluster forming" "${NODES[@]}"
formed_secs=$(secs_since "$t_start")
echo "image-test: cluster formed in ${formed_secs}s (3 ready, each sees 2 alive, leader $LEADER)"

uid="$(docker exec "${NODES[0]}" id -u)"
[[ "$uid" == 10001 ]] || fail "the process runs as uid $uid, not 10001"

deadline=$((SECONDS + HEALTHY_WAIT))
for node in "${NODES[@]}"; do
  until [[ "$(docker inspect -f '{{.State.Health.Status}}' "$node")" == healthy ]]; do
    [[ $SECONDS -lt $deadline ]] || fail "$node's HEALTHCHECK is $(docker inspect -f '{{.State.Health.Status}}' "$node") after ${HEALTHY_WAIT}s"
    sleep 1
  done
done
echo "image-test: HEALTHCHECK healthy on all three (uid 10001)"

step "broadcast across ${NODES[0]} and ${NODES[2]} (realtime-js)"
REALTIME_JWT_SECRET="$JWT_SECRET" timeout 90 node tests/js/image/broadcast-across.js \
  "${URL[${NODES[0]}]}" "${URL[${NODES[2]}]}" || fail "a broadcast did not cross between ${NODES[0]} and ${NODES[2]}"

# ---- stop the leader -------------------------------------------------------------------------------
old_leader="$LEADER"
survivors=()
for node in "${NODES[@]}"; do [[ "$node" == "$old_leader" ]] || survivors+=("$node"); done
[[ ${#survivors[@]} -eq 2 ]] || fail "the leader '$old_leader' is not one of ${NODES[*]}"

step "docker stop -t $STOP_GRACE $old_leader (the raft leader)"
t_stop=$(now_ms)
timeout $((STOP_GRACE + 30)) docker stop -t "$STOP_GRACE" "$old_leader" >/dev/null || fail "docker stop $old_leader"
stop_secs=$(secs_since "$t_stop")
code="$(docker inspect -f '{{.State.ExitCode}}' "$old_leader")"
[[ "$code" == 0 ]] || fail "$old_leader exited with $code after SIGTERM, not 0"
echo "image-test: $old_leader drained and exited 0 in ${stop_secs}s"

wait_settled "$old_leader" "$HANDOVER_WAIT" "the handover" "${survivors[@]}"
handover_secs=$(secs_since "$t_stop")
echo "image-test: handover: ${survivors[*]} name $LEADER ${handover_secs}s after the stop began"

step "broadcast across ${survivors[0]} and ${survivors[1]} (realtime-js)"
REALTIME_JWT_SECRET="$JWT_SECRET" timeout 90 node tests/js/image/broadcast-across.js \
  "${URL[${survivors[0]}]}" "${URL[${survivors[1]}]}" \
  || fail "a broadcast did not cross between the survivors ${survivors[*]}"

echo "image-test: OK: image $(mb "$image_size") (base $(mb "$base_size"), binary $(mb "$binary_size"));" \
  "dist build ${build_secs}s; cluster formed in ${formed_secs}s; leader $old_leader stopped in ${stop_secs}s;" \
  "new leader $LEADER ${handover_secs}s after the stop began"
