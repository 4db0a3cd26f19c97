#!/usr/bin/env bash
# Runs the Python SDK's tests against the real AOS binaries.
#
#   sdk/python/run-tests.sh [pytest args...]
#
# Creates a virtualenv (sdk/python/.venv, git-ignored; AOS_SDK_VENV to put it
# elsewhere), installs the SDK with its test and openai extras, and runs
# pytest. The binaries come from $AOS_BIN_DIR, else $CARGO_TARGET_DIR/debug,
# else <repo>/target/debug: build them first (`cargo build -p aos-control-plane`,
# or any `cargo test --workspace`). Needs python3 (>= 3.11) and pip; installs
# python3-venv from Debian packages when venv is missing. Exits non-zero when
# a test fails.
set -euo pipefail
SDK_DIR="$(cd "$(dirname "$0")" && pwd)"
VENV="${AOS_SDK_VENV:-$SDK_DIR/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '\n==> %s\n' "$*"; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "installing python3 (Debian packages)"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "the Python SDK needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
# shellcheck source=../../scripts/lib/python-venv.sh
. "$SDK_DIR/../../scripts/lib/python-venv.sh"
ensure_venv "$PYTHON" "$VENV"

# setuptools reuses build/ between builds; a stale copy could ship removed modules.
rm -rf "$SDK_DIR/build"
log "installing the SDK with its test extras"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$SDK_DIR[test,openai]"

log "pytest (sdk/python)"
cd "$SDK_DIR"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
