"""The beam search itself: the reference's, frame by frame, for a batch of utterances at once.

``decode`` hands the frames to the compiled kernel (``kernel.py``) when numba is installed, the
labels spell each string one way and scores are float64 or float32; otherwise they are stepped here.
Each frame is stepped here in one of two ways that give the same beams: in plain Python, one
utterance at a time (cheapest when a frame has few beams and labels, as with a confident acoustic
model), or with NumPy, all utterances together (a fixed cost per frame, then little per beam), by
how many (beam, label) pairs the frame has.

Both keep the reference's arithmetic. Acoustic scores are sums of log-probabilities in their dtype
(float64 as plain Python floats, other dtypes as NumPy scalars or arrays), log-added as
``a + log(1 + exp(b - a))`` with the correction in float64, and ranked by acoustic score + the
(float64) language-model score, added in the acoustic dtype.

A frame's labels take a beam to a child prefix. With unique spellings
(``alphabet.spellings_are_unique``) a child is made by exactly one (parent, label), so a child not
made yet is named by that pair ("virtual") and scored without being made: only the children that
survive pruning are made.
"""
from __future__ import annotations

import itertools
import math
from typing import List, Optional, Tuple

import numpy as np

from .alphabet import SPACE
from .language_model import Hotwords, LanguageModel

try:
    from . import kernel
except ImportError:  # numba is optional: the Python and NumPy steps below do the same
    kernel = None

# Whether frames are stepped by the compiled kernel where it applies (tests switch it off to
# compare both ways).
COMPILED = kernel is not None


def log_add(a, b):
    """log(exp(a) + exp(b)), in the reference's order of operations (scalars keep their NumPy type)."""
    if a >= b:
        return a + math.log(1 + math.exp(b - a))
    return b + math.log(1 + math.exp(a - b))


def _log_add_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log_add`` elementwise: the correction term in float64 (as math.log computes it), the sum in a's dtype."""
    high, low = np.maximum(a, b), np.minimum(a, b)
    correction = np.log(1.0 + np.exp((low - high).astype(np.float64)))
    return high + correction.astype(a.dtype, copy=False)


def _join(text: str, word: str) -> str:
    if not word:
        return text
    return f"{text} {word}" if text else word


def _lookup(table: dict, keys: np.ndarray) -> np.ndarray:
    """table[key] for each key, -1 where absent."""
    return np.fromiter(map(table.get, keys.tolist(), itertools.repeat(-1)), np.int64, len(keys))


class _Column:
    """Values appended one by one to a list, with a NumPy copy brought up to date when asked."""

    def __init__(self, dtype, first):
        self.values = list(first)
        self._array = np.empty(0, dtype)
        self._synced = 0

    def array(self) -> np.ndarray:
        size = len(self.values)
        if size > self._synced:
            if size > len(self._array):
                grown = np.empty(max(size, 2 * len(self._array), 1024), self._array.dtype)
                grown[: self._synced] = self._array[: self._synced]
                self._array = grown
            self._array[self._synced:size] = self.values[self._synced:size]
            self._synced = size
        return self._array


class Prefixes:
    """Every prefix the search meets, each made and scored once (shared by the utterances of a call).

    A text is a sequence of finished words, a part a word in progress, a node a (text, part) pair:
    the prefix a beam spells. Texts and parts are told apart by their strings, so two spellings of
    one string are one prefix, as in the reference. A node's score is what beams are ranked by,
    besides their acoustic score: its text's (language model + hotwords) plus its part's (prefix).
    """

    def __init__(self, labels: List[str], language_model: LanguageModel, hotwords: Hotwords, prune_history: bool):
        self.labels = labels
        self.num_labels = len(labels)
        self.space = labels.index(SPACE) if SPACE in labels else -1
        self.lm = language_model
        self.hotwords = hotwords
        self.prune_history = prune_history
        self.history_words = max(1, language_model.order - 1)  # the words that still change LM scores
        self.label_lengths = np.array([len(label) for label in labels], np.int64)
        self.label_length_list = self.label_lengths.tolist()
        self.unigram_trie = language_model.trie
        self.extensions = {}  # part * num_labels + label -> extended(part, label)
        self.unigram_codes, self._unigram_code_lists = self.unigram_trie.label_codes(labels)  # (labels, longest)
        if hotwords:
            self.hotword_codes, self._hotword_code_lists = hotwords.trie.label_codes(labels)
            self._hotword_shortest = hotwords.trie.shortest.tolist()
        # parts: string, length, states in the unigram and hotword tries (-1: nothing begins so), score
        self.parts = [""]
        self.part_ids = {"": 0}
        self.part_children = {}  # part * num_labels + label -> part
        self.part_lengths = _Column(np.int64, [0])
        self.part_unigram_states = _Column(np.int64, [0])
        self.part_hotword_states = _Column(np.int64, [0])
        self.part_scores = _Column(np.float64, [0.0])
        # texts: string, KenLM state after it, LM score (no hotwords), hotwords in it, total score
        self.texts = [""]
        self.text_ids = {"": 0}
        self.text_children = {}  # text * _PAIR + part -> the text with that part finished as a word
        self.text_states = [language_model.start_state()]
        self.text_lm = [0.0]
        self.text_hotwords = [0]
        self.text_scores = _Column(np.float64, [0.0])
        self.history_ids = {(): 0}  # the last words of a text, as prune_history compares them
        self.text_histories = [0]
        # nodes
        self.node_ids = {0: 0}  # text * _PAIR + part -> node
        self.node_children = {}  # node * num_labels + label -> node
        self.node_texts = _Column(np.int64, [0])
        self.node_parts = _Column(np.int64, [0])
        self.node_scores = _Column(np.float64, [0.0])
        self.node_origins = _Column(np.int64, [-1])  # the node * num_labels + label that made it
        self.node_history_ids = {0: 0}  # text history * _PAIR + part -> id
        self.node_histories = _Column(np.int64, [0])

    @property
    def num_nodes(self) -> int:
        return len(self.node_texts.values)

    # ------------------------------------------------------------- one at a time
    def extended(self, part: int, label: int):
        """(length, unigram trie state, hotword trie state, score) of ``part`` with ``label`` appended."""
        key = part * self.num_labels + label
        found = self.extensions.get(key)
        if found is None:
            length = self.part_lengths.values[part] + self.label_length_list[label]
            unigram_state = self.unigram_trie.step(self.part_unigram_states.values[part], self._unigram_code_lists[label])
            hotword_state = -1
            if self.hotwords:
                hotword_state = self.hotwords.trie.step(self.part_hotword_states.values[part], self._hotword_code_lists[label])
            if hotword_state > 0:
                score = self.hotwords.weight * length / self._hotword_shortest[hotword_state]
            else:
                score = self.lm.prefix_score(length, unigram_state >= 0)
            found = self.extensions[key] = (length, unigram_state, hotword_state, score)
        return found

    def part_after(self, part: int, label: int) -> int:
        key = part * self.num_labels + label
        found = self.part_children.get(key)
        if found is not None:
            return found
        string = self.parts[part] + self.labels[label]
        found = self.part_ids.get(string)
        if found is None:  # a new string (another spelling of a known one gets its id)
            found = self.part_ids[string] = len(self.parts)
            self.parts.append(string)
            length, unigram_state, hotword_state, score = self.extended(part, label)
            self.part_lengths.values.append(length)
            self.part_unigram_states.values.append(unigram_state)
            self.part_hotword_states.values.append(hotword_state)
            self.part_scores.values.append(score)
        self.part_children[key] = found
        return found

    def text_after(self, text: int, part: int) -> int:
        key = text * _PAIR + part
        found = self.text_children.get(key)
        if found is not None:
            return found
        word = self.parts[part]
        string = _join(self.texts[text], word)
        found = self.text_ids.get(string)
        if found is None:
            score, state = self.lm.score_word(self.text_states[text], word)
            lm = self.text_lm[text] + score
            hotwords = self.text_hotwords[text] + (word in self.hotwords.words)
            found = self.text_ids[string] = len(self.texts)
            self.texts.append(string)
            self.text_states.append(state)
            self.text_lm.append(lm)
            self.text_hotwords.append(hotwords)
            self.text_scores.values.append(lm + self.hotwords.weight * hotwords)
            if self.prune_history:
                history = tuple(string.split()[-self.history_words:])
                self.text_histories.append(self.history_ids.setdefault(history, len(self.history_ids)))
        self.text_children[key] = found
        return found

    def _node(self, text: int, part: int, origin: int) -> int:
        key = text * _PAIR + part
        found = self.node_ids.get(key)
        if found is not None:
            return found
        found = self.node_ids[key] = self.num_nodes
        self.node_texts.values.append(text)
        self.node_parts.values.append(part)
        score = self.text_scores.values[text]
        if part:
            score += self.part_scores.values[part]
        self.node_scores.values.append(score)
        self.node_origins.values.append(origin)
        if self.prune_history:
            history = self.text_histories[text] * _PAIR + part
            self.node_histories.values.append(self.node_history_ids.setdefault(history, len(self.node_history_ids)))
        return found

    def child(self, node: int, label: int) -> int:
        """The node a label leads to from ``node`` (neither the blank nor a repeat), made if new."""
        key = node * self.num_labels + label
        found = self.node_children.get(key)
        if found is None:
            text, part = self.node_texts.values[node], self.node_parts.values[node]
            if label != self.space:
                found = self._node(text, self.part_after(part, label), key)
            elif part:
                found = self._node(self.text_after(text, part), 0, key)
            else:  # a space after a finished word stays where it is
                found = node
            self.node_children[key] = found
        return found

    def child_score(self, node: int, label: int) -> float:
        """The score of the node a letter, or a space after a word in progress, leads to (made or not)."""
        text, part = self.node_texts.values[node], self.node_parts.values[node]
        if label == self.space:
            return self.text_scores.values[self.text_after(text, part)]
        return self.text_scores.values[text] + self.extended(part, label)[3]

    # ------------------------------------------------------------- many at once
    def children_of(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``child`` of each (node, label)."""
        keys = nodes * self.num_labels + labels
        found = _lookup(self.node_children, keys)
        missing = np.flatnonzero(found < 0)
        if len(missing) < 32:  # too few to pay for the array work
            for i in missing.tolist():
                found[i] = self.child(int(nodes[i]), int(labels[i]))
            return found
        new_keys, inverse = np.unique(keys[missing], return_inverse=True)
        parent, label = np.divmod(new_keys, self.num_labels)
        texts, parts = self.node_texts.array()[parent], self.node_parts.array()[parent]
        child = parent.copy()  # a space after a finished word stays where it is
        letters = np.flatnonzero(label != self.space)
        if len(letters):
            new_parts = self._many(self.part_children, self.part_after, parts[letters], label[letters], self.num_labels)
            child[letters] = self._nodes(texts[letters], new_parts, new_keys[letters])
        words = np.flatnonzero((label == self.space) & (parts != 0))
        if len(words):
            new_texts = self._many(self.text_children, self.text_after, texts[words], parts[words], _PAIR)
            child[words] = self._nodes(new_texts, np.zeros(len(words), np.int64), new_keys[words])
        self.node_children.update(zip(new_keys.tolist(), child.tolist()))
        found[missing] = child[inverse]
        return found

    def _nodes(self, texts: np.ndarray, parts: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """``_node`` of each (text, part), new ones made together."""
        keys = texts * _PAIR + parts
        found = _lookup(self.node_ids, keys)
        missing = np.flatnonzero(found < 0)
        if not len(missing):
            return found
        new_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
        new_ids = np.arange(self.num_nodes, self.num_nodes + len(new_keys))
        self.node_ids.update(zip(new_keys.tolist(), new_ids.tolist()))
        new_texts, new_parts = np.divmod(new_keys, _PAIR)
        text_scores = self.text_scores.array()[new_texts]
        scores = np.where(new_parts != 0, text_scores + self.part_scores.array()[new_parts], text_scores)
        self.node_texts.values.extend(new_texts.tolist())
        self.node_parts.values.extend(new_parts.tolist())
        self.node_scores.values.extend(scores.tolist())
        self.node_origins.values.extend(origins[missing[first]].tolist())
        if self.prune_history:
            for text, part in zip(new_texts.tolist(), new_parts.tolist()):
                history = self.text_histories[text] * _PAIR + part
                self.node_histories.values.append(self.node_history_ids.setdefault(history, len(self.node_history_ids)))
        found[missing] = new_ids[inverse]
        return found

    def child_scores(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``child_score`` of each (node, label)."""
        texts, parts = self.node_texts.array()[nodes], self.node_parts.array()[nodes]
        scores = np.empty(len(nodes))
        space = labels == self.space
        letters, words = np.flatnonzero(~space), np.flatnonzero(space)
        if len(letters):
            scores[letters] = self.text_scores.array()[texts[letters]] + self._extension_scores(parts[letters], labels[letters])
        if len(words):
            new_texts = self._many(self.text_children, self.text_after, texts[words], parts[words], _PAIR)
            scores[words] = self.text_scores.array()[new_texts]
        return scores

    def _extension_scores(self, parts: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The scores of parts with one label appended, without making them."""
        lengths = self.part_lengths.array()[parts] + self.label_lengths[labels]
        unigram_states = self.unigram_trie.walk(self.part_unigram_states.array()[parts], self.unigram_codes[labels])
        scores = self.lm.prefix_scores(lengths, unigram_states >= 0)
        if self.hotwords:
            hotword_states = self.hotwords.trie.walk(self.part_hotword_states.array()[parts], self.hotword_codes[labels])
            hot = self.hotwords.prefix_scores(lengths, hotword_states)
            scores = np.where(np.isnan(hot), scores, hot)
        return scores

    @staticmethod
    def _many(table, make, firsts: np.ndarray, seconds: np.ndarray, scale: int) -> np.ndarray:
        found = _lookup(table, firsts * scale + seconds)
        for i in np.flatnonzero(found < 0).tolist():
            found[i] = make(int(firsts[i]), int(seconds[i]))
        return found

    # ------------------------------------------------------------- the end of an utterance
    def final_text(self, node: int) -> Tuple[str, int, str]:
        """(the text with the word in progress finished, the node's text, the word in progress)."""
        text, part = self.node_texts.values[node], self.parts[self.node_parts.values[node]]
        return _join(self.texts[text], part), text, part

    def final_score(self, text: int, last_word: str) -> float:
        """The score of a text finished by ``last_word`` (maybe empty, as the reference scores it)
        with the sentence end."""
        score, _ = self.lm.score_word(self.text_states[text], last_word, is_last=True)
        hotwords = self.text_hotwords[text] + (last_word in self.hotwords.words)
        return self.text_lm[text] + score + self.hotwords.weight * hotwords


# Pair keys: text id * _PAIR + part id (ids stay far below 2**31).
_PAIR = 1 << 31


class WordFrames:
    """The (start, end) frames of beams' finished words, as linked lists (-1 ends a list)."""

    def __init__(self):
        self.previous, self.starts, self.ends = [], [], []

    def push(self, previous: int, start: int, end: int) -> int:
        self.previous.append(previous)
        self.starts.append(start)
        self.ends.append(end)
        return len(self.previous) - 1

    def push_many(self, previous: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
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


class Settings:
    """What a search needs besides the logits."""

    def __init__(self, canonical, blank, unique_spellings, beam_width, beam_prune_logp, prune_history):
        self.canonical = canonical  # (labels,) the first label with the same text
        self.canonical_array = np.array(canonical, np.int64)
        self.blank = blank
        self.unique_spellings = unique_spellings
        self.beam_width = beam_width
        self.beam_prune_logp = beam_prune_logp
        self.prune_history = prune_history


# A live beam: (node, last label, acoustic score, finished words' frames (WordFrames
# list), first frame of the word in progress, frame after its last label); -1: none yet.
_START = (0, -1, 0.0, -1, -1, -1)
# From this many (beam, label) pairs in a frame (over the utterances still being decoded), the frame
# is stepped with NumPy, all utterances together; below it, in Python, one utterance at a time.
NUMPY_MIN_PAIRS = 256


class _Frames:
    """The log-probabilities of a batch, flat, and the labels each frame offers with their values.

    A frame offers the labels whose log-probability is at least ``token_min_logp``, and its best,
    in the order the reference visits them: that of a Python set of the label ids.
    """

    def __init__(self, log_probs: List[np.ndarray], token_min_logp: float):
        self.lengths = [len(lp) for lp in log_probs]
        self.first_row = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        rows = np.concatenate(log_probs)  # (total frames, labels)
        best = rows.argmax(axis=1)
        frames, labels = np.nonzero(rows >= token_min_logp)
        above = np.bincount(frames, minlength=len(rows))
        # A frame with one label above the threshold offers its best only; others need the set's order.
        self.count = np.maximum(above, 1)  # (total frames,)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]]).astype(np.int64)  # (total frames,)
        self.labels = np.repeat(best, self.count)
        bounds = np.concatenate([[0], np.cumsum(above)]).tolist()
        labels, starts, above_list = labels.tolist(), self.start.tolist(), above.tolist()
        # (the union, as the reference makes it: a copy of a set may iterate in another order)
        for row, top in zip(np.flatnonzero(above > 1).tolist(), best[above > 1].tolist()):
            start = starts[row]
            self.labels[start:start + above_list[row]] = list(set(labels[bounds[row]:bounds[row + 1]]) | {top})
        self.values = rows[np.repeat(np.arange(len(rows)), self.count), self.labels]  # same dtype
        self._lists = None

    def offered(self, row: int):
        """(labels, values) a frame offers, as lists for the Python steps: plain floats for float64
        (the same arithmetic), else scalars of the dtype."""
        if self._lists is None:
            values = self.values.tolist() if self.values.dtype == np.float64 else list(self.values)
            self._lists = self.labels.tolist(), values, self.start.tolist(), self.count.tolist()
        label_list, value_list, start_list, count_list = self._lists
        start = start_list[row]
        end = start + count_list[row]
        return label_list[start:end], value_list[start:end]


def decode(log_probs: List[np.ndarray], labels: List[str], language_model: LanguageModel, hotwords: Hotwords,
           settings: Settings, token_min_logp: float):
    """The beams of each utterance, best first: (text, word frames, acoustic score, total score);
    by the compiled kernel when numba is installed, the labels spell each string one way and the
    scores are float64 or float32, else by the steps here."""
    frames = _Frames(log_probs, token_min_logp)
    if COMPILED and settings.unique_spellings and frames.values.dtype in (np.float64, np.float32):
        tables = kernel.Tables(labels, language_model, hotwords, settings.prune_history, settings.beam_width,
                               settings.beam_prune_logp, settings.canonical, settings.blank, frames.values.dtype)
        return kernel.search(frames, tables, settings, finish)
    return search(frames, Prefixes(labels, language_model, hotwords, settings.prune_history), settings)


def search(frames: "_Frames", prefixes: Prefixes, settings: Settings):
    """``decode`` by the Python and NumPy steps."""
    dtype = frames.values.dtype
    first_row, count = frames.first_row.tolist(), frames.count.tolist()
    word_frames = WordFrames()
    beams = [[_START] for _ in frames.lengths]
    results = [None] * len(frames.lengths)
    ending = {}  # frame -> the utterances that end there
    for u, length in enumerate(frames.lengths):
        ending.setdefault(length, []).append(u)
    active = list(range(len(frames.lengths)))
    for frame in range(max(frames.lengths, default=0) + 1):
        if frame in ending:
            for u in ending[frame]:
                results[u] = finish(beams[u], prefixes, word_frames, settings)
            active = [u for u in active if frames.lengths[u] > frame]
            if not active:
                break
        if len(active) == 1:
            u = active[0]
            row = first_row[u] + frame
            if len(beams[u]) * count[row] < NUMPY_MIN_PAIRS:
                beams[u] = _step_one(frame, beams[u], *frames.offered(row), prefixes, word_frames, settings)
                continue
        rows = [first_row[u] + frame for u in active]
        pairs = sum(len(beams[u]) * count[r] for u, r in zip(active, rows))
        if pairs >= NUMPY_MIN_PAIRS:
            stepped = _step_together(frame, [beams[u] for u in active], np.array(rows), frames, dtype,
                                     prefixes, word_frames, settings)
            for u, utterance_beams in zip(active, stepped):
                beams[u] = utterance_beams
        else:
            for u, r in zip(active, rows):
                beams[u] = _step_one(frame, beams[u], *frames.offered(r), prefixes, word_frames, settings)
    return results


def _step_one(frame, beams, labels, values, prefixes, word_frames, settings):
    """One frame of one utterance: extend every beam by every offered label, merge, score, prune."""
    num_labels, space, blank, canonical = prefixes.num_labels, prefixes.space, settings.blank, settings.canonical
    if len(beams) == 1 and len(labels) == 1:  # one way on: nothing to merge, rank or prune
        return [_extend(frame, beams[0], beams[0][2] + values[0], canonical[labels[0]], prefixes, word_frames, blank, space)]
    children, node_parts, node_scores = prefixes.node_children, prefixes.node_parts.values, prefixes.node_scores.values
    node_texts, text_scores, extensions = prefixes.node_texts.values, prefixes.text_scores.values, prefixes.extensions
    # Targets from here on are children not made yet: virtual + node * num_labels + label.
    virtual = prefixes.num_nodes if settings.unique_spellings else None
    merged = {}  # (target, label) key -> [acoustic score, leading beam, target, target score, label]
    get = merged.get
    for label, p in zip(labels, values):
        label = canonical[label]
        for i, (node, last, score, _, _, _) in enumerate(beams):
            if label == blank or label == last or (label == space and not node_parts[node]):
                target, origin = node, None
            else:
                origin = node * num_labels + label
                target = children.get(origin)
                if target is None:
                    target = prefixes.child(node, label) if virtual is None else virtual + origin
            key = target * num_labels + label
            entry = get(key)
            if entry is None:
                if origin is None or virtual is None or target < virtual:
                    target_score = node_scores[target]
                elif label == space:
                    target_score = prefixes.child_score(node, label)
                else:  # child_score, inline: most pairs that move are letters to children not made
                    part = node_parts[node]
                    extension = extensions.get(part * num_labels + label) or prefixes.extended(part, label)
                    target_score = text_scores[node_texts[node]] + extension[3]
                merged[key] = [score + p, i, target, target_score, label]
            else:  # the reference keeps the merged beam's place and the last pair's word frames
                entry[0] = log_add(entry[0], score + p)
                entry[1] = i
    entries = list(merged.values())
    ranked = [entry[0] + entry[3] for entry in entries]
    threshold = max(ranked) + settings.beam_prune_logp
    kept = sorted([j for j, total in enumerate(ranked) if total >= threshold], key=ranked.__getitem__, reverse=True)
    survivors, histories = [], set()
    for j in kept[: settings.beam_width]:
        score, i, target, _, label = entries[j]
        node, last, _, words, start, end = beams[i]
        if label == blank:
            beam = (node, label, score, words, start, end)
        elif label == last:
            beam = (node, label, score, words, start, frame + 1)
        else:
            if virtual is not None and target >= virtual:
                target = prefixes.child(node, label)
            if label != space:
                beam = (target, label, score, words, frame if start < 0 else start, frame + 1)
            else:
                beam = (target, label, score, word_frames.push(words, start, end) if node_parts[node] else words, -1, -1)
        if settings.prune_history:
            history = (prefixes.node_histories.values[beam[0]], label)
            if history in histories:
                continue
            histories.add(history)
        survivors.append(beam)
    return survivors


def _extend(frame, beam, score, label, prefixes, word_frames, blank, space):
    """The beam that ``label`` makes of ``beam`` on its own."""
    node, last, _, words, start, end = beam
    if label == blank:
        return (node, label, score, words, start, end)
    if label == last:
        return (node, label, score, words, start, frame + 1)
    target = prefixes.child(node, label)
    if label == space:
        if prefixes.node_parts.values[node]:
            words = word_frames.push(words, start, end)
        return (target, label, score, words, -1, -1)
    return (target, label, score, words, frame if start < 0 else start, frame + 1)


def finish(beams, prefixes: Prefixes, word_frames: WordFrames, settings: Settings):
    """After the last frame: finish each word in progress, merge beams of the same text (the last
    one's word frames), add the sentence end, rank and prune once more."""
    merged = {}  # final text -> (text, last word, words, start, end, acoustic score)
    for node, _, score, words, start, end in beams:
        final, text, last_word = prefixes.final_text(node)
        if final in merged:
            score = log_add(merged[final][-1], score)
        merged[final] = (text, last_word, words, start, end, score)
    ranked = [(score + prefixes.final_score(text, last_word), final, last_word, words, start, end, score)
              for final, (text, last_word, words, start, end, score) in merged.items()]
    threshold = max(beam[0] for beam in ranked) + settings.beam_prune_logp
    ranked = [beam for beam in ranked if beam[0] >= threshold]
    ranked = sorted(ranked, key=lambda beam: beam[0], reverse=True)[: settings.beam_width]
    out = []
    for total, final, last_word, words, start, end, score in ranked:
        frames = word_frames.as_list(words) + ([(start, end)] if last_word else [])
        text_words = final.split()
        out.append((" ".join(text_words), list(zip(text_words, frames)), float(score), float(total)))
    return out


# ---------------------------------------------------------------------------------------- NumPy steps
class _Beams:
    """The live beams of several utterances, grouped by utterance, best first in each."""

    def __init__(self, counts, nodes, last, scores, words, starts, ends):
        self.counts = counts  # (U,) beams of each utterance
        self.nodes = nodes  # (B,) the prefix each beam spells
        self.last = last  # (B,) its last label (-1 before the first frame)
        self.scores = scores  # (B,) acoustic score
        self.words = words  # (B,) its finished words' frames (WordFrames list; -1: none)
        self.starts = starts  # (B,) first frame of the word in progress (-1: none)
        self.ends = ends  # (B,) frame after its last label (-1: none)


def _step_together(frame, beams: List[list], rows: np.ndarray, frames: _Frames, dtype, prefixes, word_frames, settings):
    """``_step_one`` for several utterances at once, on arrays; beams come and go as ``_step_one``'s."""
    counts = np.array([len(b) for b in beams], np.int64)
    nodes, last, scores, words, starts, ends = zip(*itertools.chain.from_iterable(beams))
    as_ints = lambda column: np.array(column, np.int64)  # noqa: E731
    stepped = _step_batch(
        frame, _Beams(counts, as_ints(nodes), as_ints(last), np.array(scores, dtype), as_ints(words),
                      as_ints(starts), as_ints(ends)),
        rows, frames, prefixes, word_frames, settings,
    )
    scores = stepped.scores.tolist() if dtype == np.float64 else list(stepped.scores)
    flat = list(zip(stepped.nodes.tolist(), stepped.last.tolist(), scores, stepped.words.tolist(),
                    stepped.starts.tolist(), stepped.ends.tolist()))
    bounds = np.concatenate([[0], np.cumsum(stepped.counts)]).tolist()
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(beams))]


def _step_batch(frame, beams: _Beams, rows, frames: _Frames, prefixes, word_frames, settings) -> _Beams:
    """Extend every beam by every offered label of this frame, merge, score and prune."""
    num_labels = prefixes.num_labels
    num_utterances = len(beams.counts)
    offered_start, offered_count = frames.start[rows], frames.count[rows]
    # Pairs (utterance u, offered label k, beam j of u), in the reference's loop order.
    beam_start = np.cumsum(beams.counts) - beams.counts
    pairs_per_utterance = offered_count * beams.counts
    pair_utterance = np.repeat(np.arange(num_utterances), pairs_per_utterance)  # (P,)
    within = np.arange(len(pair_utterance)) - np.repeat(np.cumsum(pairs_per_utterance) - pairs_per_utterance, pairs_per_utterance)
    beams_of = beams.counts[pair_utterance]
    offered = offered_start[pair_utterance] + within // beams_of  # (P,) index into frames.labels
    beam = beam_start[pair_utterance] + within % beams_of  # (P,)
    label = settings.canonical_array[frames.labels[offered]]
    parent = beams.nodes[beam]
    stays = (label == settings.blank) | (label == beams.last[beam])
    num_nodes = prefixes.num_nodes
    target, target_scores = _targets(prefixes, beams, pair_utterance, parent, label, stays, settings)
    scores = beams.scores[beam] + frames.values[offered]

    # Merge pairs that reach the same (utterance, target, label).
    key = (pair_utterance * (num_nodes * (num_labels + 1)) + target) * num_labels + label
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]
    group_start = np.flatnonzero(np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]]))
    sizes = np.diff(np.append(group_start, len(key)))
    merged = scores[by_key[group_start]]
    for k in range(1, int(sizes.max())):
        grows = np.flatnonzero(sizes > k)
        merged[grows] = _log_add_arrays(merged[grows], scores[by_key[group_start[grows] + k]])
    # A merged beam stands where its first pair stood, with the last pair's word frames.
    in_order = np.argsort(by_key[group_start])
    leader = by_key[group_start + sizes - 1][in_order]  # (M,)
    merged = merged[in_order]
    merged_utterance = pair_utterance[leader]
    ranked = merged + target_scores[leader].astype(merged.dtype, copy=False)

    # Prune: a margin below each utterance's best, then the best beam_width (stable among ties).
    first_of_utterance = np.flatnonzero(np.concatenate([[True], merged_utterance[1:] != merged_utterance[:-1]]))
    best = np.maximum.reduceat(ranked, first_of_utterance)
    kept = np.flatnonzero(ranked >= best[merged_utterance] + np.asarray(settings.beam_prune_logp, ranked.dtype))
    kept = kept[np.argsort(-ranked[kept], kind="stable")]
    kept = kept[np.argsort(merged_utterance[kept], kind="stable")]
    counts = np.bincount(merged_utterance[kept], minlength=num_utterances)
    rank = np.arange(len(kept)) - np.repeat(np.cumsum(counts) - counts, counts)
    kept = kept[rank < settings.beam_width]
    pair = leader[kept]  # the pair that leads each survivor
    nodes = target[pair]
    unmade = np.flatnonzero(nodes >= num_nodes)
    if len(unmade):
        nodes[unmade] = prefixes.children_of(parent[pair[unmade]], label[pair[unmade]])
    if settings.prune_history:
        history = prefixes.node_histories.array()[nodes]
        key = (merged_utterance[kept] * len(prefixes.node_history_ids) + history) * num_labels + label[pair]
        first = np.sort(np.unique(key, return_index=True)[1])
        kept, pair, nodes = kept[first], pair[first], nodes[first]
    counts = np.bincount(merged_utterance[kept], minlength=num_utterances)

    # Word frames of the survivors.
    from_beam = beam[pair]
    starts, ends, words = beams.starts[from_beam], beams.ends[from_beam], beams.words[from_beam]
    is_blank = label[pair] == settings.blank
    is_space = ~stays[pair] & (label[pair] == prefixes.space)
    is_letter = ~stays[pair] & ~is_space
    finishes_word = np.flatnonzero(is_space & (prefixes.node_parts.array()[parent[pair]] != 0))
    if len(finishes_word):
        words[finishes_word] = word_frames.push_many(words[finishes_word], starts[finishes_word], ends[finishes_word])
    new_starts = np.where(is_letter & (starts < 0), frame, starts)
    new_starts[is_space] = -1
    new_ends = np.where(is_blank, ends, frame + 1)
    new_ends[is_space] = -1
    return _Beams(counts, nodes, label[pair], merged[kept], words, new_starts, new_ends)


def _targets(prefixes, beams, pair_utterance, parent, label, stays, settings):
    """Where each pair goes (a node, or a virtual child: num_nodes + node * labels + label) and its score.

    A virtual child that is a live beam of the same utterance is that beam's node, so that the pairs
    reaching it merge with the beam's own (the blank and repeats stay where they are)."""
    target = parent.copy()
    target_scores = prefixes.node_scores.array()[parent]
    moves = np.flatnonzero(~stays & ((label != prefixes.space) | (prefixes.node_parts.array()[parent] != 0)))
    if not len(moves):
        return target, target_scores
    if not settings.unique_spellings:
        target[moves] = prefixes.children_of(parent[moves], label[moves])
        target_scores[moves] = prefixes.node_scores.array()[target[moves]]
        return target, target_scores
    num_nodes, num_labels = prefixes.num_nodes, prefixes.num_labels
    origin = parent[moves] * num_labels + label[moves]
    target[moves] = num_nodes + origin
    target_scores[moves] = prefixes.child_scores(parent[moves], label[moves])
    live_origin = prefixes.node_origins.array()[beams.nodes]
    made = np.flatnonzero(live_origin >= 0)
    if len(made):
        live_utterance = np.repeat(np.arange(len(beams.counts)), beams.counts)[made]
        live_key = live_utterance * (num_nodes * num_labels) + live_origin[made]
        order = np.argsort(live_key)
        live_key, live_node = live_key[order], beams.nodes[made][order]
        query = pair_utterance[moves] * (num_nodes * num_labels) + origin
        at = np.minimum(np.searchsorted(live_key, query), len(live_key) - 1)
        hit = np.flatnonzero(live_key[at] == query)
        target[moves[hit]] = live_node[at[hit]]
    return target, target_scores
