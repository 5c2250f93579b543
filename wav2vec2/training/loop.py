"""The training loop every backend shares: batches, schedule, logging, evaluation, checkpoints.

``fit`` drives a ``Trainer`` (see ``wav2vec2.training``'s docstring for the protocol) and owns
everything that has no tensor math: the order of batches and their masks, the learning rate of
each update, the log, when to evaluate and save, and resuming. A resumed run continues exactly
where the checkpoint was taken: the same next batch, the same Generator state for the masks, the
optimizer state the trainer saved; its log has no records past the checkpoint's step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from . import run
from .batching import LengthBucketSampler, Position
from .schedule import OptimizerSettings, learning_rate

OPTIMIZER_NAME = "optimizer.safetensors"
# Settings that decide which batches and masks come next: a resumed run must keep them.
_STREAM_SETTINGS = ("seed", "batch_seconds", "bucket_window")


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int
    batch_seconds: float = 200.0
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    seed: int = 0
    log_every: int = 10
    eval_every: Optional[int] = None
    save_every: Optional[int] = None
    keep_last: Optional[int] = 2
    bucket_window: int = 2000

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        for name in ("log_every", "eval_every", "save_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["optimizer"] = self.optimizer.to_dict()
        return data


def data_fingerprint(dataset) -> str:
    """SHA-256 of what the batches are made of: each example's place, length and target."""
    digest = hashlib.sha256()
    for e in dataset.examples:
        digest.update(json.dumps([e.where, round(e.seconds, 6), e.text, e.label]).encode())
    return digest.hexdigest()


def fit(
    trainer,
    settings: TrainSettings,
    train_data,
    collator,
    run_dir,
    *,
    evaluate: Optional[Callable[[object], Dict[str, float]]] = None,
    write_processor: Optional[Callable[[Path], None]] = None,
    resume=False,
    tensorboard: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    writer: bool = True,
    on_update: Optional[Callable[[int, Dict], None]] = None,
) -> Dict:
    """Train ``trainer`` (already ``init``-ed with its model) for ``settings.max_steps`` updates.

    ``evaluate(trainer)`` returns metrics (e.g. ``{"wer": ..., "cer": ...}``), logged as ``eval/<name>``
    every ``eval_every`` updates and at the end. ``write_processor(directory)`` writes the processor
    files into each checkpoint. ``resume``: False, True (the latest checkpoint of ``run_dir``, if
    any) or a checkpoint path. ``writer=False`` (every data-parallel process but rank 0) trains the
    same updates but writes nothing: no log, no checkpoint, no final model (a ``sharded`` trainer's
    process still takes part in gathering each checkpoint's weights). ``on_update(step,
    metrics)`` is called after each update (a progress bar). Returns the last record logged.
    """
    run_dir = Path(run_dir)
    optimizer = settings.optimizer
    sampler = LengthBucketSampler(
        [e.seconds for e in train_data.examples], settings.batch_seconds,
        seed=settings.seed, window=settings.bucket_window,
    )
    fingerprint = data_fingerprint(train_data)
    sharded = getattr(trainer, "sharded", False)
    checkpoint = run.resolve_resume(run_dir, resume)
    if checkpoint is not None:
        state = run.load_trainer_state(checkpoint)
        _check_resumable(state, settings, fingerprint, checkpoint)
        trainer.load_model(checkpoint)
        from ..io.safetensors_file import read_safetensors

        trainer.load_state_dict(read_safetensors(checkpoint / OPTIMIZER_NAME))
        step, position = int(state["step"]), Position.from_dict(state["position"])
        rng = run.restore_generator(state["rng"])
    else:
        step, position, rng = 0, Position(), np.random.default_rng(settings.seed)
    if writer:
        log = run.RunLog(run_dir, resume_step=step if checkpoint is not None or resume else None)
    else:
        log = _NoLog()
    board = run.TensorBoardWriter(run_dir / "tensorboard") if tensorboard and writer else None

    def record(values: Dict) -> Dict:
        log.write(values)
        if board is not None:
            numbers = {k: v for k, v in values.items() if k != "step" and isinstance(v, (int, float))}
            board.add_scalars(values["step"], numbers)
        return values

    def save(next_position: Position) -> None:
        if not writer:
            if sharded:  # gathering sharded weights takes every process; the writer alone writes them
                trainer.save_model(None)
                trainer.state_dict()
            return

        def write_files(directory: Path) -> None:
            from ..io.safetensors_file import write_safetensors

            trainer.save_model(directory)
            if write_processor is not None:
                write_processor(directory)
            write_safetensors(trainer.state_dict(), directory / OPTIMIZER_NAME)

        trainer_state = {
            "position": next_position.to_dict(),
            "rng": run.generator_state(rng),
            "settings": settings.to_dict(),
            "data_fingerprint": fingerprint,
            "backend": getattr(trainer, "backend", None),
        }
        run.save_checkpoint(run_dir, step, write_files, trainer_state, keep_last=settings.keep_last)

    last: Dict = {}
    window_losses, window_audio, window_time = [], 0.0, 0.0
    micro_batches, micro_audio = [], 0.0
    try:
        if step >= settings.max_steps:
            return last
        for batch_position, indices in sampler.iterate(position):
            examples = [train_data.examples[i] for i in indices]
            micro_batches.append(collator(examples, rng=rng))
            micro_audio += sum(e.seconds for e in examples)
            if len(micro_batches) < optimizer.gradient_accumulation_steps:
                continue
            step += 1
            rate = learning_rate(optimizer, step)
            started = clock()
            metrics = trainer.train_step(micro_batches, rate)
            window_time += clock() - started
            if on_update is not None:
                on_update(step, metrics)
            window_losses.append(float(metrics["loss"]))
            window_audio += micro_audio
            micro_batches, micro_audio = [], 0.0
            if step % settings.log_every == 0 or step == settings.max_steps:
                last = record({
                    "step": step, "epoch": batch_position.epoch, "loss": float(np.mean(window_losses)),
                    "learning_rate": rate, "grad_norm": metrics.get("grad_norm"),
                    "audio_seconds_per_second": window_audio / window_time if window_time > 0 else None,
                })
                window_losses, window_audio, window_time = [], 0.0, 0.0
            if evaluate is not None and (
                (settings.eval_every and step % settings.eval_every == 0) or step == settings.max_steps
            ):
                last = record({"step": step, **{f"eval/{k}": v for k, v in evaluate(trainer).items()}})
            if (settings.save_every and step % settings.save_every == 0) or step == settings.max_steps:
                save(sampler.after(batch_position))
            if step >= settings.max_steps:
                break
        if writer:
            run.publish_model(run.latest_checkpoint(run_dir), run_dir)
    finally:
        log.close()
        if board is not None:
            board.close()
    return last


class _NoLog:
    def write(self, record: Dict) -> None:
        pass

    def close(self) -> None:
        pass


def _check_resumable(state: Dict, settings: TrainSettings, fingerprint: str, checkpoint: Path) -> None:
    if state.get("data_fingerprint") != fingerprint:
        raise ValueError(f"{checkpoint}: the training data differs from the data this run was started with")
    saved = state.get("settings", {})
    for name in _STREAM_SETTINGS:
        if saved.get(name) != getattr(settings, name):
            raise ValueError(
                f"{checkpoint}: the run was started with {name}={saved.get(name)!r}, now {getattr(settings, name)!r}; "
                f"a resumed run must keep it to see the same batches"
            )
    accumulation = saved.get("optimizer", {}).get("gradient_accumulation_steps")
    if accumulation != settings.optimizer.gradient_accumulation_steps:
        raise ValueError(
            f"{checkpoint}: the run was started with gradient_accumulation_steps={accumulation!r}, "
            f"now {settings.optimizer.gradient_accumulation_steps!r}"
        )
