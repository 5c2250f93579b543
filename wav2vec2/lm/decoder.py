"""CTC prefix beam search with a KenLM language model: the reference decoder's (pyctcdecode's) search,
computed with NumPy over all beams, candidate labels and utterances of a batch at once.

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

import itertools
import logging
import math
import multiprocessing
import multiprocessing.pool
import os
import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .alphabet import BLANK, SPACE, spellings_are_unique
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


def _log_add(a, b):
    """log(exp(a) + exp(b)), in the reference's order of operations (scalars keep their NumPy type)."""
    if a >= b:
        return a + math.log(1 + math.exp(b - a))
    return b + math.log(1 + math.exp(a - b))


def _log_add_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_log_add`` elementwise: the correction term in float64 (as math.log computes it), the sum in a's dtype."""
    high, low = np.maximum(a, b), np.minimum(a, b)
    correction = np.log(1.0 + np.exp((low - high).astype(np.float64)))
    return high + correction.astype(a.dtype, copy=False)


def _join(text: str, word: str) -> str:
    if not word:
        return text
    return f"{text} {word}" if text else word


class _GrowingArray:
    """A 1-D array that is appended to in blocks (capacity doubles), read by fancy indexing."""

    def __init__(self, dtype, first=()):
        self.data = np.empty(1024, dtype)
        self.size = 0
        self.extend(first)

    def extend(self, values) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size:end] = values
        self.size = end


def _lookup(table: dict, keys: np.ndarray) -> np.ndarray:
    """table[key] for each key, -1 where absent."""
    return np.fromiter(map(table.get, keys.tolist(), itertools.repeat(-1)), np.int64, len(keys))


# Pair keys: text id * _PAIR + part id (ids stay far below 2**31).
_PAIR = 1 << 31


class _Prefixes:
    """Every prefix one search meets, each made and scored once, in batches (NumPy arrays of ids).

    A text is a sequence of finished words, a part a word in progress, a node a (text, part) pair:
    the prefix a beam spells. Texts and parts are told apart by their strings, so two spellings of
    one string are one prefix, as in the reference. A node's score is the one beams are ranked by:
    its text's (language model + hotwords) plus its part's (prefix score).
    """

    def __init__(self, labels: List[str], language_model: LanguageModel, hotwords: Hotwords, prune_history: bool):
        self.labels = labels
        self.num_labels = len(labels)
        self.space = labels.index(SPACE) if SPACE in labels else -1
        self.label_lengths = np.array([len(label) for label in labels], np.int64)
        self.lm = language_model
        self.hotwords = hotwords
        self.unigram_codes = language_model.trie.label_codes(labels)
        self.hotword_codes = hotwords.trie.label_codes(labels)
        self.prune_history = prune_history
        self.history_words = max(1, language_model.order - 1)  # the words that still change LM scores
        # parts: string, length, states in the unigram and hotword tries, score
        self.parts = [""]
        self.part_ids = {"": 0}
        self.part_children = {}  # part * num_labels + label -> part
        self.part_lengths = _GrowingArray(np.int64, [0])
        self.part_unigram_states = _GrowingArray(np.int64, [0])
        self.part_hotword_states = _GrowingArray(np.int64, [0])
        self.part_scores = _GrowingArray(np.float64, [0.0])
        # texts: string, KenLM state after it, LM score (no hotwords), hotwords in it, total score
        self.texts = [""]
        self.text_ids = {"": 0}
        self.text_children = {}  # text * _PAIR + part -> text with that part as its next word
        self.text_states = [language_model.start_state()]
        self.text_lm = [0.0]
        self.text_hotwords = [0]
        self.text_scores = _GrowingArray(np.float64, [0.0])
        self.history_ids = {(): 0}  # the last words of a text, as prune_history compares them
        self.text_histories = _GrowingArray(np.int64, [0])
        # nodes
        self.node_ids = {0: 0}  # text * _PAIR + part -> node
        self.node_children = {}  # node * num_labels + label -> node
        self.node_texts = _GrowingArray(np.int64, [0])
        self.node_parts = _GrowingArray(np.int64, [0])
        self.node_scores = _GrowingArray(np.float64, [0.0])
        self.node_origins = _GrowingArray(np.int64, [-1])  # parent * num_labels + label that made it
        self.node_history_ids = {0: 0}  # text history * _PAIR + part -> id
        self.node_histories = _GrowingArray(np.int64, [0])

    @property
    def num_nodes(self) -> int:
        return self.node_texts.size

    # ------------------------------------------------------------- scores without making prefixes
    def _extended_parts(self, parts: np.ndarray, labels: np.ndarray):
        """(lengths, unigram states, hotword states, scores) of parts with one label appended."""
        lengths = self.part_lengths.data[parts] + self.label_lengths[labels]
        unigram_states = self.lm.trie.walk(self.part_unigram_states.data[parts], self.unigram_codes[labels])
        scores = self.lm.prefix_scores(lengths, unigram_states)
        hotword_states = np.full(len(parts), -1, np.int64)
        if self.hotwords:
            hotword_states = self.hotwords.trie.walk(self.part_hotword_states.data[parts], self.hotword_codes[labels])
            hotword_scores = self.hotwords.prefix_scores(lengths, hotword_states)
            scores = np.where(np.isnan(hotword_scores), scores, hotword_scores)
        return lengths, unigram_states, hotword_states, scores

    def letter_scores(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The scores of the nodes that (node, letter label) pairs lead to, made or not."""
        *_, part_scores = self._extended_parts(self.node_parts.data[nodes], labels)
        return self.text_scores.data[self.node_texts.data[nodes]] + part_scores

    # ------------------------------------------------------------- making prefixes
    def children_of(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The node each (node, label) leads to, for labels that are neither the blank nor a repeat."""
        keys = nodes * self.num_labels + labels
        found = _lookup(self.node_children, keys)
        missing = np.flatnonzero(found < 0)
        if len(missing):
            new_keys, inverse = np.unique(keys[missing], return_inverse=True)
            parent, label = np.divmod(new_keys, self.num_labels)
            parent_text, parent_part = self.node_texts.data[parent], self.node_parts.data[parent]
            child = parent.copy()  # a space after a finished word stays where it is
            letter = np.flatnonzero(label != self.space)
            if len(letter):
                parts = self._parts_after(parent_part[letter], label[letter])
                child[letter] = self._nodes(parent_text[letter], parts, new_keys[letter])
            finish = np.flatnonzero((label == self.space) & (parent_part != 0))
            if len(finish):
                texts = self.texts_after(parent_text[finish], parent_part[finish])
                child[finish] = self._nodes(texts, np.zeros(len(finish), np.int64), new_keys[finish])
            self.node_children.update(zip(new_keys.tolist(), child.tolist()))
            found[missing] = child[inverse]
        return found

    def _parts_after(self, parts: np.ndarray, labels: np.ndarray) -> np.ndarray:
        keys = parts * self.num_labels + labels
        found = _lookup(self.part_children, keys)
        missing = np.flatnonzero(found < 0)
        if not len(missing):
            return found
        new_keys, inverse = np.unique(keys[missing], return_inverse=True)
        parent, label = np.divmod(new_keys, self.num_labels)
        ids, fresh = [], []
        for i, (part_id, label_id) in enumerate(zip(parent.tolist(), label.tolist())):
            string = self.parts[part_id] + self.labels[label_id]
            found_id = self.part_ids.get(string)
            if found_id is None:  # a new string (another spelling of a known one gets its id)
                found_id = self.part_ids[string] = len(self.parts)
                self.parts.append(string)
                fresh.append(i)
            ids.append(found_id)
        if fresh:
            lengths, unigram_states, hotword_states, scores = self._extended_parts(parent[fresh], label[fresh])
            self.part_lengths.extend(lengths)
            self.part_unigram_states.extend(unigram_states)
            self.part_hotword_states.extend(hotword_states)
            self.part_scores.extend(scores)
        self.part_children.update(zip(new_keys.tolist(), ids))
        found[missing] = np.array(ids, np.int64)[inverse]
        return found

    def texts_after(self, texts: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """The texts that (text, part) pairs make when the part is finished as a word."""
        keys = texts * _PAIR + parts
        found = _lookup(self.text_children, keys)
        missing = np.flatnonzero(found < 0)
        if not len(missing):
            return found
        new_keys, inverse = np.unique(keys[missing], return_inverse=True)
        ids, new_scores, new_histories = [], [], []
        for text_id, part_id in zip(*(k.tolist() for k in np.divmod(new_keys, _PAIR))):
            word = self.parts[part_id]
            text = _join(self.texts[text_id], word)
            found_id = self.text_ids.get(text)
            if found_id is None:
                score, state = self.lm.score_word(self.text_states[text_id], word)
                lm = self.text_lm[text_id] + score
                hotwords = self.text_hotwords[text_id] + (word in self.hotwords.words)
                found_id = self.text_ids[text] = len(self.texts)
                self.texts.append(text)
                self.text_states.append(state)
                self.text_lm.append(lm)
                self.text_hotwords.append(hotwords)
                new_scores.append(lm + self.hotwords.weight * hotwords)
                if self.prune_history:
                    history = tuple(text.split()[-self.history_words:])
                    new_histories.append(self.history_ids.setdefault(history, len(self.history_ids)))
            ids.append(found_id)
        self.text_scores.extend(new_scores)
        self.text_histories.extend(new_histories or np.zeros(len(new_scores), np.int64))
        self.text_children.update(zip(new_keys.tolist(), ids))
        found[missing] = np.array(ids, np.int64)[inverse]
        return found

    def _nodes(self, texts: np.ndarray, parts: np.ndarray, origins: np.ndarray) -> np.ndarray:
        keys = texts * _PAIR + parts
        found = _lookup(self.node_ids, keys)
        missing = np.flatnonzero(found < 0)
        if not len(missing):
            return found
        new_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
        new_ids = np.arange(self.num_nodes, self.num_nodes + len(new_keys))
        self.node_ids.update(zip(new_keys.tolist(), new_ids.tolist()))
        new_texts, new_parts = np.divmod(new_keys, _PAIR)
        text_scores = self.text_scores.data[new_texts]
        self.node_texts.extend(new_texts)
        self.node_parts.extend(new_parts)
        self.node_scores.extend(np.where(new_parts != 0, text_scores + self.part_scores.data[new_parts], text_scores))
        self.node_origins.extend(origins[missing[first]])
        if self.prune_history:
            history_keys = self.text_histories.data[new_texts] * _PAIR + new_parts
            histories = [self.node_history_ids.setdefault(k, len(self.node_history_ids)) for k in history_keys.tolist()]
            self.node_histories.extend(histories)
        found[missing] = new_ids[inverse]
        return found

    # ------------------------------------------------------------- the end of an utterance
    def final_text(self, node: int) -> Tuple[str, int, str]:
        """(the text with the word in progress finished, the node's text id, the word in progress)."""
        text_id, part = int(self.node_texts.data[node]), self.parts[self.node_parts.data[node]]
        return _join(self.texts[text_id], part), text_id, part

    def final_score(self, text_id: int, last_word: str) -> float:
        """The score of a text finished by ``last_word`` (maybe empty, as the reference scores it)
        with the sentence end."""
        score, _ = self.lm.score_word(self.text_states[text_id], last_word, is_last=True)
        hotwords = self.text_hotwords[text_id] + (last_word in self.hotwords.words)
        return self.text_lm[text_id] + score + self.hotwords.weight * hotwords


class _WordFrames:
    """The (start, end) frames of beams' finished words, as linked lists (-1 ends a list)."""

    def __init__(self):
        self.previous, self.starts, self.ends = [], [], []

    def push(self, previous: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        first = len(self.previous)
        self.previous.extend(previous.tolist())
        self.starts.extend(starts.tolist())
        self.ends.extend(ends.tolist())
        return np.arange(first, len(self.previous))

    def as_list(self, last: int) -> List[Tuple[int, int]]:
        frames = []
        while last >= 0:
            frames.append((self.starts[last], self.ends[last]))
            last = self.previous[last]
        return frames[::-1]


@dataclass
class _Beams:
    """The live beams of a batch, grouped by utterance (in ``utterances`` order), best first in each."""

    utterances: np.ndarray  # (U,) the utterances still being decoded
    counts: np.ndarray  # (U,) beams of each
    nodes: np.ndarray  # (B,) the prefix each beam spells
    last: np.ndarray  # (B,) its last label (canonical id; -1 before the first frame)
    scores: np.ndarray  # (B,) acoustic log-score
    words: np.ndarray  # (B,) its finished words' frames (_WordFrames list; -1: none)
    starts: np.ndarray  # (B,) first frame of the word in progress (-1: none)
    ends: np.ndarray  # (B,) frame after its last label (-1: none)

    def select(self, keep: np.ndarray, utterance_kept: np.ndarray) -> "_Beams":
        return _Beams(
            self.utterances[utterance_kept], self.counts[utterance_kept], self.nodes[keep], self.last[keep],
            self.scores[keep], self.words[keep], self.starts[keep], self.ends[keep],
        )


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
        self._canonical = np.array([self.labels.index(label) for label in self.labels], np.int64)
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
    def _search(self, log_probs: List[np.ndarray], **options) -> List[List[Beam]]:
        """Decode utterances together; those of another score dtype (probabilities) apart."""
        results = [None] * len(log_probs)
        for dtype in dict.fromkeys(lp.dtype for lp in log_probs):
            group = [i for i, lp in enumerate(log_probs) if lp.dtype == dtype]
            for i, beams in zip(group, self._search_together([log_probs[i] for i in group], **options)):
                results[i] = beams
        return results

    def _search_together(
        self, log_probs, beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight,
    ) -> List[List[Beam]]:
        dtype = log_probs[0].dtype
        prefixes = _Prefixes(self.labels, self.language_model, Hotwords(hotwords, hotword_weight), prune_history)
        word_frames = _WordFrames()
        lengths = np.array([len(lp) for lp in log_probs])
        first_frame = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # of each utterance in all_frames
        all_frames = np.concatenate(log_probs)  # (total frames, labels)
        offered, offered_start, offered_count = _offered_labels(all_frames, token_min_logp)
        prune_margin = np.asarray(beam_prune_logp, dtype)

        n = len(log_probs)
        beams = _Beams(
            np.arange(n), np.ones(n, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64),
            np.zeros(n, dtype), np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.full(n, -1, np.int64),
        )
        results = [None] * n
        for frame in range(int(lengths.max(initial=0)) + 1):
            finished = lengths[beams.utterances] == frame
            if finished.any():
                beam_utterance = np.repeat(finished, beams.counts)
                ends = np.cumsum(beams.counts)
                for i in np.flatnonzero(finished).tolist():
                    part = slice(ends[i] - beams.counts[i], ends[i])
                    results[beams.utterances[i]] = self._finish(
                        prefixes, word_frames, beams, part, beam_width, beam_prune_logp,
                    )
                beams = beams.select(~beam_utterance, ~finished)
            if not len(beams.utterances):
                break
            rows = first_frame[beams.utterances] + frame
            beams = self._step(
                frame, beams, all_frames, rows, offered, offered_start[rows], offered_count[rows],
                prefixes, word_frames, prune_margin, beam_width, prune_history,
            )
        return results

    def _step(
        self, frame, beams, all_frames, rows, offered, offered_start, offered_count,
        prefixes, word_frames, prune_margin, beam_width, prune_history,
    ) -> _Beams:
        """Extend every beam by every offered label of this frame, merge, score and prune."""
        # Pairs (utterance u, offered label k, beam j of u), in the reference's loop order.
        beam_start = np.cumsum(beams.counts) - beams.counts
        pairs_per_utterance = offered_count * beams.counts
        pair_utterance = np.repeat(np.arange(len(beams.utterances)), pairs_per_utterance)  # (P,)
        within = np.arange(len(pair_utterance)) - np.repeat(np.cumsum(pairs_per_utterance) - pairs_per_utterance, pairs_per_utterance)
        beams_of = beams.counts[pair_utterance]
        label = offered[offered_start[pair_utterance] + within // beams_of]  # (P,)
        beam = beam_start[pair_utterance] + within % beams_of  # (P,)

        canonical = self._canonical[label]
        parent = beams.nodes[beam]
        stays = (canonical == self._blank) | (canonical == beams.last[beam])
        num_nodes = prefixes.num_nodes
        target, target_scores = self._targets(prefixes, beams, pair_utterance, parent, canonical, np.flatnonzero(~stays))
        scores = beams.scores[beam] + all_frames[rows[pair_utterance], label]

        # Merge pairs that reach the same (utterance, target, last label).
        key = (pair_utterance * (num_nodes * (len(self.labels) + 1)) + target) * len(self.labels) + canonical
        by_key = np.argsort(key, kind="stable")
        sorted_key = key[by_key]
        starts_group = np.flatnonzero(np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]]))
        sizes = np.diff(np.append(starts_group, len(key)))
        merged = scores[by_key[starts_group]]
        for k in range(1, int(sizes.max())):
            grows = np.flatnonzero(sizes > k)
            merged[grows] = _log_add_arrays(merged[grows], scores[by_key[starts_group[grows] + k]])
        # A merged beam stands where its first pair stood, with the last pair's word frames.
        in_order = np.argsort(by_key[starts_group])
        leader = by_key[starts_group + sizes - 1][in_order]  # (M,)
        merged = merged[in_order]
        merged_utterance = pair_utterance[leader]
        ranked_by = merged + target_scores[leader].astype(merged.dtype, copy=False)

        # Prune: a margin below each utterance's best, then the best beam_width (stable among ties).
        group_start = np.flatnonzero(np.concatenate([[True], merged_utterance[1:] != merged_utterance[:-1]]))
        best = np.maximum.reduceat(ranked_by, group_start)
        kept = np.flatnonzero(ranked_by >= best[merged_utterance] + prune_margin)
        kept = kept[np.argsort(-ranked_by[kept], kind="stable")]
        kept = kept[np.argsort(merged_utterance[kept], kind="stable")]
        counts = np.bincount(merged_utterance[kept], minlength=len(beams.utterances))
        rank = np.arange(len(kept)) - np.repeat(np.cumsum(counts) - counts, counts)
        kept = kept[rank < beam_width]
        pair = leader[kept]  # the pair that leads each survivor
        nodes = target[pair]
        unmade = np.flatnonzero(nodes >= num_nodes)
        if len(unmade):
            nodes[unmade] = prefixes.children_of(parent[pair[unmade]], canonical[pair[unmade]])
        if prune_history:
            history = prefixes.node_histories.data[nodes]
            key = (merged_utterance[kept] * len(prefixes.node_history_ids) + history) * len(self.labels) + canonical[pair]
            first = np.sort(np.unique(key, return_index=True)[1])
            kept, pair, nodes = kept[first], pair[first], nodes[first]
        counts = np.bincount(merged_utterance[kept], minlength=len(beams.utterances))

        # Word frames of the survivors.
        from_beam = beam[pair]
        starts, ends, words = beams.starts[from_beam], beams.ends[from_beam], beams.words[from_beam].copy()
        is_blank = canonical[pair] == self._blank
        is_repeat = stays[pair] & ~is_blank
        is_space = ~stays[pair] & (canonical[pair] == prefixes.space)
        is_letter = ~stays[pair] & ~is_space
        finishes_word = np.flatnonzero(is_space & (prefixes.node_parts.data[parent[pair]] != 0))
        if len(finishes_word):
            words[finishes_word] = word_frames.push(
                words[finishes_word], starts[finishes_word], ends[finishes_word],
            )
        new_starts = np.where(is_letter & (starts < 0), frame, starts)
        new_starts[is_space] = -1
        new_ends = np.where(is_blank, ends, frame + 1)
        new_ends[is_space] = -1
        return _Beams(
            beams.utterances, counts, nodes, canonical[pair], merged[kept], words, new_starts, new_ends,
        )

    def _targets(self, prefixes, beams, pair_utterance, parent, label, moves):
        """Where each pair goes and the score of getting there.

        The blank and repeats stay at their node. With unique spellings, a label leads from a node
        to a child that only (node, label) makes: a pair whose child is not a live beam is named
        ``num_nodes + node * labels + label`` and scored without making the child (most are pruned
        at once). Otherwise every child is made.
        """
        target = parent.copy()
        target_scores = prefixes.node_scores.data[parent]
        if not len(moves):
            return target, target_scores
        if not self._unique_spellings:
            target[moves] = prefixes.children_of(parent[moves], label[moves])
            target_scores[moves] = prefixes.node_scores.data[target[moves]]
            return target, target_scores
        num_nodes, num_labels = prefixes.num_nodes, len(self.labels)
        from_node, by_label = parent[moves], label[moves]
        part = prefixes.node_parts.data[from_node]
        is_space = by_label == prefixes.space
        letters = np.flatnonzero(~is_space)
        if len(letters):
            target_scores[moves[letters]] = prefixes.letter_scores(from_node[letters], by_label[letters])
        finishing = np.flatnonzero(is_space & (part != 0))
        if len(finishing):
            texts = prefixes.texts_after(prefixes.node_texts.data[from_node[finishing]], part[finishing])
            target_scores[moves[finishing]] = prefixes.text_scores.data[texts]
        going = np.flatnonzero(~is_space | (part != 0))  # a space after a finished word stays
        origin = from_node[going] * num_labels + by_label[going]
        target[moves[going]] = num_nodes + origin
        # Children that are live beams of the same utterance are those beams' nodes.
        live_origin = prefixes.node_origins.data[beams.nodes]
        live_utterance = np.repeat(np.arange(len(beams.counts)), beams.counts)
        made = np.flatnonzero(live_origin >= 0)
        if len(made):
            live_key = live_utterance[made] * (num_nodes * num_labels) + live_origin[made]
            order = np.argsort(live_key)
            live_key, live_node = live_key[order], beams.nodes[made][order]
            query = pair_utterance[moves[going]] * (num_nodes * num_labels) + origin
            at = np.minimum(np.searchsorted(live_key, query), len(live_key) - 1)
            hit = np.flatnonzero(live_key[at] == query)
            target[moves[going[hit]]] = live_node[at[hit]]
        return target, target_scores

    def _finish(self, prefixes, word_frames, beams, part, beam_width, beam_prune_logp) -> List[Beam]:
        """The last step of one utterance: finish the word in progress, merge by text, score the end, rank."""
        merged = {}  # final text -> (text id, last word, words, start, end, score) of its last beam, summed score
        for node, score, words, start, end in zip(
            beams.nodes[part].tolist(), beams.scores[part], beams.words[part].tolist(),
            beams.starts[part].tolist(), beams.ends[part].tolist(),
        ):
            text, text_id, last_word = prefixes.final_text(node)
            if text in merged:
                score = _log_add(merged[text][-1], score)
            merged[text] = (text_id, last_word, words, start, end, score)
        ranked = []
        for text, (text_id, last_word, words, start, end, score) in merged.items():
            ranked.append((score + prefixes.final_score(text_id, last_word), text, last_word, words, start, end, score))
        best = max(total for total, *_ in ranked)
        ranked = [beam for beam in ranked if beam[0] >= best + beam_prune_logp]
        ranked = sorted(ranked, key=lambda beam: beam[0], reverse=True)[:beam_width]
        out = []
        for total, text, last_word, words, start, end, score in ranked:
            frames = word_frames.as_list(words) + ([(start, end)] if last_word else [])
            words_of_text = text.split()
            out.append(Beam(" ".join(words_of_text), list(zip(words_of_text, frames)), float(score), float(total)))
        return out


def _offered_labels(all_frames: np.ndarray, token_min_logp: float):
    """The labels each frame offers (log-probability >= token_min_logp, and the best), in the order
    the reference visits them (a Python set's), as one flat array with each frame's start and count."""
    best = all_frames.argmax(axis=1)
    frames, labels = np.nonzero(all_frames >= token_min_logp)
    count = np.bincount(frames, minlength=len(all_frames))
    bounds = np.concatenate([[0], np.cumsum(count)]).tolist()
    labels = labels.tolist()
    offered = []
    for frame, top in enumerate(best.tolist()):
        offered.append(list(set(labels[bounds[frame]:bounds[frame + 1]]) | {top}))
    counts = np.array([len(o) for o in offered], np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.fromiter(itertools.chain.from_iterable(offered), np.int64, int(counts.sum())), starts, counts


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
