"""Optimizer settings and the learning-rate schedule, as plain data and pure functions of the step.

Every backend's optimizer reads the same numbers: AdamW (decoupled weight decay) with ``betas``,
``epsilon`` and ``weight_decay``; the learning rate of update k (k = 1, 2, ... counts optimizer
updates, not micro-batches) is

    lr(k) = learning_rate * k / warmup_steps                                       for k <= warmup_steps
    lr(k) = learning_rate * (total_steps + 1 - k) / (total_steps + 1 - warmup_steps)  after that

the straight lines through (0, 0), (warmup_steps, learning_rate) and (total_steps + 1, 0): a linear
warm-up, then a linear decay that would reach 0 one update after the last. So neither the first nor
the last update is made at rate 0 (a schedule read before its first increment makes update 1 at 0).
Gradients are accumulated over ``gradient_accumulation_steps`` batches (averaged), their global L2
norm is clipped to
``max_grad_norm`` (None: no clipping), then one update is made. Biases and normalisation weights
get no weight decay (``decays_weight``), as in the reference's trainer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class OptimizerSettings:
    learning_rate: float = 1e-4
    warmup_steps: int = 500
    total_steps: int = 10000
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8
    max_grad_norm: Optional[float] = 1.0
    gradient_accumulation_steps: int = 1

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}")
        if self.total_steps < 1 or self.total_steps < self.warmup_steps:
            raise ValueError(
                f"total_steps must be at least 1 and at least warmup_steps={self.warmup_steps}, got {self.total_steps}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {self.epsilon}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "OptimizerSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown optimizer settings {unknown}; known: {sorted(known)}")
        return cls(**data)


def learning_rate(settings: OptimizerSettings, step: int) -> float:
    """The learning rate of update ``step`` (1-based); see the module docstring."""
    if step < 1:
        raise ValueError(f"updates are counted from 1, got step {step}")
    if step <= settings.warmup_steps:
        return settings.learning_rate * step / settings.warmup_steps
    remaining = settings.total_steps + 1 - step
    return settings.learning_rate * max(0.0, remaining / (settings.total_steps + 1 - settings.warmup_steps))


def decays_weight(canonical_name: str) -> bool:
    """Whether AdamW's weight decay applies to a weight, by its canonical name: not to biases and
    not to LayerNorm/GroupNorm weights (``...layer_norm.weight``)."""
    return not (canonical_name.endswith(".bias") or "layer_norm" in canonical_name)
