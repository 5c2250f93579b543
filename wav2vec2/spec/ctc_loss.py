"""Reference CTC loss: the forward algorithm in log space, float64, NumPy only.

The semantics are those of ``torch.nn.functional.ctc_loss`` as Wav2Vec2ForCTC calls it; the backends'
losses are tested against this function.
"""
from __future__ import annotations

from typing import Union

import numpy as np

_REDUCTIONS = ("sum", "mean", "none")


def _logsumexp3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Elementwise log(exp(a) + exp(b) + exp(c)), exact when some terms are -inf."""
    return np.logaddexp(np.logaddexp(a, b), c)


def _check_inputs(log_probs, labels, input_lengths, blank, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must have shape (batch, frames, vocab), got {log_probs.shape}")
    batch_size, num_frames, vocab_size = log_probs.shape
    if labels.ndim != 2 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size}, max_label_len), got {labels.shape}")
    if input_lengths.shape != (batch_size,):
        raise ValueError(f"input_lengths must have shape ({batch_size},), got {input_lengths.shape}")
    if np.any(input_lengths < 0) or np.any(input_lengths > num_frames):
        raise ValueError(f"input_lengths must lie in [0, {num_frames}] (frames of log_probs), got {input_lengths}")
    if not 0 <= blank < vocab_size:
        raise ValueError(f"blank must lie in [0, {vocab_size}) (vocab of log_probs), got {blank}")
    if np.any(labels >= vocab_size):
        raise ValueError(f"labels must be < vocab size {vocab_size}, got max {labels.max()}")
    if np.any(labels == blank):
        raise ValueError(f"labels must not contain the blank id {blank}")


def _pack_targets(labels: np.ndarray, blank: int):
    """Targets interleaved with blanks, padded: (batch, 2 * max_target_len + 1), and target lengths.

    The targets of a row are its labels >= 0, in order (padding may be any negative value).
    """
    target_lengths = (labels >= 0).sum(axis=1)
    num_states = 2 * int(target_lengths.max(initial=0)) + 1
    extended = np.full((labels.shape[0], num_states), blank, dtype=np.int64)
    for b, row in enumerate(labels):
        targets = row[row >= 0]
        extended[b, 1 : 2 * targets.size : 2] = targets
    return extended, target_lengths


def ctc_loss(
    log_probs,
    labels,
    input_lengths,
    *,
    blank: int = 0,
    reduction: str = "sum",
    zero_infinity: bool = False,
) -> Union[float, np.ndarray]:
    """Negative log-likelihood of ``labels`` under CTC, per utterance then reduced.

    log_probs: (batch, frames, vocab), log-probabilities (used as given, not re-normalised).
    labels: (batch, max_label_len) class ids, padded with any negative value (e.g. -100).
    input_lengths: (batch,) valid frames per utterance.
    reduction: "none" gives the (batch,) losses; "sum" their sum; "mean" divides each loss by its
    target length (at least 1) and averages over the batch. An impossible alignment costs inf;
    zero_infinity=True makes it 0.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    input_lengths = np.asarray(input_lengths, dtype=np.int64)
    _check_inputs(log_probs, labels, input_lengths, blank, reduction)
    batch_size, num_frames, _ = log_probs.shape

    extended, target_lengths = _pack_targets(labels, blank)  # (batch, states), (batch,)
    num_states = extended.shape[1]
    # A state may skip the blank before it when it is a label that differs from the label two back.
    can_skip = np.zeros(extended.shape, dtype=bool)
    can_skip[:, 2:] = (extended[:, 2:] != blank) & (extended[:, 2:] != extended[:, :-2])

    # alpha[b, s]: log-probability of all paths through frames 0..t that end in state s.
    # A path starts on the leading blank or on the first label.
    alpha = np.full((batch_size, num_states), -np.inf)
    if num_frames > 0:
        emit = np.take_along_axis(log_probs[:, 0, :], extended, axis=1)  # (batch, states)
        alpha[:, :2] = emit[:, :2]
    for t in range(1, num_frames):
        from_one_back = np.pad(alpha[:, :-1], ((0, 0), (1, 0)), constant_values=-np.inf)
        from_two_back = np.pad(alpha[:, :-2], ((0, 0), (2, 0)), constant_values=-np.inf)
        from_two_back = np.where(can_skip, from_two_back, -np.inf)
        emit = np.take_along_axis(log_probs[:, t, :], extended, axis=1)
        stepped = _logsumexp3(alpha, from_one_back, from_two_back) + emit
        # Utterances whose frames have run out keep their final alpha.
        alpha = np.where((t < input_lengths)[:, None], stepped, alpha)

    # A complete path ends on the last label or on the blank after it.
    last_blank = np.take_along_axis(alpha, (2 * target_lengths)[:, None], axis=1)[:, 0]
    last_label = np.take_along_axis(alpha, np.maximum(2 * target_lengths - 1, 0)[:, None], axis=1)[:, 0]
    last_label = np.where(target_lengths > 0, last_label, -np.inf)
    losses = -np.logaddexp(last_blank, last_label)  # (batch,)
    # With no frames at all, only the empty target is possible, at probability 1.
    losses = np.where(input_lengths == 0, np.where(target_lengths == 0, 0.0, np.inf), losses)

    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return float(losses.sum())
    return float((losses / np.maximum(target_lengths, 1)).mean())
