"""CTC greedy decoding and the frame offsets of what it emits. NumPy only.

A CTC head scores every frame; greedy decoding takes the best label per frame, merges runs of the
same label into one, then drops the blank. A letter spoken twice ("LL" in "HELLO") survives only
because the model puts a blank between the two runs, so merging must happen before the blank is
removed, never after.

Offsets are frame indices: ``start`` is the first frame of a run and ``end`` one past its last.
Multiply by ``config.inputs_to_logits_ratio / sampling_rate`` to get seconds.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class Segments(NamedTuple):
    """What greedy CTC emits for one utterance: one entry per label that survives collapsing."""

    ids: np.ndarray  # (n,) emitted label ids
    starts: np.ndarray  # (n,) first frame of each run
    ends: np.ndarray  # (n,) one past the last frame of each run


def greedy_ids(logits, lengths=None) -> np.ndarray:
    """Best label per frame: (..., frames, vocab) -> (..., frames) int64.

    With ``lengths`` (one per utterance of a (batch, frames, vocab) input), frames past an
    utterance's length are set to -1 so that nothing downstream mistakes padding for speech.
    """
    logits = np.asarray(logits)
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (..., frames, vocab), got {logits.shape}")
    ids = logits.argmax(axis=-1).astype(np.int64)
    if lengths is not None:
        if ids.ndim != 2:
            raise ValueError(f"lengths needs logits of shape (batch, frames, vocab), got {logits.shape}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != ids.shape[:1]:
            raise ValueError(f"expected {ids.shape[0]} lengths, got shape {lengths.shape}")
        ids[np.arange(ids.shape[1])[None, :] >= lengths[:, None]] = -1
    return ids


def runs(ids) -> Segments:
    """Run-length encoding of a 1-D id sequence: each run's id, first frame and end frame."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Segments(empty, empty, empty)
    # A run starts at frame 0 and wherever the id differs from the previous frame's.
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    ends = np.append(starts[1:], ids.size)
    return Segments(ids[starts], starts, ends)


def collapse(ids, blank_id: Optional[int], ignore_ids: Sequence[int] = (), group: bool = True) -> Segments:
    """Greedy CTC collapse of one frame-id sequence (frames,): merge repeats, then drop blanks.

    ``ignore_ids`` are removed before merging, as if those frames had not been emitted, but the
    offsets stay those of the original frames (a run A, <s>, A is one A spanning three frames).
    With ``group=False`` nothing is merged (each frame is its own entry), which is how label
    sequences, as opposed to model outputs, are decoded. Negative ids (padding) are always dropped.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    frames = np.arange(ids.size)
    keep = ids >= 0
    if len(ignore_ids):
        keep &= ~np.isin(ids, np.asarray(list(ignore_ids), dtype=np.int64))
    ids, frames = ids[keep], frames[keep]

    if group:
        merged = runs(ids)
        starts = frames[merged.starts]
        ends = frames[merged.ends - 1] + 1
        ids = merged.ids
    else:
        starts, ends = frames, frames + 1

    emitted = ids != blank_id if blank_id is not None else np.ones(ids.shape, dtype=bool)
    return Segments(ids[emitted], starts[emitted], ends[emitted])


def greedy_decode(logits, blank_id: int, lengths=None) -> List[Segments]:
    """Greedy CTC decoding of a batch: (batch, frames, vocab) logits -> one ``Segments`` per utterance."""
    ids = greedy_ids(logits, lengths)
    if ids.ndim != 2:
        raise ValueError(f"logits must have shape (batch, frames, vocab), got {np.shape(logits)}")
    return [collapse(row, blank_id) for row in ids]


def word_spans(is_delimiter) -> List[Tuple[int, int]]:
    """Index ranges [first, last) of the words in a sequence of emitted tokens.

    A word is a maximal run of tokens that are not word delimiters; delimiters at either end or
    several in a row produce no empty words.
    """
    is_delimiter = np.asarray(is_delimiter, dtype=bool).reshape(-1)
    in_word = np.concatenate(([False], ~is_delimiter, [False])).astype(np.int8)
    edges = np.diff(in_word)  # +1 where a word starts, -1 one past where it ends
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def word_offsets(segments: Segments, is_delimiter) -> List[Tuple[int, int, int, int]]:
    """(first, last, start_frame, end_frame) per word, from collapsed segments and a delimiter mask."""
    return [
        (first, last, int(segments.starts[first]), int(segments.ends[last - 1]))
        for first, last in word_spans(is_delimiter)
    ]
