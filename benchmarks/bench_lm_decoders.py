"""Beam search with a KenLM model: pyctcdecode against flashlight-text's lexicon-free decoder.

Both decoders get the same log-probabilities and the same language model object, scored the same
way (pyctcdecode's word-level KenLM scoring; see wav2vec2.processing_with_lm.FlashlightDecoder), so
only the search differs. Nothing is downloaded: the language model is a bigram model estimated here
from a synthetic corpus, and the "acoustic model" output is a noisy spelling of held-out sentences
(peaks on the right characters, Gaussian noise on every logit, random durations).

Reports, per noise level: milliseconds per utterance for each decoder, how often their best texts
agree with pyctcdecode's, and each one's word error rate against the sentence that was spelled. A
third column, for comparison only, is flashlight's lexicon decoder with its C++ KenLM (closed
vocabulary: it can only emit the LM's words).

    .venv/bin/python benchmarks/bench_lm_decoders.py [--utterances 20] [--beam-width 100]
"""
from __future__ import annotations

import argparse
import collections
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
        extractor = Wav2Vec2FeatureExtractor()
        decoders = {
            "pyctcdecode": Wav2Vec2ProcessorWithLM.from_kenlm(extractor, tokenizer, arpa),
            "flashlight": Wav2Vec2ProcessorWithLM.from_kenlm(extractor, tokenizer, arpa, decoder="flashlight"),
        }
        unigrams = sorted({w for sentence in train for w in sentence.split()})
        lexicon = LexiconBeamSearch(arpa, unigrams, beam_width=args.beam_width)
        results = []
        print(f"beam width {args.beam_width}; {args.utterances} utterances per noise level")
        print(f"{'noise':>5} {'frames':>7} {'greedy WER':>10} | {'pyctcdecode ms':>14} {'WER':>6} | "
              f"{'flashlight ms':>13} {'WER':>6} {'same text':>9} | {'lexicon ms':>10} {'WER':>6} {'same text':>9}")
        for level, noise in enumerate(args.noise):
            batch = test[level * args.utterances:(level + 1) * args.utterances]
            log_probs = [spelled_log_probs(s, rng, noise) for s in batch]
            words = sum(len(s.split()) for s in batch)
            greedy = [tokenizer.decode(lp.argmax(-1)) for lp in log_probs]
            row = {"noise": noise, "frames": float(np.mean([len(lp) for lp in log_probs])),
                   "greedy_wer": sum(word_errors(g, s) for g, s in zip(greedy, batch)) / words}
            texts = {}
            for name, processor in decoders.items():
                processor.decode(log_probs[0], beam_width=args.beam_width)  # warm the caches
                start = time.perf_counter()
                texts[name] = [processor.decode(lp, beam_width=args.beam_width).text for lp in log_probs]
                row[f"{name}_ms"] = 1000 * (time.perf_counter() - start) / len(log_probs)
                row[f"{name}_wer"] = sum(word_errors(t, s) for t, s in zip(texts[name], batch)) / words
            start = time.perf_counter()
            texts["lexicon"] = [lexicon.decode(lp) for lp in log_probs]
            row["lexicon_ms"] = 1000 * (time.perf_counter() - start) / len(log_probs)
            row["lexicon_wer"] = sum(word_errors(t, s) for t, s in zip(texts["lexicon"], batch)) / words
            for name in ("flashlight", "lexicon"):
                same = [a == b for a, b in zip(texts["pyctcdecode"], texts[name])]
                row[f"{name}_agreement"] = float(np.mean(same))
            results.append(row)
            print(f"{noise:5.1f} {row['frames']:7.0f} {row['greedy_wer']:10.1%} | {row['pyctcdecode_ms']:14.1f} "
                  f"{row['pyctcdecode_wer']:6.1%} | {row['flashlight_ms']:13.1f} {row['flashlight_wer']:6.1%} "
                  f"{row['flashlight_agreement']:9.0%} | {row['lexicon_ms']:10.1f} {row['lexicon_wer']:6.1%} "
                  f"{row['lexicon_agreement']:9.0%}")
        if args.json:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
