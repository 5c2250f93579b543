"""The framework-free arithmetic of a training step: how a batch is split over data-parallel
workers, how each worker's loss is weighted, clipping and the Gumbel temperature.

Every backend computes the same objective for an update made of micro-batches ``b_1 .. b_m``:

    objective = (1 / m) * sum_k L(b_k)

where ``L`` is the model's loss over a whole micro-batch: CTC with ``ctc_loss_reduction`` ("mean":
each utterance's loss over its target length, averaged over the utterances; "sum": added), mean
cross-entropy for classification, and for pretraining the contrastive plus weighted diversity loss
divided by the number of masked frames (as the reference's pretraining script normalises it).

Split over ``world`` workers, worker r takes the rows ``shard_rows(n, r, world)`` of each
micro-batch and weights its loss ``l_r`` by ``loss_weight``, so that ``sum_r w_r * l_r = L``
exactly for CTC and classification (for pretraining the diversity term, a function of the whole
batch, is approximated by the workers' parts). Summing the workers' gradients then gives the
gradient of the single-worker objective. A worker with no row (fewer rows than workers) runs the
first row with weight 0, so that every worker takes part in every collective.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

GRADIENT_CLIP_EPSILON = 1e-6  # as torch.nn.utils.clip_grad_norm_


def shard_rows(rows: int, rank: int, world: int) -> Tuple[np.ndarray, bool]:
    """(row indices of worker ``rank``, whether they are real): contiguous, nearly equal parts;
    a worker left without rows gets row 0, marked not real (its loss weight is 0)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    bounds = np.linspace(0, rows, world + 1).round().astype(np.int64)
    indices = np.arange(bounds[rank], bounds[rank + 1])
    if indices.size == 0:
        return np.zeros(1, np.int64), False
    return indices, True


def take_rows(batch: Dict[str, np.ndarray], indices: np.ndarray) -> Dict[str, np.ndarray]:
    """The rows ``indices`` of every array of a batch (None values stay None).

    Pretraining negatives are flat indices into (batch x frames): they are rebased onto the rows
    kept, so a shard needs them to point into itself (``Collator`` draws them within each row)."""
    out = {}
    for key, value in batch.items():
        if value is None:
            out[key] = None
        elif key == "sampled_negative_indices":
            frames = value.shape[1]
            rows = value[indices]
            offsets = (indices - np.arange(indices.size))[:, None, None] * frames
            out[key] = (rows - offsets).astype(value.dtype)
        else:
            out[key] = value[indices]
    return out


def loss_weight(task: str, config, batch: Dict[str, np.ndarray], indices: np.ndarray, real: bool) -> float:
    """The weight of a worker's loss on the rows ``indices`` of a micro-batch (module docstring)."""
    if not real:
        return 0.0
    rows = len(batch["input_values"])
    if task == "pretraining":
        return 1.0  # the worker's summed loss is divided by the batch's masked frames: pretraining_scale
    if task == "ctc" and config.ctc_loss_reduction == "sum":
        return 1.0
    return len(indices) / rows


def pretraining_scale(batch: Dict[str, np.ndarray]) -> float:
    """1 / (masked frames of the whole micro-batch): the normalisation of the pretraining loss."""
    return 1.0 / max(int(np.asarray(batch["mask_time_indices"]).sum()), 1)


def shards(task: str, config, batch: Dict[str, np.ndarray], world: int) -> List[Tuple[Dict[str, np.ndarray], float]]:
    """(sub-batch, loss weight) for each of ``world`` workers; the weights include the pretraining
    normalisation, so each worker minimises ``weight * its summed or mean loss``."""
    scale = pretraining_scale(batch) if task == "pretraining" else 1.0
    out = []
    for rank in range(world):
        indices, real = shard_rows(len(batch["input_values"]), rank, world)
        out.append((take_rows(batch, indices), loss_weight(task, config, batch, indices, real) * scale))
    return out


def clip_coefficient(norm: float, max_norm) -> float:
    """The factor gradients are multiplied by: min(1, max_norm / (norm + 1e-6)), 1 without clipping."""
    if max_norm is None:
        return 1.0
    return min(1.0, float(max_norm) / (float(norm) + GRADIENT_CLIP_EPSILON))


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of the framework's own randomness (dropout, LayerDrop, Gumbel noise) in update
    ``step`` on worker ``rank``: a pure function of the three, so a resumed run draws what the
    uninterrupted one drew without any generator state in the checkpoint."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, np.uint32)[0])


def gumbel_temperature(step: int, maximum: float = 2.0, minimum: float = 0.5, decay: float = 0.999995) -> float:
    """The Gumbel-softmax temperature of update ``step`` (1-based) in pretraining, decayed as in the
    reference's pretraining script: max(maximum * decay ** (step - 1), minimum)."""
    return max(maximum * decay ** (step - 1), minimum)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_batch(batch: Dict[str, np.ndarray], config, *, rows_multiple: int = 1, frames_multiple: int = 1,
              labels_multiple: int = 1) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """A batch padded to fixed shapes (for compilers that specialise on shapes, and for a batch
    axis that splits evenly over devices), and the weight of each row (1 real, 0 padding).

    Rows are added as copies of row 0 with no masked frame; samples (only when the batch has an
    attention mask, which hides them) to a whole number of ``frames_multiple`` frames; CTC labels
    with -100. Masks are padded with False and negatives rebased onto the new frame count, so the
    real rows' losses are unchanged.
    """
    values = batch["input_values"]
    rows, samples = values.shape
    new_rows = _round_up(rows, rows_multiple)
    new_samples = samples
    if batch.get("attention_mask") is not None and frames_multiple > 1:
        from ..spec.lengths import feat_extract_output_lengths, min_input_length

        ratio = config.inputs_to_logits_ratio
        frames = int(feat_extract_output_lengths(config, samples, add_adapter=False))
        target = _round_up(max(frames, 1), frames_multiple)
        # The fewest samples giving ``target`` frames: the receptive field plus a hop per extra frame.
        new_samples = max(samples, min_input_length(config, add_adapter=False) + (target - 1) * ratio)
    out = {}
    for key, value in batch.items():
        if value is None:
            out[key] = None
            continue
        if key == "input_values" or key == "attention_mask":
            padded = np.zeros((new_rows, new_samples), value.dtype)
            padded[:rows, :samples] = value
            padded[rows:] = padded[0]
        elif key == "labels" and value.ndim == 2:
            width = _round_up(max(value.shape[1], 1), labels_multiple)
            padded = np.full((new_rows, width), -100, value.dtype)
            padded[:rows, : value.shape[1]] = value
            padded[rows:] = padded[0]
        elif key == "labels":
            padded = np.concatenate([value, np.repeat(value[:1], new_rows - rows)])
        elif key == "mask_feature_indices":
            padded = np.zeros((new_rows, value.shape[1]), bool)
            padded[:rows] = value
        else:  # frame-level arrays: mask_time_indices, sampled_negative_indices
            padded = value
        out[key] = padded
    frames = out["mask_time_indices"].shape[1] if out.get("mask_time_indices") is not None else None
    if frames is not None:
        from ..spec.lengths import feat_extract_output_lengths

        new_frames = int(feat_extract_output_lengths(config, new_samples, add_adapter=False))
        mask = np.zeros((new_rows, new_frames), bool)
        mask[:rows, :frames] = batch["mask_time_indices"]
        out["mask_time_indices"] = mask
        negatives = batch.get("sampled_negative_indices")
        if negatives is not None:
            row, frame = np.divmod(negatives.astype(np.int64), frames)
            rebased = np.zeros((new_rows, new_frames, negatives.shape[2]), np.int64)
            rebased[:rows, :frames] = row * new_frames + frame
            rebased += (np.arange(new_rows) * new_frames)[:, None, None] * (rebased == 0)
            out["sampled_negative_indices"] = rebased.astype(negatives.dtype)
    weights = np.zeros(new_rows, np.float32)
    weights[:rows] = 1.0
    return out, weights
