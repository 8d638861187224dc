#!/usr/bin/env bash
# The test suite: lint, unit tests (no network), then end-to-end tests on the lab
# (five real hosts, real etcd, real TLS and SSH). The lab is torn down even on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
VENV=${ETCD_DEPLOY_VENV:-.venv}
PY="$VENV/bin/python"

teardown() { "$PY" -m tests.lab down || true; }
trap teardown EXIT

"$VENV/bin/ruff" check orchestrator tests bench || exit 1
"$VENV/bin/mypy" orchestrator || exit 1
"$PY" -m pytest tests/unit -q -p no:cacheprovider
unit=$?
"$PY" -m tests.lab up 5 || exit 1
"$PY" -m pytest tests/e2e -q -p no:cacheprovider -m e2e
e2e=$?
echo "unit tests: exit $unit; e2e tests: exit $e2e"
[ "$unit" -eq 0 ] && [ "$e2e" -eq 0 ]
