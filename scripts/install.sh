#!/usr/bin/env bash
# Installs everything the controller, its demo and its tests need, on Debian 12 as root:
# Asterisk 16 (from bullseye, pinned low), SIPp, Redis, ffmpeg, sox, espeak-ng,
# a virtualenv in .venv with the package, and the built audio prompts.
# Idempotent: what is present is skipped. Each failure names its step.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IVR_VENV:-$ROOT/.venv}"
STEP="start"
step() { STEP="$1"; echo "==> $1"; }
trap 'echo "install.sh: step \"$STEP\" failed (line $LINENO). Fix the cause above and run it again." >&2' ERR

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() { if [ "$APT_UPDATED" = 0 ]; then apt-get update -q >/dev/null; APT_UPDATED=1; fi; }

step "check the machine"
if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (it installs Debian packages)" >&2; exit 1; fi
if ! grep -q 'VERSION_ID="12"' /etc/os-release 2>/dev/null; then
  echo "warning: this script is written for Debian 12 (bookworm); continuing anyway" >&2
fi

step "Debian packages: SIPp, Redis and Redis Sentinel, ffmpeg, sox, espeak-ng, Chromium + chromedriver (dashboard test), Python venv"
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)   # several nodes: Redis primary + replica, 3 Sentinels
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v sox >/dev/null || need+=(sox)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  apt_update
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

step "Asterisk 16 from Debian bullseye (pinned low)"
if ! command -v asterisk >/dev/null || [ ! -f /usr/lib/asterisk/modules/app_queue.so ]; then
  if [ ! -f /etc/apt/sources.list.d/ivr-bullseye.list ]; then
    echo "deb http://deb.debian.org/debian bullseye main" > /etc/apt/sources.list.d/ivr-bullseye.list
    printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' > /etc/apt/preferences.d/ivr-bullseye-pin
    APT_UPDATED=0
  fi
  apt_update
  if ! apt-cache policy asterisk 2>/dev/null | grep -q bullseye; then
    echo "install.sh: Debian bullseye's asterisk package is not on the mirror any more." >&2
    echo "  Install Asterisk 18-22 another way (Debian sid carries 22, Ubuntu 24.04 carries 20) and run again." >&2
    exit 1
  fi
  apt-get install -y -q asterisk/bullseye asterisk-modules/bullseye asterisk-config/bullseye >/dev/null
fi
asterisk -V

step "Python virtualenv in $VENV"
PY="$(command -v python3)"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "install.sh: Python 3.11 or newer is needed, found $("$PY" -V)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
STAMP="$VENV/.ivr-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
  echo "$WANT" > "$STAMP"
fi
"$VENV/bin/ivr" --help >/dev/null

step "audio prompts (espeak-ng + pydub -> 8 kHz wav and ulaw)"
if [ -f "$ROOT/ivr/prompts/build.py" ]; then
  "$VENV/bin/ivr" prompts build
fi

STEP="summary"
SIPP_VERSION="$( (sipp -v 2>/dev/null || true) | grep -o 'SIPp v[0-9.]*' | head -1 || true)"
echo "==> installed: $(asterisk -V), ${SIPP_VERSION:-SIPp}, Redis $(redis-server --version | cut -d' ' -f3), venv $VENV"
