#!/usr/bin/env bash
# The test command: installs what is missing (idempotent), then runs the whole suite
# (unit tests and integration tests against a real Asterisk, Redis and SIPp on loopback).
# Extra arguments go to pytest. Exit code: pytest's; "no tests ran" (5) is a failure.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install.sh"
cd "$ROOT"
set +e
"${IVR_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
