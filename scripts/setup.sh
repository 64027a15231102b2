#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: Debian packages, .venv from requirements.lock,
# the package in editable mode. Re-running it does only what changed (a stamp holds the lock's hash).
#   scripts/setup.sh          what `make demo` needs
#   scripts/setup.sh --test   plus what the test suite needs (PostgreSQL server)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------------------
apt_pkgs=()
command -v dot >/dev/null 2>&1 || apt_pkgs+=(graphviz)
if [ "$want_test" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_pkgs+=(postgresql)
fi
command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)   # builds the JupyterLab extension
# Browser tests: Debian's Chromium, driven by the Python playwright pinned in requirements.lock
[ "$want_test" = 1 ] && ! command -v chromium >/dev/null 2>&1 && apt_pkgs+=(chromium)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  say "installing Debian packages: ${apt_pkgs[*]}"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install ${apt_pkgs[*]}" >&2; exit 1; }
    sudo_cmd="sudo"
  fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

# --- Python virtualenv --------------------------------------------------------------------------
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "Python 3.11 is required (found: $($PY --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.aiflow-lock-stamp
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing requirements.lock into .venv (the first time takes about 5 minutes)"
  # (this machine's pip config names optional local indexes; their "is ignored" warnings are noise)
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock 2> >(grep -v "is ignored: it is neither" >&2)
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
# An editable install skips pyproject's data-files: put the server extension's enabling config where a
# wheel install puts it (the venv's etc/jupyter), so `jupyter server extension list` shows it enabled.
install -D -m 644 jupyter-config/jupyter_server_config.d/aiflow_notebook.json \
  .venv/etc/jupyter/jupyter_server_config.d/aiflow_notebook.json

# --- JupyterLab extension (labextension/ → aiflow_notebook/labextension, prebuilt) -----------------------
# Node packages come from the committed lock (npm ci); the build runs only when the sources or the lock
# changed (a stamp holds their hash) or the output is missing.
lab_out=aiflow_notebook/labextension
lab_stamp=labextension/node_modules/.aiflow-build-stamp
lab_want=$(cd labextension && find package.json package-lock.json tsconfig.json src style -type f \
  -not -path '*/__tests__/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$lab_stamp" 2>/dev/null)" != "$lab_want" ] || [ ! -f "$lab_out/package.json" ]; then
  lock_hash=$(sha256sum labextension/package-lock.json | cut -d' ' -f1)
  if [ "$(cat labextension/node_modules/.aiflow-lock-stamp 2>/dev/null)" != "$lock_hash" ]; then
    say "installing the extension's Node packages (npm ci)"
    (cd labextension && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > labextension/node_modules/.aiflow-lock-stamp
  fi
  say "building the JupyterLab extension"
  (cd labextension && npm run --silent build) > .venv/labextension-build.log 2>&1 || {
    cat .venv/labextension-build.log >&2; echo "the JupyterLab extension did not build (log above)" >&2; exit 1; }
  echo "$lab_want" > "$lab_stamp"
fi
# The editable install has no data files: point the venv's labextensions dir at the build (what
# `jupyter labextension develop` does). A wheel carries it as data files (pyproject.toml).
lab_dir=.venv/share/jupyter/labextensions
mkdir -p "$lab_dir"
if [ "$(readlink "$lab_dir/aiflow-notebook" 2>/dev/null)" != "$PWD/$lab_out" ]; then
  rm -rf "$lab_dir/aiflow-notebook"
  ln -s "$PWD/$lab_out" "$lab_dir/aiflow-notebook"
fi
say "ready: .venv ($(.venv/bin/python --version)), JupyterLab extension aiflow-notebook"
