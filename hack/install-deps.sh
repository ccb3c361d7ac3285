#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine. Idempotent: a
# package is installed only when the program it provides is missing.
#
#   protoc        protobuf-compiler + libprotobuf-dev   (etcd-client's build)
#   etcd          etcd-server                           (store and e2e tests)
#   nginx         nginx-light                           (gateway tests)
#   promtool      prometheus                            (metrics format checks)
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -d /usr/include/google/protobuf ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -eq 0 ]; then
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
for svc in etcd nginx prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
