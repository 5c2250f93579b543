"""The demo model: a small English CTC model trained with ``wav2vec2 train`` on the espeak-ng corpus.

``demo_model_path()`` is its directory (``--model demo`` on the command line). It is made by
``scripts/train_demo.sh`` (docs/training.md); until it has been trained and put in place the
function raises FileNotFoundError saying so.
"""
from __future__ import annotations

from pathlib import Path

DEMO_DIRECTORY = Path(__file__).resolve().parent / "demo_model"


def demo_model_path() -> Path:
    """The demo model's checkpoint directory; FileNotFoundError when it is not there."""
    if not (DEMO_DIRECTORY / "config.json").is_file():
        raise FileNotFoundError(
            f"the demo model is not in this installation ({DEMO_DIRECTORY} holds no config.json): "
            f"train it with scripts/train_demo.sh (about an hour on 2 CPU cores; see docs/training.md)"
        )
    return DEMO_DIRECTORY
