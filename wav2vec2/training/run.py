"""Run bookkeeping: ``log.jsonl``, TensorBoard scalars, and atomic, resumable checkpoints.

A run directory (``--output DIR``) holds
```
DIR/log.jsonl                 one JSON object per record: step, loss, learning_rate, grad_norm,
                              audio_seconds_per_second, eval metrics (eval/wer, eval/cer, ...)
DIR/tensorboard/              event files, when asked for (TensorBoardWriter)
DIR/checkpoint-<step>/        every --save-every updates; the last keep_last are kept
    config.json, weights      the model in the backend's own format (the library's writers)
    preprocessor_config.json, vocab.json, tokenizer_config.json, special_tokens_map.json
    optimizer.*               optimizer state, written by the backend (NumPy arrays in safetensors,
                              or the framework's own format)
    trainer_state.json        step, data position, the NumPy Generator's state, settings; written
                              last, so a directory without it is not a checkpoint
DIR/config.json, weights, ... the final model: a complete checkpoint directory
```
A checkpoint is written into a hidden staging directory (``DIR/.staging-checkpoint-<step>-*``) and
renamed into place when complete; a crash mid-write leaves the previous checkpoints as they were
and at most a staging directory, which the next save removes. ``latest_checkpoint`` finds the
newest complete one for ``--resume``.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np

TRAINER_STATE_NAME = "trainer_state.json"
LOG_NAME = "log.jsonl"
FORMAT_VERSION = 1
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_STAGING_PREFIX = ".staging-"


# ------------------------------------------------------------------------------------ the log
def _json_value(value):
    """Plain JSON numbers for NumPy scalars; NaN and infinities as null (JSON has neither)."""
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


class RunLog:
    """Appends records to ``DIR/log.jsonl``, one JSON object a line, flushed after each."""

    def __init__(self, run_dir, resume_step: Optional[int] = None):
        """``resume_step``: continuing from a checkpoint at that step, records after it (written
        before the run stopped) are dropped first, so the log reads as one uninterrupted run."""
        self.path = Path(run_dir) / LOG_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            _write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None and self.path.exists():
            raise FileExistsError(f"{self.path} exists: resume the run, or choose another output directory")
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: Dict) -> None:
        self._file.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_log(path) -> List[Dict]:
    """The records of a ``log.jsonl``; a last line cut short by a crash is ignored."""
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1 or lines[-1] == "":  # only the unterminated last line may be cut
                raise ValueError(f"{path}: line {number} is not valid JSON") from None
    return records


class TensorBoardWriter:
    """Scalars as TensorBoard event files, with the ``tensorboard`` package's record writer and
    protocol buffers only: no framework is imported (its ``summary.Writer`` would import TensorFlow
    when it is installed, through ``tensorboard.compat``)."""

    def __init__(self, log_dir):
        try:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs tensorboard: pip install 'wav2vec2[train]'") from None
        self._event_pb2 = event_pb2
        os.makedirs(log_dir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{os.uname().nodename}.{os.getpid()}"
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "wb")
        self._writer = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def add_scalars(self, step: int, values: Dict[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items() if v is not None
            ]
        )
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------------------------ checkpoints
def _write_atomically(path: Path, text: str) -> None:
    staged = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8")
    with staged as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def generator_state(rng: np.random.Generator) -> dict:
    """The JSON form of a Generator's state (its bit generator's name and integers)."""
    return rng.bit_generator.state


def restore_generator(state: dict) -> np.random.Generator:
    """A Generator in the saved ``state``; the bit generator must be one NumPy has."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937"):
        raise ValueError(f"unknown random bit generator {name!r} in the trainer state")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def checkpoint_step(path) -> Optional[int]:
    match = _CHECKPOINT.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir) -> List[Path]:
    """Complete checkpoints (with a trainer_state.json) of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        p for p in run_dir.iterdir()
        if p.is_dir() and checkpoint_step(p) is not None and (p / TRAINER_STATE_NAME).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir) -> Optional[Path]:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(run_dir, resume: Union[bool, str, os.PathLike]) -> Optional[Path]:
    """The checkpoint to resume from: ``True``/``"latest"`` is the newest in ``run_dir`` (None when
    there is none yet), a path is that checkpoint (which must be complete)."""
    if resume is False or resume is None:
        return None
    if resume is True or resume == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no {TRAINER_STATE_NAME})")
    return path


def save_checkpoint(
    run_dir, step: int, write_files: Callable[[Path], None], trainer_state: Dict, keep_last: Optional[int] = None
) -> Path:
    """Write ``DIR/checkpoint-<step>/`` atomically and prune to the newest ``keep_last``.

    ``write_files(staging_dir)`` writes the model, processor and optimizer files; then the trainer
    state is written and the directory renamed into place. A failure anywhere leaves the run's
    existing checkpoints untouched (and removes the staging directory).
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 or None, got {keep_last}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(_STAGING_PREFIX + "*"):  # left by a run that crashed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    final = run_dir / f"checkpoint-{step}"
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}checkpoint-{step}-", dir=run_dir))
    try:
        write_files(staging)
        state = {"format_version": FORMAT_VERSION, "step": int(step), **trainer_state}
        _write_atomically(staging / TRAINER_STATE_NAME, json.dumps(state, indent=2, sort_keys=True) + "\n")
        if final.exists():  # the same step saved again (a resumed run): swap, then drop the old one
            previous = run_dir / f"{_STAGING_PREFIX}replaced-{final.name}"
            os.replace(final, previous)
            os.replace(staging, final)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if keep_last is not None:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old)
    return final


def load_trainer_state(checkpoint_dir) -> Dict:
    path = Path(checkpoint_dir) / TRAINER_STATE_NAME
    from ..io.hub import read_json_object

    state = read_json_object(path)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: trainer state format {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    return state


def publish_model(checkpoint_dir, run_dir, files: Optional[List[str]] = None) -> List[Path]:
    """Copy a checkpoint's model and processor files (not the optimizer or trainer state) to the
    run directory, each staged beside its final name and renamed in, so ``DIR`` itself is a model
    directory that ``from_pretrained``, ``transcribe`` and ``convert`` load."""
    checkpoint_dir, run_dir = Path(checkpoint_dir), Path(run_dir)
    if files is None:
        files = [p.name for p in checkpoint_dir.iterdir() if p.is_file() and not _is_trainer_file(p.name)]
    written = []
    for name in sorted(files):
        target = run_dir / name
        tmp = run_dir / f".{name}.publishing"
        shutil.copyfile(checkpoint_dir / name, tmp)
        os.replace(tmp, target)
        written.append(target)
    return written


def _is_trainer_file(name: str) -> bool:
    return name == TRAINER_STATE_NAME or name.startswith("optimizer")
