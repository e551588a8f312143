#!/usr/bin/env bash
# The test command: installs what is missing (idempotent), runs the static checks (scripts/lint.sh:
# ruff and mypy), then the whole suite (unit tests and integration tests against a real Asterisk,
# Redis and SIPp on loopback). Extra arguments go to pytest.
# Exit code: pytest's, or 1 when the static checks failed (pytest still runs, so both are reported);
# "no tests ran" (5) is a failure.
# The tests run in 4 worker processes side by side (pytest-xdist, pyproject.toml's addopts): IVR_TEST_WORKERS=N
# runs N (0: all in this process). The slowest 25 tests are listed at the end.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install.sh"
cd "$ROOT"
set +e
bash "$ROOT/scripts/lint.sh"
lint_rc=$?
workers=()
if [ -n "${IVR_TEST_WORKERS:-}" ]; then workers=(-n "$IVR_TEST_WORKERS"); fi
"${IVR_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -p no:cacheprovider "${workers[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  rc=1
fi
if [ "$lint_rc" != 0 ]; then
  echo "test.sh: the static checks failed (scripts/lint.sh: ruff or mypy, named above the tests)" >&2
  [ "$rc" = 0 ] && rc=1
fi
exit "$rc"
