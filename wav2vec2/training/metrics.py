"""Evaluation metrics: WER and CER with jiwer (the ``train`` extra), accuracy for classification.

WER and CER are corpus-level, as jiwer computes them: (substitutions + deletions + insertions)
over the number of reference words (characters, spaces included). Both sides are normalised with
``normalize_text`` first, so case and punctuation never count as errors.

``evaluate_ctc`` and ``evaluate_classification`` run a backend's forward (a function from a batch
to NumPy logits) over batches and score the results; decoding is greedy CTC with the tokenizer.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np

from ..spec.lengths import feat_extract_output_lengths
from .vocabulary import normalize_text


def _jiwer():
    try:
        import jiwer
    except ImportError:
        raise ImportError("WER and CER need jiwer: pip install 'wav2vec2[train]'") from None
    return jiwer


def _pairs(references: Sequence[str], hypotheses: Sequence[str]):
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no references to score")
    refs = [normalize_text(r) for r in references]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"reference {empty[0]} is empty after normalisation; it cannot be scored")
    return refs, [normalize_text(h) for h in hypotheses]


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate over the corpus."""
    refs, hyps = _pairs(references, hypotheses)
    return float(_jiwer().wer(refs, hyps))


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Character error rate over the corpus (spaces count as characters)."""
    refs, hyps = _pairs(references, hypotheses)
    return float(_jiwer().cer(refs, hyps))


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1 or labels.size == 0:
        raise ValueError(
            f"labels and predictions must be two equal, non-empty 1-D lists, got {labels.shape} and {predictions.shape}"
        )
    return float((labels == predictions).mean())


def ctc_transcripts(logits: np.ndarray, frame_lengths: Sequence[int], tokenizer) -> List[str]:
    """Greedy CTC transcripts of (batch, frames, vocab) logits, each cut to its valid frames."""
    ids = np.asarray(logits).argmax(-1)  # (batch, frames)
    return [tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(ids, frame_lengths)]


def frame_lengths(config, batch: Dict[str, np.ndarray]) -> np.ndarray:
    """Valid output frames of each utterance of a batch (the adapter included when the model has one)."""
    values = batch["input_values"]
    samples = batch["attention_mask"].sum(-1) if "attention_mask" in batch else np.full(len(values), values.shape[1])
    return np.asarray(feat_extract_output_lengths(config, samples.astype(np.int64)))


def evaluate_ctc(
    logits_fn: Callable[[dict], np.ndarray], batches: Iterable[dict], references: Iterable[List[str]], config, tokenizer
) -> Dict[str, float]:
    """WER and CER of greedy transcripts: ``logits_fn(batch)`` gives (batch, frames, vocab) logits;
    ``references`` gives each batch's transcripts."""
    refs, hyps = [], []
    for batch, batch_refs in zip(batches, references):
        hyps += ctc_transcripts(logits_fn(batch), frame_lengths(config, batch), tokenizer)
        refs += list(batch_refs)
    return {"wer": wer(refs, hyps), "cer": cer(refs, hyps), "examples": len(refs)}


def evaluate_classification(logits_fn: Callable[[dict], np.ndarray], batches: Iterable[dict]) -> Dict[str, float]:
    """Accuracy of ``argmax(logits_fn(batch))`` against each batch's ``labels``."""
    labels, predictions = [], []
    for batch in batches:
        predictions += list(np.asarray(logits_fn(batch)).argmax(-1))
        labels += list(batch["labels"])
    return {"accuracy": accuracy(labels, predictions), "examples": len(labels)}
