"""The interface each backend's trainer implements; ``wav2vec2.training.loop.fit`` drives it."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Trainer(Protocol):
    """One backend's half of training: the tensor math. Everything else is ``fit``'s.

    Batches are dicts of NumPy arrays made by ``wav2vec2.training.batching.Collator``; a trainer
    converts them to its framework's tensors and never draws masks of its own.
    """

    backend: str  # "torch", "tensorflow" or "flax"; recorded in each checkpoint
    # Optional (not a member, so that trainers without it still match): ``sharded``, True when the
    # weights are split over the processes (torch FSDP). Then ``fit`` and ``train`` call ``logits``,
    # ``save_model`` (with None where the process does not write) and ``state_dict`` on every
    # process, since gathering the weights takes them all.

    def init(self, model, settings) -> None:
        """Take the model (initial or pre-trained weights) and ``TrainSettings``; build the
        optimizer: AdamW with ``settings.optimizer`` (no weight decay where
        ``schedule.decays_weight`` says so), frozen parts excluded."""

    def train_step(self, batches: Sequence[Dict[str, np.ndarray]], learning_rate: float) -> Dict[str, float]:
        """One optimizer update from ``len(batches)`` accumulated micro-batches (gradients
        averaged), clipped to ``max_grad_norm``, at ``learning_rate``. Returns at least ``loss``
        (mean over the micro-batches) and ``grad_norm`` (before clipping)."""

    def logits(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        """Evaluation forward (no dropout, no masks): (batch, frames, vocab) or (batch, labels)."""

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Optimizer state (moments, update count) and the framework's RNG state (dropout,
        LayerDrop), as flat named NumPy arrays: with ``load_state_dict`` it makes resume exact."""

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """Restore what ``state_dict`` returned."""

    def save_model(self, directory: Path) -> None:
        """Write ``config.json`` and the weights in the backend's own format (the library's
        writers) into ``directory``."""

    def load_model(self, directory: Path) -> None:
        """Load the weights a ``save_model`` wrote (resuming from a checkpoint)."""


# The head each task trains, by class name: every backend exports these classes.
TASK_HEADS = {
    "ctc": "Wav2Vec2ForCTC",
    "sequence-classification": "Wav2Vec2ForSequenceClassification",
    "pretraining": "Wav2Vec2ForPreTraining",
}
PRECISIONS = ("fp32", "bf16")


def task_class(classes, task: str):
    """The class in ``classes`` (a backend's module of public classes) that ``task`` trains."""
    _check_task(task)
    return getattr(classes, TASK_HEADS[task])


def check_options(task: str, precision: str) -> None:
    """What every trainer's constructor checks: ValueError naming an unknown task or precision."""
    _check_task(task)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def check_model(model, classes, task: str) -> None:
    """What every trainer's ``init`` checks: ValueError unless ``model`` is the class ``task`` trains."""
    expected = task_class(classes, task)
    if not isinstance(model, expected):
        raise ValueError(f"task {task!r} trains a {expected.__name__}, got {type(model).__name__}")


def _check_task(task: str) -> None:
    if task not in TASK_HEADS:
        raise ValueError(f"task must be one of {tuple(TASK_HEADS)}, got {task!r}")
