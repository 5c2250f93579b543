"""The beam search's frames compiled with numba: the steps of ``search.py``, on tables of ids.

Used when numba is installed, the labels spell every string one way only
(``alphabet.spellings_are_unique``) and scores are float64 or float32; ``search.py``'s Python and
NumPy steps otherwise. Both give the same beams (the tests run every case both ways).

With unique spellings a word in progress (a "part") is fixed by its parent part and last label,
and a text by its parent text and last word, so neither needs its string here: parts are rows of
arrays (length, states in the unigram and hotword tries, prefix score, parent, label) and texts
rows holding their score. A beam is (text, part, last label, acoustic score, word frames, start,
end). The kernel steps frames until one needs a text it has not got (a word finished by a space
for the first time): it returns the (text, part) pairs it needs; Python scores them with KenLM
(``Tables.add_texts``) and calls again for the same frame. Parts are made in the kernel, only for
the beams that survive pruning; the others are scored from their parent without being made.

Arithmetic is the reference's, as in ``search.py``: acoustic scores in their dtype, the log-add's
correction in float64 (``math.log``/``math.exp``, as CPython's), language-model scores in float64
added in the acoustic dtype, ties kept in order by a stable sort.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

import numba

from .language_model import TYPICAL_WORD_LENGTH

# Rows each table starts with (they double when full; tests make them small).
INITIAL_SIZE = 1024
# A batch's utterances share their tables (texts met again are not scored again) until they hold
# this many parts; then they start afresh: huge tables cost more in cache misses than they save.
MAX_PARTS = 1 << 17
# Pair keys: text * _PAIR + part, as in search.py.
_PAIR = 1 << 31
# What a call of ``step_frames`` ends with.
DONE, NEEDS_TEXTS, NEEDS_ROOM = 0, 1, 2

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _trie_step(keys, children, base, state, codes):
    """The trie state after appending one label's char codes (-2 pads, -1: a char no word has)."""
    for code in codes:
        if code == -2:
            break
        if state < 0 or code < 0:
            return -1
        key = state * base + code
        at = np.searchsorted(keys, key)
        if at < len(keys) and keys[at] == key:
            state = children[at]
        else:
            return -1
    return state


@_jit
def _extension(part, label, part_ints, tries, params, iparams):
    """(length, unigram state, hotword state, score) of ``part`` with ``label`` appended."""
    label_lengths, unigram_edges, unigram_codes, hotword_edges, hotword_codes, hotword_shortest = tries
    length = part_ints[0, part] + label_lengths[label]
    unigram_state = _trie_step(unigram_edges[0], unigram_edges[1], iparams[5], part_ints[1, part], unigram_codes[label])
    hotword_state = -1
    if iparams[4]:
        hotword_state = _trie_step(hotword_edges[0], hotword_edges[1], iparams[6], part_ints[2, part], hotword_codes[label])
    if hotword_state > 0:
        score = params[1] * length / hotword_shortest[hotword_state]
    else:
        score = 0.0 if unigram_state >= 0 else params[0]
        if length > TYPICAL_WORD_LENGTH:
            score = score * length / TYPICAL_WORD_LENGTH
    return length, unigram_state, hotword_state, score


# The kernel's maps (parent part, label -> part; text, part -> text) are open-addressing tables:
# (2, capacity) int64 arrays of keys (-1: empty) and values, kept at most half full.
@_jit
def _slot(table, key):
    """Where ``key`` is in ``table``, or the empty slot where it would go."""
    mask = table.shape[1] - 1
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    at = np.int64((h ^ (h >> np.uint64(31))) & np.uint64(mask))
    while table[0, at] != key and table[0, at] != -1:
        at = (at + 1) & mask
    return at


@_jit
def _get(table, key):
    """table[key], -1 where absent."""
    return table[1, _slot(table, key)]


@_jit
def _put(table, key, value):
    at = _slot(table, key)
    table[0, at], table[1, at] = key, value


def _new_map(capacity):
    return np.full((2, capacity), -1, np.int64)


@_jit
def grown_map(table):
    """``table`` rehashed into one twice the size."""
    grown = np.full((2, 2 * table.shape[1]), -1, np.int64)
    for at in range(table.shape[1]):
        if table[0, at] != -1:
            _put(grown, table[0, at], table[1, at])
    return grown


@_jit
def _hash(text, part, label, mask):
    h = np.uint64(text) * np.uint64(0x9E3779B97F4A7C15)
    h ^= np.uint64(part) * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(label)
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@_jit
def step_frames(offered_labels, offered_values, offered_rows, counters, beam_ints, beam_scores, part_ints,
                part_scores, part_children, text_scores, text_histories, text_children, word_ints, tries, params,
                iparams, requests, scratch_ints, scratch_scores, targets, hashes):
    """Step the frames ``counters[1]`` to ``counters[7]`` of one utterance; returns DONE, NEEDS_TEXTS
    (the (text, part) pairs in ``requests``, their count in counters[4]) or NEEDS_ROOM (the part or
    word-frame arrays are too short for another frame). Arrays of the same type are stacked, so
    that a call unboxes few of them.

    offered_labels, offered_values: the labels each frame offers, flat, from offered_rows
    (first, count) of each row. counters: beams, next frame, parts, word frames, requests,
    requests answered, first row of the utterance, its frames, hash stamp, entries in the two
    maps (part_children, text_children). beam_ints (2, 6, beam_width): text,
    part, last label, word frames, start, end of each beam (and of the next frame's);
    beam_scores (2, beam_width): acoustic scores. part_ints: length, unigram and hotword trie
    states, parent, label of each part; text_histories: the ids prune_history compares.
    word_ints: previous, start, end of each word-frames list node. params: unk_score_offset,
    hotword weight, beam_prune_logp. iparams: blank, space, beam_width, prune_history, hotwords?,
    unigram trie base, hotword trie base, labels. requests: text, part, answer (the new text).
    """
    offered_start, offered_count = offered_rows[0], offered_rows[1]
    first_row, num_frames = counters[6], counters[7]
    b_text, b_part, b_last, b_words, b_start, b_end = (beam_ints[0, 0], beam_ints[0, 1], beam_ints[0, 2],
                                                       beam_ints[0, 3], beam_ints[0, 4], beam_ints[0, 5])
    n_text, n_part, n_last, n_words, n_start, n_end = (beam_ints[1, 0], beam_ints[1, 1], beam_ints[1, 2],
                                                       beam_ints[1, 3], beam_ints[1, 4], beam_ints[1, 5])
    b_score, n_score = beam_scores[0], beam_scores[1]
    part_parents, part_labels = part_ints[3], part_ints[4]
    word_previous, word_starts, word_ends = word_ints[0], word_ints[1], word_ints[2]
    request_texts, request_parts, request_answers = requests[0], requests[1], requests[2]
    e_beam, e_text, e_part, e_label = scratch_ints[0], scratch_ints[1], scratch_ints[2], scratch_ints[3]
    e_score, ranked, e_target = scratch_scores[0], scratch_scores[1], targets
    slots, stamps = hashes[0], hashes[1]
    blank, space, beam_width, prune_history, num_labels = iparams[0], iparams[1], iparams[2], iparams[3], iparams[7]
    cast = np.empty(1, b_score.dtype)  # float64 -> the acoustic dtype, as NumPy rounds it
    cast[0] = params[2]
    prune_logp = cast[0]

    # The texts Python made since the last call.
    for r in range(counters[5]):
        _put(text_children, request_texts[r] * _PAIR + request_parts[r], request_answers[r])
    counters[10] += counters[5]
    counters[4] = 0
    counters[5] = 0

    while counters[1] < num_frames:
        frame = counters[1]
        if (counters[2] + beam_width > part_ints.shape[1] or counters[3] + beam_width > word_ints.shape[1]
                or 2 * (counters[9] + beam_width) > part_children.shape[1]
                or 2 * (counters[10] + beam_width) > text_children.shape[1]):
            return NEEDS_ROOM
        row = first_row + frame
        first, count = offered_start[row], offered_count[row]
        num_beams = counters[0]
        # The texts a space would finish, all known?
        for k in range(count):
            if offered_labels[first + k] == space:
                for i in range(num_beams):
                    if b_part[i] != 0:
                        key = b_text[i] * _PAIR + b_part[i]
                        if _get(text_children, key) < 0:
                            known = False
                            for r in range(counters[4]):
                                if request_texts[r] == b_text[i] and request_parts[r] == b_part[i]:
                                    known = True
                            if not known:
                                request_texts[counters[4]] = b_text[i]
                                request_parts[counters[4]] = b_part[i]
                                counters[4] += 1
                break
        if counters[4]:
            return NEEDS_TEXTS

        # Extend every beam by every offered label; merge the pairs that reach the same
        # (text, part, label), in the order of first arrival.
        mask = 1
        while mask < 2 * count * num_beams:
            mask *= 2
        mask -= 1
        counters[8] += 1
        stamp = counters[8]
        entries = 0
        for k in range(count):
            label = offered_labels[first + k]
            p = offered_values[first + k]
            for i in range(num_beams):
                text, part = b_text[i], b_part[i]
                if label == blank or label == b_last[i] or (label == space and part == 0):
                    target_text, target_part = text, part
                    target = text_scores[text]
                    if part != 0:
                        target += part_scores[part]
                elif label == space:
                    target_text, target_part = _get(text_children, text * _PAIR + part), 0
                    target = text_scores[target_text]
                else:
                    target_text = text
                    target_part = _get(part_children, part * num_labels + label)
                    if target_part >= 0:
                        target = text_scores[text] + part_scores[target_part]
                    else:  # not made yet: named -(1 + parent * labels + label)
                        target = text_scores[text] + _extension(part, label, part_ints, tries, params, iparams)[3]
                        target_part = -(1 + part * num_labels + label)
                score = b_score[i] + p
                h = _hash(target_text, target_part, label, mask)
                while True:
                    if stamps[h] != stamp:
                        stamps[h] = stamp
                        slots[h] = entries
                        e_score[entries] = score
                        e_beam[entries] = i
                        e_text[entries] = target_text
                        e_part[entries] = target_part
                        e_target[entries] = target
                        e_label[entries] = label
                        entries += 1
                        break
                    j = slots[h]
                    if e_text[j] == target_text and e_part[j] == target_part and e_label[j] == label:
                        # the merged beam keeps its place and takes the last pair's word frames
                        a = e_score[j]
                        if a >= score:
                            cast[0] = math.log(1 + math.exp(np.float64(score - a)))
                            e_score[j] = a + cast[0]
                        else:
                            cast[0] = math.log(1 + math.exp(np.float64(a - score)))
                            e_score[j] = score + cast[0]
                        e_beam[j] = i
                        break
                    h = (h + 1) & mask

        # Rank by acoustic + LM score; drop those below the best + beam_prune_logp, then all but
        # the best beam_width (a stable sort: ties keep their order).
        for j in range(entries):
            cast[0] = e_target[j]
            ranked[j] = e_score[j] + cast[0]
        best = ranked[0]
        for j in range(1, entries):
            if ranked[j] > best:
                best = ranked[j]
        threshold = best + prune_logp  # in the acoustic dtype
        kept = np.empty(entries, np.int64)
        num_kept = 0
        for j in range(entries):
            if ranked[j] >= threshold:
                kept[num_kept] = j
                num_kept += 1
        kept = kept[:num_kept]
        kept = kept[np.argsort(-ranked[kept], kind="mergesort")]

        survivors = 0
        for j in kept[:beam_width]:
            i, label, text, part = e_beam[j], e_label[j], e_text[j], e_part[j]
            words_of, start, end = b_words[i], b_start[i], b_end[i]
            if label == blank:
                pass
            elif label == b_last[i]:
                end = frame + 1
            elif label != space:
                if part < 0:  # make it
                    parent = b_part[i]
                    part = _get(part_children, parent * num_labels + label)
                    if part < 0:
                        part = counters[2]
                        counters[2] += 1
                        length, unigram_state, hotword_state, score = _extension(parent, label, part_ints, tries, params, iparams)
                        part_ints[0, part], part_ints[1, part], part_ints[2, part] = length, unigram_state, hotword_state
                        part_scores[part], part_parents[part], part_labels[part] = score, parent, label
                        _put(part_children, parent * num_labels + label, part)
                        counters[9] += 1
                if start < 0:
                    start = frame
                end = frame + 1
            else:
                if b_part[i] != 0:
                    w = counters[3]
                    counters[3] += 1
                    word_previous[w], word_starts[w], word_ends[w] = words_of, start, end
                    words_of = w
                start, end = -1, -1
            if prune_history:
                seen = False
                for s in range(survivors):
                    if (n_part[s] == part and n_last[s] == label
                            and text_histories[n_text[s]] == text_histories[text]):
                        seen = True
                        break
                if seen:
                    continue
            n_text[survivors], n_part[survivors], n_last[survivors], n_score[survivors] = text, part, label, e_score[j]
            n_words[survivors], n_start[survivors], n_end[survivors] = words_of, start, end
            survivors += 1
        beam_ints[0, :, :survivors] = beam_ints[1, :, :survivors]
        b_score[:survivors] = n_score[:survivors]
        counters[0] = survivors
        counters[1] = frame + 1
    return DONE


class Tables:
    """Parts, texts and word frames of one search call (shared by its utterances), and the
    Python half of each text: its string, KenLM state, LM score and hotword count."""

    def __init__(self, labels: List[str], language_model, hotwords, prune_history: bool, beam_width: int,
                 beam_prune_logp: float, canonical, blank: int, dtype):
        self.labels = labels
        self.lm = language_model
        self.hotwords = hotwords
        self.prune_history = prune_history
        self.history_words = max(1, language_model.order - 1)
        self.beam_width = beam_width
        self.dtype = np.dtype(dtype)
        space = labels.index(" ") if " " in labels else -1
        num_labels = len(labels)
        self.canonical = np.array(canonical, np.int64)
        unigram_trie = language_model.trie
        unigram_codes, _ = unigram_trie.label_codes(labels)
        hotword_trie = hotwords.trie
        hotword_codes = hotword_trie.label_codes(labels)[0] if hotwords else unigram_codes  # (unread without)
        self.tries = (
            np.array([len(label) for label in labels], np.int64),
            unigram_trie.edges, unigram_codes, hotword_trie.edges, hotword_codes, hotword_trie.shortest,
        )
        self.params = np.array([language_model.unk_score_offset, hotwords.weight, beam_prune_logp], np.float64)
        self.iparams = np.array([blank, space, beam_width, int(prune_history), int(bool(hotwords)),
                                 unigram_trie._base, hotword_trie._base, num_labels], np.int64)
        self.requests = np.zeros((3, beam_width), np.int64)
        pairs = beam_width * num_labels
        slots = 1
        while slots < 2 * pairs:
            slots *= 2
        self.scratch = (np.zeros((4, pairs), np.int64), np.zeros((2, pairs), self.dtype), np.zeros(pairs, np.float64),
                        np.zeros((2, slots), np.int64))
        self.clear()

    def clear(self):
        """Forget every part, text and word frame (they are caches: the beams stay the same)."""
        language_model = self.lm
        # beams, next frame, parts, word frames, requests, answered, first row, frames, hash stamp,
        # entries in part_children, in text_children
        self.counters = np.zeros(11, np.int64)
        self.counters[2] = 1  # the empty part
        self.scratch[3][1] = 0  # hash stamps (the counter restarts)
        size = INITIAL_SIZE  # a power of 2, for the maps
        # parts: length, unigram state, hotword state, parent, label; score. Part 0 is the empty one.
        self.part_ints = np.zeros((5, size), np.int64)
        self.part_scores = np.zeros(size, np.float64)
        self.part_children, self.text_children = _new_map(size), _new_map(size)
        self.part_strings = {0: ""}
        # texts: score (LM + hotwords) and history id in arrays; string, state, LM score, hotwords here
        self.text_scores, self.text_histories = np.zeros(size, np.float64), np.zeros(size, np.int64)
        self.texts = [""]
        self.text_states = [language_model.start_state()]
        self.text_lm = [0.0]
        self.text_hotwords = [0]
        self.history_ids = {(): 0}
        self.word_ints = np.zeros((3, size), np.int64)

    # ------------------------------------------------------------- growing
    @staticmethod
    def _grown(array):
        grown = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
        grown[..., : array.shape[-1]] = array
        return grown

    def make_room(self):
        if self.counters[2] + self.beam_width > self.part_ints.shape[1]:
            self.part_ints, self.part_scores = self._grown(self.part_ints), self._grown(self.part_scores)
        if self.counters[3] + self.beam_width > self.word_ints.shape[1]:
            self.word_ints = self._grown(self.word_ints)
        if 2 * (self.counters[9] + self.beam_width) > self.part_children.shape[1]:
            self.part_children = grown_map(self.part_children)
        if 2 * (self.counters[10] + self.beam_width) > self.text_children.shape[1]:
            self.text_children = grown_map(self.text_children)

    # ------------------------------------------------------------- texts
    def part_string(self, part: int) -> str:
        strings = self.part_strings
        found = strings.get(part)
        if found is not None:
            return found
        chain = []
        parents, labels = self.part_ints[3], self.part_ints[4]
        while part not in strings:
            chain.append(part)
            part = int(parents[part])
        string = strings[part]
        for p in reversed(chain):
            string = strings[p] = string + self.labels[labels[p]]
        return string

    def add_texts(self):
        """Score the (text, part) pairs the kernel asked for: each a new text."""
        request_texts, request_parts, answers = self.requests
        count = int(self.counters[4])
        first = len(self.texts)
        while first + count > len(self.text_scores):
            self.text_scores, self.text_histories = self._grown(self.text_scores), self._grown(self.text_histories)
        texts, text_states, text_lm, text_hotwords = self.texts, self.text_states, self.text_lm, self.text_hotwords
        part_strings, hotwords = self.part_strings, self.hotwords.words
        weight = self.hotwords.weight
        scores = []
        for text, part in zip(request_texts[:count].tolist(), request_parts[:count].tolist()):
            word = part_strings.get(part) or self.part_string(part)
            score, state = self.lm.score_word(text_states[text], word)
            lm = text_lm[text] + score
            hot = text_hotwords[text] + (word in hotwords)
            texts.append(f"{texts[text]} {word}" if texts[text] else word)
            text_states.append(state)
            text_lm.append(lm)
            text_hotwords.append(hot)
            scores.append(lm + weight * hot)
        self.text_scores[first:first + count] = scores
        if self.prune_history:
            self.text_histories[first:first + count] = [
                self.history_ids.setdefault(tuple(string.split()[-self.history_words:]), len(self.history_ids))
                for string in texts[first:]]
        answers[:count] = np.arange(first, first + count)
        self.counters[5] = count

    # ------------------------------------------------------------- the end of an utterance
    def final_text(self, node):
        text, part = node
        word = self.part_string(part)
        string = self.texts[text]
        if word:
            string = f"{string} {word}" if string else word
        return string, text, word

    def final_score(self, text: int, last_word: str) -> float:
        score, _ = self.lm.score_word(self.text_states[text], last_word, is_last=True)
        hotwords = self.text_hotwords[text] + (last_word in self.hotwords.words)
        return self.text_lm[text] + score + self.hotwords.weight * hotwords

    def as_list(self, last: int):
        previous, starts, ends = self.word_ints
        frames = []
        while last >= 0:
            frames.append((int(starts[last]), int(ends[last])))
            last = int(previous[last])
        return frames[::-1]


def search(frames, tables: Tables, settings, finish):
    """The beams of each utterance (``search.search``'s result), one utterance after another."""
    offered_labels, offered_rows = settings.canonical_array[frames.labels], np.stack([frames.start, frames.count])
    counters, width = tables.counters, tables.beam_width
    beam_ints, beam_scores = np.zeros((2, 6, width), np.int64), np.zeros((2, width), tables.dtype)
    results = []
    for first_row, length in zip(frames.first_row.tolist(), frames.lengths):
        if counters[2] > MAX_PARTS:
            tables.clear()
            counters = tables.counters
        beam_ints[0, :, 0] = (0, 0, -1, -1, -1, -1)  # the empty prefix: no label, no word frames
        beam_scores[0, 0] = 0
        counters[0], counters[1], counters[6], counters[7] = 1, 0, first_row, length
        while True:
            status = step_frames(
                offered_labels, frames.values, offered_rows, counters, beam_ints, beam_scores, tables.part_ints,
                tables.part_scores, tables.part_children, tables.text_scores, tables.text_histories,
                tables.text_children, tables.word_ints, tables.tries, tables.params, tables.iparams, tables.requests,
                *tables.scratch,
            )
            if status == DONE:
                break
            if status == NEEDS_TEXTS:
                tables.add_texts()
            else:
                tables.make_room()
        n = int(counters[0])
        texts, parts, last, words, starts, ends = beam_ints[0, :, :n].tolist()
        scores = beam_scores[0, :n].tolist() if tables.dtype == np.float64 else list(beam_scores[0, :n])
        live = list(zip(zip(texts, parts), last, scores, words, starts, ends))
        results.append(finish(live, tables, tables, settings))
    return results
