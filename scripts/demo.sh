#!/usr/bin/env bash
# The main job: install everything (idempotent), then run the surge demo on loopback.
# Extra arguments go to `ivr demo` (e.g. --duration 120 --rate 2 --agents 10).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install.sh"
cd "$ROOT"
exec "${IVR_VENV:-$ROOT/.venv}/bin/ivr" demo --workdir "$ROOT/run/demo" "$@"
