"""CTC prefix beam search with a KenLM language model: the reference decoder's (pyctcdecode's) search,
for one utterance or a batch (``search.py`` and its compiled kernel ``kernel.py`` hold the computation).

The search, frame by frame (as the reference does it, so that the same logits give the same text):
- a beam is (finished words, word in progress, last label), with its acoustic log-score;
- each frame offers the labels whose log-probability is at least ``token_min_logp``, and the frame's
  best label; every beam is extended by every offered label: the blank and a repeat of the last
  label keep the prefix, the space finishes the word in progress, any other label is appended to it;
- extensions that reach the same beam are merged: their scores are log-added, the merged beam takes
  the place of the first and the word frames of the last;
- each beam is ranked by acoustic score + language-model score (``language_model.py``); beams more
  than ``-beam_prune_logp`` below the best are dropped, then all but the best ``beam_width``
  (ties keep their order); ``prune_history`` also keeps only the best of beams that agree on the
  last (LM order - 1) words, the word in progress and the last label;
- after the last frame the word in progress is finished, beams with the same text are merged,
  the sentence end is scored and the beams are ranked once more.

Scores follow the reference's arithmetic, including its NumPy types: log-probabilities from logits
are float64; from probabilities (rows summing to 1) they keep the input's dtype, and sums stay in it.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.pool
import os
import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import search
from .alphabet import BLANK, spellings_are_unique
from .language_model import Hotwords, LanguageModel

logger = logging.getLogger(__name__)

DEFAULT_BEAM_WIDTH = 100
DEFAULT_BEAM_PRUNE_LOGP = -10.0
DEFAULT_TOKEN_MIN_LOGP = -5.0
DEFAULT_PRUNE_HISTORY = False
DEFAULT_HOTWORD_WEIGHT = 10.0
# Probabilities are clipped here before the log, so that no label is impossible.
MIN_PROBABILITY = 1e-15


@dataclass
class Beam:
    """One hypothesis: its text, each word with its (start, end) frames, the acoustic log-score and
    the total score (acoustic + language model + hotwords) it was ranked by."""

    text: str
    word_frames: List[Tuple[str, Tuple[int, int]]]
    logit_score: float
    lm_score: float


def log_probabilities(logits) -> np.ndarray:
    """(frames, labels) log-probabilities, as the reference makes them: the log of ``logits`` when
    its rows sum to 1 on average (probabilities), else their log-softmax; clipped at log(1e-15)."""
    x = np.asarray(logits)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"logits must be numbers, got dtype {x.dtype}")
    if len(x) and math.isclose(x.sum(axis=1).mean(), 1):
        return np.log(np.clip(x, MIN_PROBABILITY, 1))
    top = np.amax(x, axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0
    shifted = x - top
    with np.errstate(divide="ignore"):
        log_total = np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    # The bound is a float64 scalar: float32 logits come out float64, as in the reference.
    return np.clip(shifted - log_total, np.log(MIN_PROBABILITY), 0)


_DECODERS = weakref.WeakValueDictionary()  # key -> decoder: how forked pool workers find theirs


def _rebuild(key: bytes, attributes: dict) -> "BeamSearchDecoder":
    decoder = _DECODERS.get(key)
    if decoder is None:
        raise RuntimeError(
            "this process does not have the decoder: pass a fork-context pool made after the decoder, or a thread pool"
        )
    decoder.language_model.set_attributes(**attributes)
    return decoder


def _decode_part(args):
    decoder, log_probs, options = args
    return decoder._search(log_probs, **options)


class BeamSearchDecoder:
    """Beam search over an alphabet (``alphabet.build_alphabet``) with a ``LanguageModel``.

    ``decode_beams(logits)`` decodes one (frames, labels) array, ``decode_beams_batch(logits_list)``
    many at once (faster per utterance than one by one). Both return beams best first.
    """

    def __init__(self, labels: Sequence[str], language_model: LanguageModel):
        self.labels = list(labels)
        if BLANK not in self.labels:
            raise ValueError("the alphabet has no blank label ''")
        self.language_model = language_model
        # Labels compare by text, as in the reference: equal labels (two blanks) are one label.
        self._canonical = [self.labels.index(label) for label in self.labels]
        self._blank = self.labels.index(BLANK)
        self._unique_spellings = spellings_are_unique(self.labels)
        self._key = os.urandom(16)
        _DECODERS[self._key] = self

    def __repr__(self):
        return f"BeamSearchDecoder({len(self.labels)} labels, {self.language_model!r})"

    def __reduce__(self):
        # Pool workers get the decoder they inherited (fork), with the current weights.
        return _rebuild, (self._key, self.language_model.attributes)

    def decode_beams(self, logits, **options) -> List[Beam]:
        """Beams for one utterance's (frames, labels) logits, log-probabilities or probabilities.

        Options (the reference's defaults): beam_width=100, beam_prune_logp=-10.0,
        token_min_logp=-5.0, prune_history=False, hotwords=None, hotword_weight=10.0.
        """
        return self.decode_beams_batch([logits], **options)[0]

    def decode_beams_batch(
        self,
        logits_list,
        pool=None,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_BEAM_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_TOKEN_MIN_LOGP,
        prune_history: bool = DEFAULT_PRUNE_HISTORY,
        hotwords: Optional[Sequence[str]] = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
    ) -> List[List[Beam]]:
        """Beams for each (frames, labels) array of ``logits_list``, in order.

        pool: None decodes the batch here, all utterances together; a ``multiprocessing`` pool
        (fork context, made after this decoder), a thread pool or a ``concurrent.futures``
        executor decodes it in parts, one per worker. Other process pools (spawn, forkserver)
        cannot see this decoder's language model: the batch is decoded here, with a warning.
        """
        if isinstance(hotwords, str):
            raise ValueError("hotwords must be a list of words or phrases, not one string")
        if int(beam_width) < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        if not float(beam_prune_logp) <= 0:
            raise ValueError(f"beam_prune_logp must be 0 or less (a log-probability margin), got {beam_prune_logp}")
        options = dict(
            beam_width=int(beam_width), beam_prune_logp=float(beam_prune_logp), token_min_logp=float(token_min_logp),
            prune_history=bool(prune_history), hotwords=list(hotwords or ()), hotword_weight=float(hotword_weight),
        )
        log_probs = [self._log_probabilities(logits, f"logits[{i}]") for i, logits in enumerate(logits_list)]
        workers = _pool_workers(pool)
        if not workers or len(log_probs) < 2:
            return self._search(log_probs, **options)
        # Longest first, dealt round-robin: parts of similar total length.
        order = sorted(range(len(log_probs)), key=lambda i: -len(log_probs[i]))
        parts = [order[w::workers] for w in range(min(workers, len(order)))]
        results = [None] * len(log_probs)
        done = pool.map(_decode_part, [(self, [log_probs[i] for i in part], options) for part in parts])
        for part, beams in zip(parts, done):
            for i, utterance_beams in zip(part, beams):
                results[i] = utterance_beams
        return results

    def _log_probabilities(self, logits, name: str) -> np.ndarray:
        array = np.asarray(logits)
        if array.ndim != 2 or array.shape[1] != len(self.labels):
            raise ValueError(f"{name} must have shape (frames, {len(self.labels)}) for this decoder, got {array.shape}")
        log_probs = log_probabilities(array)
        if np.isnan(log_probs).any():
            raise ValueError(f"{name} holds NaN or +inf")
        return log_probs

    # ------------------------------------------------------------------ the search
    def _search(self, log_probs, beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight):
        """Beams of each utterance; utterances of one score dtype are searched together."""
        settings = search.Settings(
            self._canonical, self._blank, self._unique_spellings, beam_width, beam_prune_logp, prune_history,
        )
        results = [None] * len(log_probs)
        for dtype in dict.fromkeys(lp.dtype for lp in log_probs):
            group = [i for i, lp in enumerate(log_probs) if lp.dtype == dtype]
            beams = search.decode([log_probs[i] for i in group], self.labels, self.language_model,
                                  Hotwords(hotwords, hotword_weight), settings, token_min_logp)
            for i, utterance_beams in zip(group, beams):
                results[i] = [Beam(*beam) for beam in utterance_beams]
        return results


def _pool_workers(pool) -> int:
    """How many workers ``pool`` decodes with; 0 when the batch must be decoded in this process."""
    if pool is None:
        return 0
    if isinstance(pool, multiprocessing.pool.ThreadPool):
        return pool._processes
    if isinstance(pool, multiprocessing.pool.Pool):
        if pool._ctx.get_start_method() != "fork":
            logger.warning("the pool's workers are not forked: they cannot see the language model; decoding here")
            return 0
        return pool._processes
    context = getattr(pool, "_mp_context", None)  # concurrent.futures.ProcessPoolExecutor
    if context is not None and context.get_start_method() != "fork":
        logger.warning("the pool's workers are not forked: they cannot see the language model; decoding here")
        return 0
    workers = getattr(pool, "_max_workers", None)
    if workers is None or not hasattr(pool, "map"):
        raise ValueError(f"pool must be a multiprocessing pool or a concurrent.futures executor, got {type(pool).__name__}")
    return workers
