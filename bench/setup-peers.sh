#!/usr/bin/env bash
# Builds bench/.venv-peers: TransformerLens 3.9.0 (the last release with HookedTransformer)
# beside the CPU build of torch 2.13.0, for the peer comparison in bench/bench.py.
# torch goes in first, pinned to the CPU build by a constraint that also holds while
# transformer-lens resolves, so pip never pulls a CUDA torch. Usage: bash bench/setup-peers.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-peers"
python3 -m venv "$venv"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0+cpu" >"$constraints"
"$venv/bin/pip" install --quiet -c "$constraints" "torch==2.13.0+cpu"
"$venv/bin/pip" install --quiet -c "$constraints" "transformer-lens==3.9.0"
"$venv/bin/python" -c "import torch, transformer_lens; print('peers ready: torch', torch.__version__)"
