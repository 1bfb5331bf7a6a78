#!/usr/bin/env bash
# Many users at once: start the app on a free loopback port, drive concurrent headless-Chromium
# sessions on three models (two tiny local ones and the default), check that each sees only its
# own tokens and that the server's memory stays bounded; print a JSON summary, stop the server.
#   scripts/load-test.sh                          # a class: 32 sessions arriving over 30 s, 3 prompts each
#   scripts/load-test.sh --sessions 8 --rounds 2 --stagger 0
# Exit status 0 only if every session passed. Needs the dev setup (scripts/setup.sh dev) and
# Debian's Chromium (/usr/bin/chromium), like the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tests/load_test.py --sessions 32 --rounds 3 --stagger 30 --deadline 900 "$@"
