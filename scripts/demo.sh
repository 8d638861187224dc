#!/usr/bin/env bash
# The main job on the built-in lab: three real hosts (systemd + sshd), a real mutual-TLS
# etcd cluster built by `etcd-deploy up`, then `etcd-deploy status`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${ETCD_DEPLOY_VENV:-.venv}
MIRROR=$("$VENV/bin/python" -c 'from tests.lab.mirror import default_mirror_dir; print(default_mirror_dir())')
"$VENV/bin/python" -m tests.lab up 3
"$VENV/bin/python" -m tests.lab clean  # the demo starts from bare hosts
"$VENV/bin/python" -m tests.lab inventory --hosts 3 --version "${ETCD_VERSION:-3.5.30}" \
    --release-url "$MIRROR" --out .lab/demo/inventory.toml
cd .lab/demo
"../../$VENV/bin/etcd-deploy" up inventory.toml
"../../$VENV/bin/etcd-deploy" status -i inventory.toml
