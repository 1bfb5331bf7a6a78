#!/usr/bin/env bash
# Set up and start the app on the offline default model (SmolLM2-135M): http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamlit run app.py --server.headless true "$@"
