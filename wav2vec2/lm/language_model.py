"""KenLM scoring of words, word prefixes and hotwords, as the reference decoder (pyctcdecode) scores them.

A beam's language-model score is the sum, over its finished words, of
``alpha * ln P(word | history) + beta`` (KenLM gives log10 probabilities; they are turned into
natural logs), where a word the LM does not know (not in the unigram list, or not in KenLM's
vocabulary) costs ``unk_score_offset`` more; the last word also pays the sentence end when
``score_boundary`` is set, which also starts each text at the sentence start. The word still being
spelled costs ``unk_score_offset`` unless some unigram begins with it (scaled up for prefixes longer
than six characters). Hotwords add ``weight`` per hotword among the finished words, and a word in
progress that begins some hotword earns ``weight * len(prefix) / len(shortest such hotword)``
instead of its prefix score.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5
DEFAULT_UNK_SCORE_OFFSET = -10.0
DEFAULT_SCORE_BOUNDARY = True

# Natural log from log10, the reference's constant (not math.log(10), which differs in the last bit).
LOG10_TO_LN = 1.0 / math.log10(math.e)
# Prefixes longer than this many characters pay proportionally more when no unigram begins with them.
TYPICAL_WORD_LENGTH = 6


def _kenlm():
    try:
        import kenlm
    except ImportError:
        raise ImportError("beam search with a language model needs the kenlm package: pip install kenlm") from None
    return kenlm


def load_kenlm_model(path):
    """A ``kenlm.Model`` from an .arpa or KenLM binary file, with errors naming the file."""
    kenlm = _kenlm()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such KenLM model file")
    try:
        return kenlm.Model(path)
    except (OSError, RuntimeError) as e:  # kenlm reports unreadable or malformed files so
        raise ValueError(f"{path}: cannot load the KenLM model ({e})") from None


def arpa_unigrams(path) -> List[str]:
    """The words of an ARPA file's 1-gram section that carry a back-off weight, as the reference reads them
    (so ``</s>``, written without one, is not among them)."""
    path = os.fspath(path)
    words, in_unigrams = [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif line == "\\2-grams:":
                break
            elif in_unigrams and line:
                fields = line.split("\t")
                if len(fields) == 3:
                    words.append(fields[1])
    if not words:
        raise ValueError(f"{path}: no unigrams in the ARPA file's \\1-grams: section")
    return words


class CharTrie:
    """A set of words as a character trie in arrays, walked for one prefix or many at once.

    A state stands for a prefix of some word (0: the empty prefix; -1: no word begins so, nor with
    anything longer); ``shortest[state]`` is the length of the shortest word with that prefix.
    """

    def __init__(self, words: Iterable[str]):
        words = sorted(set(words) - {""})
        self.codes = {char: code for code, char in enumerate(sorted(set("".join(words))))}
        self._base = max(len(self.codes), 1)
        parents, codes, shortest = [], [], [min(map(len, words), default=0)]
        path, previous = [0], ""  # the states spelling the previous word
        for word in words:  # sorted, so a word shares its first `common` states with the previous one
            common = 0
            for a, b in zip(previous, word):
                if a != b:
                    break
                common += 1
            del path[common + 1:]
            for state in path[1:]:
                shortest[state] = min(shortest[state], len(word))
            for char in word[common:]:
                parents.append(path[-1])
                codes.append(self.codes[char])
                shortest.append(len(word))
                path.append(len(shortest) - 1)
            previous = word
        keys = np.array(parents, np.int64) * self._base + np.array(codes, np.int64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]  # (edges,) sorted: parent state * base + char code
        self._next = np.arange(1, len(keys) + 1, dtype=np.int64)[order]  # (edges,) child state
        self.shortest = np.array(shortest, np.int64)  # (states,)
        self.edges = np.stack([self._keys, self._next])  # (2, edges): both, for the compiled search
        self._seen = {}  # parent state * base + char code -> child state, for ``step``
        self._label_codes = {}  # labels -> label_codes(labels)

    def label_codes(self, labels: Sequence[str]):
        """The char codes of each label: as a (labels, longest label) array, -2 past a label's end,
        and as lists. A label holding a char no word has is the single code -1."""
        labels = tuple(labels)
        if labels not in self._label_codes:
            rows = [[self.codes.get(char, -1) for char in label] for label in labels]
            rows = [[-1] if -1 in row else row for row in rows]  # it leads nowhere at once
            codes = np.full((len(labels), max(map(len, rows), default=0) or 1), -2, np.int64)
            for i, row in enumerate(rows):
                codes[i, : len(row)] = row
            self._label_codes[labels] = codes, rows
        return self._label_codes[labels]

    def step(self, state: int, label_codes: Sequence[int]) -> int:
        """The state after appending one label (its char codes) to the prefix ``state``."""
        for code in label_codes:
            if state < 0 or code < 0:
                return -1
            key = state * self._base + code
            found = self._seen.get(key)
            if found is None:
                at = int(np.searchsorted(self._keys, key))
                found = self._seen[key] = int(self._next[at]) if at < len(self._keys) and self._keys[at] == key else -1
            state = found
        return state

    def _step(self, states: np.ndarray, codes: np.ndarray) -> np.ndarray:
        if not len(self._keys):
            return np.full(len(states), -1, np.int64)
        query = states * self._base + codes
        at = np.minimum(np.searchsorted(self._keys, query), len(self._keys) - 1)
        return np.where((self._keys[at] == query) & (states >= 0) & (codes >= 0), self._next[at], -1)

    def walk(self, states: np.ndarray, label_codes: np.ndarray) -> np.ndarray:
        """The states after appending one label to each prefix (rows of ``label_codes``)."""
        states = states.copy()
        for k in range(label_codes.shape[1]):
            going = np.flatnonzero((label_codes[:, k] != -2) & (states >= 0))
            if len(going):
                states[going] = self._step(states[going], label_codes[going, k])
        return states


class LanguageModel:
    """A KenLM model with its unigram list and the reference's weights.

    kenlm_model: a ``kenlm.Model``; path: the file it was loaded from (saving copies it).
    unigrams: the words the LM knows, for unknown-word and prefix scoring; only those in KenLM's
    vocabulary are kept. None: every word in progress counts as unknown.
    """

    ATTRIBUTES = ("alpha", "beta", "unk_score_offset", "score_boundary")

    def __init__(
        self,
        kenlm_model,
        path,
        unigrams: Optional[Iterable[str]] = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
        score_boundary: bool = DEFAULT_SCORE_BOUNDARY,
    ):
        self.kenlm_model = kenlm_model
        self.path = os.fspath(path)
        self._new_state = _kenlm().State
        self.unigrams = frozenset(w for w in unigrams if w in kenlm_model) if unigrams is not None else frozenset()
        self._trie = None
        self.alpha, self.beta, self.unk_score_offset, self.score_boundary = alpha, beta, unk_score_offset, score_boundary

    @classmethod
    def from_file(cls, path, unigrams: Optional[Iterable[str]] = None, **attributes) -> "LanguageModel":
        """Load a KenLM file; an .arpa file gives its own unigrams when none are passed."""
        kenlm_model = load_kenlm_model(path)
        if unigrams is None and os.fspath(path).endswith(".arpa"):
            unigrams = arpa_unigrams(path)
        return cls(kenlm_model, path, unigrams, **attributes)

    def __repr__(self):
        weights = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.ATTRIBUTES)
        return f"LanguageModel({os.path.basename(self.path)!r}, {len(self.unigrams)} unigrams, {weights})"

    @property
    def order(self) -> int:
        return self.kenlm_model.order

    @property
    def attributes(self) -> dict:
        return {name: getattr(self, name) for name in self.ATTRIBUTES}

    def set_attributes(self, **attributes) -> None:
        """Change alpha, beta, unk_score_offset (numbers) and score_boundary (a bool); None leaves one as it is."""
        for name, value in attributes.items():
            if name not in self.ATTRIBUTES:
                raise ValueError(f"unknown language model attribute {name!r}; known: {list(self.ATTRIBUTES)}")
            if value is None:
                continue
            if name == "score_boundary":
                if not isinstance(value, bool):
                    raise ValueError(f"score_boundary must be a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            else:
                value = float(value)
            setattr(self, name, value)

    # ---------------------------------------------------------------- scores
    def start_state(self):
        state = self._new_state()
        if self.score_boundary:
            self.kenlm_model.BeginSentenceWrite(state)
        else:
            self.kenlm_model.NullContextWrite(state)
        return state

    def score_word(self, state, word: str, is_last: bool = False) -> Tuple[float, object]:
        """(weighted score of ``word`` after ``state``, the state after it); the last word also pays
        the sentence end (when score_boundary), though the state returned is the one before it."""
        after = self._new_state()
        log10_p = self.kenlm_model.BaseScore(state, word, after)
        if (self.unigrams and word not in self.unigrams) or word not in self.kenlm_model:
            log10_p += self.unk_score_offset
        if is_last:
            log10_p += self.kenlm_model.BaseScore(after, "</s>", self._new_state()) if self.score_boundary else 0.0
        return self.alpha * log10_p * LOG10_TO_LN + self.beta, after

    @property
    def trie(self) -> CharTrie:
        """The unigrams as a trie (made on first use, then kept)."""
        if self._trie is None:
            self._trie = CharTrie(self.unigrams)
        return self._trie

    def prefix_score(self, length: int, begins_a_word: bool) -> float:
        """The score of a word still being spelled (``length`` characters so far): 0 if some unigram
        begins with it, else the unknown penalty, scaled up past the typical word length."""
        score = 0.0 if begins_a_word else self.unk_score_offset
        if length > TYPICAL_WORD_LENGTH:
            score = score * length / TYPICAL_WORD_LENGTH
        return score

    def prefix_scores(self, lengths: np.ndarray, begins_a_word: np.ndarray) -> np.ndarray:
        """``prefix_score`` of each (length, begins_a_word), with the same arithmetic."""
        scores = np.where(begins_a_word, 0.0, self.unk_score_offset)
        return np.where(lengths > TYPICAL_WORD_LENGTH, scores * lengths / TYPICAL_WORD_LENGTH, scores)


class Hotwords:
    """Words to favour: phrases are split into words, each scored on its own."""

    def __init__(self, phrases: Optional[Sequence[str]], weight: float):
        self.words = frozenset(word for phrase in phrases or () for word in phrase.split())
        self.weight = weight
        self.trie = CharTrie(self.words)

    def __bool__(self):
        return bool(self.words)

    def prefix_scores(self, lengths: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Scores of words in progress (lengths, trie states) that begin some hotword:
        ``weight * length / length of the shortest such hotword``; NaN where none begins so."""
        scores = np.full(len(states), np.nan)
        hot = np.flatnonzero(states > 0)
        scores[hot] = self.weight * lengths[hot] / self.trie.shortest[states[hot]]
        return scores
