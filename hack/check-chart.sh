#!/usr/bin/env bash
# The Helm chart (charts/phoenix): `helm lint --strict` and `helm template` with the default
# values and with charts/phoenix/ci/*.yaml, every rendered manifest validated against
# Kubernetes' schemas (kubernetes-validate --strict), and the chart's refusals of settings that
# cannot work. helm and kubernetes-validate come from .venv-ops (hack/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

OPS=.venv-ops/bin
for tool in helm kubernetes-validate; do
  [ -x "$OPS/$tool" ] || { echo "hack/check-chart.sh: $OPS/$tool is missing: run hack/install-deps.sh" >&2; exit 1; }
done
KUBERNETES_VERSION=1.34.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME=$work/helm HELM_CONFIG_HOME=$work/helm HELM_DATA_HOME=$work/helm
chart=charts/phoenix

render() { # name, values file or "", then extra helm template arguments
  local name=$1 values=()
  [ -z "$2" ] || values=(-f "$2")
  shift 2
  "$OPS/helm" lint --strict "$chart" "${values[@]}" --set serviceMonitor.skipCapabilityCheck=true \
    >"$work/lint.log" || { cat "$work/lint.log" >&2; exit 1; }
  "$OPS/helm" template "$name" "$chart" --namespace phoenix-system "${values[@]}" "$@" >"$work/$name.yaml"
  # ServiceMonitor is a CRD: Kubernetes' schemas do not have it; everything else must pass.
  "$OPS/kubernetes-validate" -k "$KUBERNETES_VERSION" --strict --quiet "$work/$name.yaml"
  echo "chart: $name renders and validates ($(grep -c '^kind:' "$work/$name.yaml") objects)"
}

render defaults ""
render etcd-controllers "$chart/ci/etcd-controllers-values.yaml" --api-versions monitoring.coreos.com/v1

# What the defaults promise: the embedded store on a PVC, one replica that the next replaces
# (Recreate), non-root with a read-only root filesystem, no Kubernetes API token.
d=$work/defaults.yaml
for want in 'kind: PersistentVolumeClaim' 'type: Recreate' 'runAsNonRoot: true' \
  'readOnlyRootFilesystem: true' 'automountServiceAccountToken: false' 'kind: PodDisruptionBudget' \
  '--backup-dir=/var/lib/phoenix/backups'; do
  grep -q -e "$want" "$d" || { echo "chart defaults: no '$want' in the rendered manifests" >&2; exit 1; }
done
if grep -q 'kind: ServiceMonitor' "$d"; then
  echo "chart defaults: a ServiceMonitor without serviceMonitor.enabled" >&2
  exit 1
fi
e=$work/etcd-controllers.yaml
for want in 'kind: ServiceMonitor' '--etcd-endpoints=' '--no-controllers' '--only=guest' \
  '--only=gateway,gitsync' '--tls-ca-cert-file=' '--pve-token-file=' '--encryption-key-file=' \
  'kind: PersistentVolumeClaim'; do
  grep -q -e "$want" "$e" || { echo "chart with etcd and controller sets: no '$want'" >&2; exit 1; }
done
if grep -q -e '--backup-dir' "$e"; then
  echo "chart with etcd: embedded-store backups although the store is etcd" >&2
  exit 1
fi

# Refusals, each with its message.
refuses() { # expected message, then helm template arguments
  local want=$1
  shift
  if "$OPS/helm" template refused "$chart" "$@" >"$work/refused.log" 2>&1; then
    echo "chart accepted $* although it cannot work" >&2
    exit 1
  fi
  grep -q "$want" "$work/refused.log" || { echo "chart refused $* without saying '$want':" >&2; cat "$work/refused.log" >&2; exit 1; }
}
refuses 'shared tokens are not there yet' --set server.replicaCount=2
refuses 'shared tokens are not there yet' -f "$chart/ci/etcd-controllers-values.yaml" --api-versions monitoring.coreos.com/v1 --set server.replicaCount=3
refuses 'need controllerConfig.secretName' --set 'controllerSets[0].name=g' --set 'controllerSets[0].only[0]=guest'
refuses 'needs the Prometheus Operator' --set serviceMonitor.enabled=true
echo "chart: refusals ok"
