#!/usr/bin/env bash
# Set up and start the app on the offline default model (SmolLM2-135M): http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Return freed big buffers (traces, patterns) to the system instead of keeping them in the
# heap: a long-running server's memory stays near what it holds (see README, Performance).
export MALLOC_MMAP_THRESHOLD_=1048576
exec .venv/bin/streamlit run app.py --server.headless true "$@"
