"""The style holds without review: ruff (configured in pyproject.toml: line length 120, rules E, F, W, I)
finds nothing in the repository. ruff comes from requirements-dev.txt."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"ruff check . failed (install ruff from requirements-dev.txt; `ruff check --fix .` fixes the sortable "
        f"ones):\n{result.stdout}{result.stderr}"
    )
    assert "All checks passed" in result.stdout
