#!/usr/bin/env bash
# One-shot, idempotent setup of a development/research environment in ./.venv:
#   * Debian packages Qt's xcb plugin and the Xvfb screenshot test need (only when missing, as root);
#   * a Python >= 3.11 virtual environment;
#   * torch==2.13.0 FIRST (a bare "torch" requirement would pull a multi-GB CUDA build);
#   * the project itself with the [dev] extra (everything the app and the tests need,
#     including pydicom-data's real chest radiograph).
# A second run skips everything that is already in place (stamp file keyed on pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
TORCH_VERSION="2.13.0"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system libraries (Debian/Ubuntu, root only) ---------------------------------------------
APT_PKGS=(xvfb xauth libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
          libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libegl1 libgl1
          libfontconfig1 libdbus-1-3)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
      log "installing system packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      log "WARNING: missing system packages (Qt display / Xvfb): ${missing[*]}"
      log "         install them with: sudo apt-get install ${missing[*]}"
    fi
  fi
fi

# --- Python virtual environment --------------------------------------------------------------
PY=""
for cand in python3.11 python3.12 python3.13 python3; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    PY=$(command -v "$cand"); break
  fi
done
[ -n "$PY" ] || { log "ERROR: Python >= 3.11 not found"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment with $PY"
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.medsae-setup-stamp"
want=$( (cat pyproject.toml installer/setup-dev.sh; echo "$TORCH_VERSION") | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import medsae_desktop, torch' 2>/dev/null; then
  log "environment up to date (.venv)"
  exit 0
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null
log "installing torch==$TORCH_VERSION (CPU build)"
"${PIP[@]}" install "torch==$TORCH_VERSION"
log "installing medsae-desktop[dev] (editable)"
"${PIP[@]}" install -e ".[dev]"
echo "$want" > "$STAMP"
log "done: $("$VENV/bin/python" -c 'import medsae_desktop, torch; print("medsae-desktop", medsae_desktop.__version__, "torch", torch.__version__)')"
