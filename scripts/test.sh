#!/usr/bin/env bash
# Set up and run the whole test suite (fidelity, tokenizers, weights, pages, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
# The browser test drives Debian's Chromium (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q && apt-get install -y -q chromium chromium-driver
    else
        sudo apt-get update -q && sudo apt-get install -y -q chromium chromium-driver
    fi
fi
exec .venv/bin/python -m pytest "$@"
