"""Beam search with a KenLM model: pyctcdecode against flashlight-text's decoders (issue 7).

The library's beam search is pyctcdecode's. This benchmark measures whether flashlight-text's C++
lexicon-free decoder could replace it: both get the same log-probabilities and the same language
model object, scored the same way (pyctcdecode's word-level KenLM scoring, handed to flashlight token
by token by ``WordLM`` below), so only the search differs. It does not qualify: it is slower here
and its texts often differ (docs/transcription.md), so it lives only in this file.

Nothing is downloaded: the language model is a bigram model estimated here from a synthetic corpus,
and the "acoustic model" output is a noisy spelling of held-out sentences (peaks on the right
characters, Gaussian noise on every logit, random durations).

Reports, per noise level: milliseconds per utterance for each decoder, how often their best texts
agree with pyctcdecode's, and each one's word error rate against the sentence that was spelled. A
third column, for comparison only, is flashlight's lexicon decoder with its C++ KenLM (closed
vocabulary: it can only emit the LM's words). Without flashlight-text only pyctcdecode is measured.

    .venv/bin/python benchmarks/bench_lm_decoders.py [--utterances 20] [--beam-width 100]
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor  # noqa: E402
from wav2vec2.processing_with_lm import Wav2Vec2ProcessorWithLM  # noqa: E402
from wav2vec2.tokenization import Wav2Vec2CTCTokenizer  # noqa: E402

try:
    import flashlight.lib.text.decoder as flashlight_decoder
except ImportError:
    flashlight_decoder = None

LETTERS = "abcdefghijklmnopqrstuvwxyz'"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}


def synthetic_corpus(rng, num_words=2000, num_sentences=4000):
    """Sentences over a Zipf-distributed vocabulary of random letter strings, with some bigram structure."""
    words = sorted({"".join(rng.choice(list(LETTERS[:-1]), size=rng.integers(2, 9))) for _ in range(num_words)})
    ranks = np.arange(1, len(words) + 1)
    unigram = (1.0 / ranks) / (1.0 / ranks).sum()
    # Each word prefers a few followers, so that the bigram model has something to know.
    followers = {w: rng.choice(len(words), size=5, p=unigram) for w in words}
    sentences = []
    for _ in range(num_sentences):
        word = words[rng.choice(len(words), p=unigram)]
        sentence = [word]
        for _ in range(rng.integers(4, 14)):
            word = words[rng.choice(followers[word])] if rng.random() < 0.7 else words[rng.choice(len(words), p=unigram)]
            sentence.append(word)
        sentences.append(" ".join(sentence))
    return sentences


def write_bigram_arpa(sentences, path, discount=0.5):
    """An absolute-discounting bigram model in ARPA format (log10), enough for KenLM to load."""
    unigrams = collections.Counter()
    bigrams = collections.Counter()
    for sentence in sentences:
        tokens = ["<s>", *sentence.split(), "</s>"]
        unigrams.update(tokens[1:])
        bigrams.update(zip(tokens[:-1], tokens[1:]))
    total = sum(unigrams.values())
    history_counts = collections.Counter()
    distinct_followers = collections.Counter()
    for (first, _), count in bigrams.items():
        history_counts[first] += count
        distinct_followers[first] += 1
    vocab = ["<unk>", "<s>", *sorted(unigrams)]
    lines = ["\\data\\", f"ngram 1={len(vocab)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for word in vocab:
        prob = {"<unk>": 1e-3, "<s>": 1.0}.get(word) or unigrams[word] / total
        logp = -99.0 if word == "<s>" else math.log10(prob)
        backoff = ""
        if history_counts[word]:
            backoff = f"\t{math.log10(discount * distinct_followers[word] / history_counts[word]):.6f}"
        lines.append(f"{logp:.6f}\t{word}{backoff}")
    lines += ["", "\\2-grams:"]
    for (first, second), count in sorted(bigrams.items()):
        lines.append(f"{math.log10((count - discount) / history_counts[first]):.6f}\t{first} {second}")
    lines += ["", "\\end\\", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def spelled_log_probs(sentence, rng, noise):
    """(frames, vocab) log-probabilities of a CTC model 'hearing' ``sentence``: 1-4 frames per
    character, blanks between, a peak on the right label, Gaussian noise on every logit."""
    path = []
    for char in sentence.replace(" ", "|"):
        path += [VOCAB[char]] * int(rng.integers(1, 4)) + [VOCAB["<pad>"]] * int(rng.integers(1, 3))
    logits = rng.normal(0.0, noise, size=(len(path), len(VOCAB)))
    logits[np.arange(len(path)), path] += 5.0
    logits -= logits.max(axis=-1, keepdims=True)
    return (logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))).astype(np.float32)


class WordLM:
    """pyctcdecode's word-level KenLM scoring, offered to flashlight's lexicon-free decoder one token
    at a time.

    flashlight adds up per-token LM scores, while pyctcdecode rescores a beam from its text; the two
    agree when each token returns the change in pyctcdecode's score for the beam: the alpha/beta
    weighted KenLM score of each finished word, plus the unknown-prefix penalty of the word in
    progress. A state remembers (KenLM state, finished words' score, word in progress, total).
    """

    def __init__(self, language_model, labels):
        word_lm = self

        class Scorer(flashlight_decoder.LM):  # pybind11 needs a direct subclass; it forwards here
            def start(self, start_with_nothing):
                return word_lm.start()

            def score(self, state, token):
                return word_lm.score(state, token)

            def finish(self, state):
                return word_lm.finish(state)

        self.scorer = Scorer()
        self.language_model = language_model
        self.labels = labels
        self.states = {}
        self.steps = {}
        self.partial_scores = {}

    def _partial_score(self, word):
        if word not in self.partial_scores:
            self.partial_scores[word] = self.language_model.score_partial_token(word) if word else 0.0
        return self.partial_scores[word]

    def _state(self, kenlm_state, words_score, partial):
        return kenlm_state, words_score, partial, words_score + self._partial_score(partial)

    def start(self):
        root = flashlight_decoder.LMState()
        self.steps = {}  # (state, token) -> (next state, score change): the decoder asks many times
        self.states = {root: self._state(self.language_model.get_start_state(), 0.0, "")}
        return root

    def score(self, state, token):
        step = self.steps.get((state, token))
        if step is None:
            step = self.steps[state, token] = self._step(state, token)
        return step

    def _step(self, state, token):
        kenlm_state, words_score, partial, total = self.states[state]
        label = self.labels[token]
        if label == " " and not partial:
            return state, 0.0  # a second space changes nothing: stay in the same state, so beams merge
        child = state.child(token)
        if label == " ":  # the word in progress is finished: KenLM scores it
            word_score, next_state = self.language_model.score(kenlm_state, partial)
            self.states[child] = self._state(next_state, words_score + word_score, "")
        else:
            self.states[child] = self._state(kenlm_state, words_score, partial + label)
        return child, self.states[child][3] - total

    def finish(self, state):
        # The last word (possibly empty, when the text ends in a space) is scored with the sentence end.
        kenlm_state, words_score, partial, total = self.states[state]
        word_score, _ = self.language_model.score(kenlm_state, partial, is_last_word=True)
        return state, words_score + word_score - total


class LexiconFreeBeamSearch:
    """flashlight's lexicon-free decoder (C++) over a pyctcdecode decoder's alphabet and language
    model, with pyctcdecode's default pruning: only the search differs from pyctcdecode's."""

    def __init__(self, pyctcdecode_decoder, beam_width=100, beam_prune_logp=-10.0, token_min_logp=-5.0):
        self.labels = pyctcdecode_decoder._alphabet.labels  # "" is the blank, " " the word delimiter
        self.language_model = pyctcdecode_decoder._language_model
        self.beam_width, self.beam_prune_logp, self.token_min_logp = beam_width, beam_prune_logp, token_min_logp

    def decode(self, log_probs):
        emissions = np.array(log_probs, dtype=np.float32)  # (frames, labels)
        frames, num_labels = emissions.shape
        # Like pyctcdecode, expand only tokens above token_min_logp (and each frame's best): the
        # others are pushed out of flashlight's per-frame top-k, which is as wide as the widest frame.
        expand = (emissions >= self.token_min_logp) | (emissions == emissions.max(axis=-1, keepdims=True))
        emissions[~expand] = -1e9
        options = flashlight_decoder.LexiconFreeDecoderOptions(
            beam_size=self.beam_width, beam_size_token=int(expand.sum(axis=-1).max()),
            beam_threshold=-self.beam_prune_logp, lm_weight=1.0, sil_score=0.0, log_add=True,
            criterion_type=flashlight_decoder.CriterionType.CTC,
        )
        word_lm = WordLM(self.language_model, self.labels)
        search = flashlight_decoder.LexiconFreeDecoder(
            options, word_lm.scorer, self.labels.index(" "), self.labels.index(""), []
        )
        best = search.decode(emissions.ctypes.data, frames, num_labels)[0]
        # tokens: one label per frame, with a leading and a trailing sentence marker.
        path = [self.labels[token] for token, _ in itertools.groupby(best.tokens[1:-1])]
        return " ".join("".join(path).split())


class LexiconBeamSearch:
    """For comparison only: flashlight's lexicon decoder with its C++ KenLM, words spelled letter by
    letter and ended by the word delimiter. A closed vocabulary (the LM's unigrams), so a different
    decoder; the weights follow pyctcdecode's (LM weight alpha * ln 10 on log10 scores, beta per word)."""

    def __init__(self, arpa_path, words, alpha=0.5, beta=1.5, beam_width=100):
        from flashlight.lib.text.decoder import (
            CriterionType, LexiconDecoder, LexiconDecoderOptions, SmearingMode, Trie,
        )
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import create_word_dict

        lexicon = {word: [[*word, "|"]] for word in words}
        lexicon["<unk>"] = []
        self.words = create_word_dict(lexicon)
        lm = KenLM(arpa_path, self.words)
        trie = Trie(len(VOCAB), VOCAB["|"])
        start = lm.start(False)
        for word, spellings in lexicon.items():
            index = self.words.get_index(word)
            _, score = lm.score(start, index)
            for spelling in spellings:
                trie.insert([VOCAB[c] for c in spelling], index, score)
        trie.smear(SmearingMode.MAX)
        options = LexiconDecoderOptions(
            beam_size=beam_width, beam_size_token=len(VOCAB), beam_threshold=10.0, lm_weight=alpha * math.log(10),
            word_score=beta, unk_score=-math.inf, sil_score=0.0, log_add=True, criterion_type=CriterionType.CTC,
        )
        self.lm, self.trie = lm, trie  # the decoder keeps raw pointers to both
        self.decoder = LexiconDecoder(
            options, trie, lm, VOCAB["|"], VOCAB["<pad>"], self.words.get_index("<unk>"), [], False
        )

    def decode(self, log_probs):
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        best = self.decoder.decode(emissions.ctypes.data, *emissions.shape)[0]
        return " ".join(self.words.get_entry(i) for i in best.words if i >= 0)


def word_errors(hypothesis, reference):
    """Levenshtein distance between word sequences."""
    hyp, ref = hypothesis.split(), reference.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=20, help="utterances per noise level")
    parser.add_argument("--beam-width", type=int, default=100)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # pyctcdecode's notes about the alphabet

    rng = np.random.default_rng(0)
    sentences = synthetic_corpus(rng)
    train, test = sentences[: -args.utterances * len(args.noise)], sentences[-args.utterances * len(args.noise):]
    with tempfile.TemporaryDirectory() as tmp:
        arpa = os.path.join(tmp, "lm.arpa")
        write_bigram_arpa(train, arpa)
        tokenizer = Wav2Vec2CTCTokenizer(vocab=VOCAB)
        processor = Wav2Vec2ProcessorWithLM.from_kenlm(Wav2Vec2FeatureExtractor(), tokenizer, arpa)
        # name -> log-probabilities (frames, vocab) to best text
        decoders = {"pyctcdecode": lambda log_probs: processor.decode(log_probs, beam_width=args.beam_width).text}
        if flashlight_decoder is None:
            print("flashlight-text is not installed: measuring pyctcdecode only")
        else:
            decoders["flashlight"] = LexiconFreeBeamSearch(processor.decoder, beam_width=args.beam_width).decode
            unigrams = sorted({w for sentence in train for w in sentence.split()})
            decoders["lexicon"] = LexiconBeamSearch(arpa, unigrams, beam_width=args.beam_width).decode
        compared = [name for name in decoders if name != "pyctcdecode"]

        print(f"beam width {args.beam_width}; {args.utterances} utterances per noise level")
        header = f"{'noise':>5} {'frames':>7} {'greedy WER':>10} | {'pyctcdecode ms':>14} {'WER':>6}"
        for name in compared:
            header += f" | {name + ' ms':>13} {'WER':>6} {'same text':>9}"
        print(header)
        results = []
        for level, noise in enumerate(args.noise):
            batch = test[level * args.utterances:(level + 1) * args.utterances]
            log_probs = [spelled_log_probs(s, rng, noise) for s in batch]
            words = sum(len(s.split()) for s in batch)
            greedy = [tokenizer.decode(lp.argmax(-1)) for lp in log_probs]
            row = {"noise": noise, "frames": float(np.mean([len(lp) for lp in log_probs])),
                   "greedy_wer": sum(word_errors(g, s) for g, s in zip(greedy, batch)) / words}
            texts = {}
            for name, decode in decoders.items():
                decode(log_probs[0])  # warm the caches
                start = time.perf_counter()
                texts[name] = [decode(lp) for lp in log_probs]
                row[f"{name}_ms"] = 1000 * (time.perf_counter() - start) / len(log_probs)
                row[f"{name}_wer"] = sum(word_errors(t, s) for t, s in zip(texts[name], batch)) / words
            for name in compared:
                same = [a == b for a, b in zip(texts["pyctcdecode"], texts[name])]
                row[f"{name}_agreement"] = float(np.mean(same))
            results.append(row)
            line = (f"{noise:5.1f} {row['frames']:7.0f} {row['greedy_wer']:10.1%} | "
                    f"{row['pyctcdecode_ms']:14.1f} {row['pyctcdecode_wer']:6.1%}")
            for name in compared:
                line += f" | {row[name + '_ms']:13.1f} {row[name + '_wer']:6.1%} {row[name + '_agreement']:9.0%}"
            print(line)
        if args.json:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
