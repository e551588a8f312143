#!/usr/bin/env bash
# Static checks, run by scripts/test.sh before pytest (or alone: bash scripts/lint.sh):
#   ruff check ivr tests benchmarks   rules: pyproject.toml [tool.ruff.lint], each with its reason
#   mypy                              ivr/, config: pyproject.toml [tool.mypy] (strict for the cores)
# Both run even when the first fails. Exit code 0 when both pass, 1 otherwise; the last line names
# the tool(s) that failed. The tools are pinned in pyproject's `test` extra (scripts/install.sh).
set -Euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${IVR_VENV:-$ROOT/.venv}/bin/python"
cd "$ROOT"

for mod in ruff mypy; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then
    echo "lint.sh: $mod is not installed in $(dirname "$(dirname "$PY")"): run scripts/install.sh" >&2
    exit 1
  fi
done

failed=()
echo "==> lint: ruff check ivr tests benchmarks"
"$PY" -m ruff check ivr tests benchmarks || failed+=(ruff)
echo "==> lint: mypy (ivr/)"
"$PY" -m mypy || failed+=(mypy)

if [ "${#failed[@]}" -gt 0 ]; then
  echo "lint.sh: FAILED: ${failed[*]} (findings above)" >&2
  exit 1
fi
echo "lint.sh: ruff and mypy passed"
