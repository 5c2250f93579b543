"""Chunks in batches through the model: padded by the feature extractor, cut back to their frames."""
from __future__ import annotations

from typing import Iterable, Iterator, List

import numpy as np

from ..spec.lengths import feat_extract_output_lengths
from .inputs import Chunk


def batches(chunks: Iterable[Chunk], batch_size: int, equal_lengths_only: bool) -> Iterator[List[Chunk]]:
    """Consecutive chunks in batches of ``batch_size``. With ``equal_lengths_only`` (a checkpoint
    that takes no attention mask, whose output zero padding would change) a batch never mixes lengths."""
    batch: List[Chunk] = []
    for chunk in chunks:
        full = len(batch) == batch_size
        other_length = equal_lengths_only and batch and batch[0].values.size != chunk.values.size
        if full or other_length:
            yield batch
            batch = []
        batch.append(chunk)
    if batch:
        yield batch


def run_batch(ctc, batch: List[Chunk]) -> List[np.ndarray]:
    """The kept frames (frames, vocab) of each chunk of one batch."""
    padded = ctc.feature_extractor.pad(
        {"input_values": [chunk.values for chunk in batch]},
        padding="longest", return_attention_mask=ctc.takes_attention_mask, return_tensors="np",
    )
    logits = ctc.forward(padded["input_values"], padded.get("attention_mask"))
    # (batch, frames, vocab); each row is valid up to its own frame count.
    frames = feat_extract_output_lengths(ctc.config, np.asarray([chunk.values.size for chunk in batch]))
    return [logits[row, : frames[row]][chunk.keep] for row, chunk in enumerate(batch)]
