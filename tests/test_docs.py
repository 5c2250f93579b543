"""Docs generated from the code stay in step with it."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_weight_table_is_generated_from_the_code():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "weight_table.py")], check=True, capture_output=True, text=True
    ).stdout
    committed = (ROOT / "docs" / "weights.md").read_text()
    assert committed == generated, "docs/weights.md is stale: run scripts/weight_table.py > docs/weights.md"
