"""Beam search with a KenLM model: wav2vec2.lm against the reference decoder (pyctcdecode).

Both decoders get the same log-probabilities and the same KenLM file, with the reference's defaults
(beam width 100, beam_prune_logp -10, token_min_logp -5, alpha 0.5, beta 1.5). For every utterance
the benchmark checks that every beam agrees (text, word frames, logit and LM scores) and times both,
interleaved utterance by utterance (the order alternates), then times our batched decoding.

Nothing is downloaded and nothing is trained. The language model is a bigram model estimated here
from a synthetic corpus (a Zipf-distributed vocabulary of 2,000 random letter strings with some
bigram structure). The utterances spell held-out sentences of that corpus in three ways:
- "noisy": Gaussian noise on every logit of a weak peak (the old benchmark's input): many labels
  pass token_min_logp in every frame, so the search is wide;
- "peaked": a peaked random process, a stand-in for a trained model: a CTC-like alignment (blanks,
  repeats), a strong peak per frame whose height varies, occasional confusions with another label,
  and background noise;
- "model": espeak-ng speech of the sentences through a small random CTC model (our PyTorch
  backend, head sharpened); the model knows nothing, so its output is structured noise. Skipped
  without torch or espeak-ng.

With numba installed our search steps frames in its compiled kernel (``wav2vec2/lm/kernel.py``);
``--python-steps`` times the Python/NumPy steps instead. Batches are timed in this process and in a
fork-context pool of ``--processes`` workers.

    python benchmarks/bench_lm_decoders.py [--utterances 80] [--beam-width 100] [--batch-size 0]
        [--processes 2] [--python-steps] [--json]
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from wav2vec2.lm import BeamSearchDecoder, LanguageModel, build_alphabet, search  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz'"
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *LETTERS]


def synthetic_corpus(rng, num_words=2000, num_sentences=4000):
    """Sentences over a Zipf-distributed vocabulary of random letter strings, with some bigram structure."""
    words = sorted({"".join(rng.choice(list(LETTERS[:-1]), size=rng.integers(2, 9))) for _ in range(num_words)})
    ranks = np.arange(1, len(words) + 1)
    unigram = (1.0 / ranks) / (1.0 / ranks).sum()
    followers = {w: rng.choice(len(words), size=5, p=unigram) for w in words}  # each word prefers a few
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
    unigrams, bigrams = collections.Counter(), collections.Counter()
    for sentence in sentences:
        tokens = ["<s>", *sentence.split(), "</s>"]
        unigrams.update(tokens[1:])
        bigrams.update(zip(tokens[:-1], tokens[1:]))
    total = sum(unigrams.values())
    history_counts, distinct_followers = collections.Counter(), collections.Counter()
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


def _alignment(sentence, rng, letter_frames=(1, 4), blank_frames=(1, 3)):
    """A CTC path spelling ``sentence``: each label repeated, blanks between (always between doubles)."""
    path = [0] * int(rng.integers(0, 4))
    for char in sentence.replace(" ", "|"):
        if path and path[-1] == VOCAB.index(char):
            path.append(0)
        path += [VOCAB.index(char)] * int(rng.integers(*letter_frames)) + [0] * int(rng.integers(*blank_frames))
    return np.array(path)


def noisy_log_probs(sentence, rng, noise):
    path = _alignment(sentence, rng)
    logits = rng.normal(0.0, noise, size=(len(path), len(VOCAB)))
    logits[np.arange(len(path)), path] += 5.0
    return logits.astype(np.float32)


def peaked_log_probs(sentence, rng, confusion=0.12):
    """A strong peak per frame (height 6-14 over noise of scale 1.5), and in ``confusion`` of the
    frames a second label (another letter, or the blank) close behind or ahead."""
    path = _alignment(sentence, rng)
    frames = len(path)
    logits = rng.normal(0.0, 1.5, size=(frames, len(VOCAB)))
    peaks = rng.uniform(6.0, 14.0, size=frames)
    logits[np.arange(frames), path] += peaks
    confused = np.flatnonzero(rng.random(frames) < confusion)
    rival = rng.choice([0, *range(5, len(VOCAB))], size=len(confused))
    logits[confused, rival] += peaks[confused] - rng.uniform(-1.0, 3.0, size=len(confused))
    return logits.astype(np.float32)


def model_log_probs(sentences, rng):
    """log-softmax logits of a small random CTC model on espeak-ng speech; None without torch or espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return None
    try:
        import soundfile
        import soxr
        import torch

        from conformance.cases import small_config
        from wav2vec2.backends.torch import Wav2Vec2ForCTC
    except ImportError:
        return None
    torch.manual_seed(0)
    config = small_config("stable", vocab_size=len(VOCAB), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                          hidden_dropout=0.0, pad_token_id=0)
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():  # a random head is flat: sharpen it and favour the blank, as trained heads do
        model.lm_head.weight.mul_(25.0)
        model.lm_head.bias[0] += 6.0
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for sentence in sentences:
            path = os.path.join(tmp, "speech.wav")
            subprocess.run(["espeak-ng", "-w", path, sentence], check=True, capture_output=True)
            speech, rate = soundfile.read(path, dtype="float32")
            speech = soxr.resample(speech, rate, 16000).astype(np.float32)
            with torch.no_grad():
                logits = model(torch.from_numpy(speech)[None]).logits[0]
            out.append(torch.log_softmax(logits, -1).numpy())
    return out


def corpus(test_sentences, utterances, rng):
    """name -> list of (frames, vocab) arrays."""
    sources = {
        "noisy": [noisy_log_probs(s, rng, noise) for s, noise in
                  zip(test_sentences[:utterances], np.resize([1.0, 1.5, 2.0], utterances))],
        "peaked": [peaked_log_probs(s, rng) for s in test_sentences[utterances:2 * utterances]],
    }
    model = model_log_probs(test_sentences[2 * utterances:3 * utterances], rng)
    if model is not None:
        sources["model"] = model
    return sources


def compare(ours, reference):
    """(same best text, same best word offsets, same beams (texts and offsets), largest score difference)."""
    reference = [(text, frames, logit, lm) for text, _, frames, logit, lm in reference]
    ours = [(b.text, b.word_frames, b.logit_score, b.lm_score) for b in ours]
    same_beams = [b[:2] for b in ours] == [b[:2] for b in reference]
    difference = max((abs(a - b) for x, y in zip(ours, reference) for a, b in zip(x[2:], y[2:])), default=0.0)
    return ours[0][0] == reference[0][0], ours[0][1] == reference[0][1], same_beams, difference


def print_row(row):
    print(f"{row['source']:>7} {row['utterances']:5d} {row['frames']:6.0f} | {row['same_text']:9d} {row['same_offsets']:8d} "
          f"{row['same_beams']:6d} {row['max_score_difference']:13.1e} | {row['pyctcdecode_ms']:14.1f} "
          f"{row['ours_ms']:8.1f} {row['speedup']:5.1f} {row['speedup_median']:5.1f} | "
          f"{row['batched_ms']:10.1f} {row['batched_speedup']:5.1f} | {row['pool_ms']:7.1f} {row['pool_speedup']:5.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=80, help="utterances per source")
    parser.add_argument("--beam-width", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=0, help="utterances per batched call (0: a source at once)")
    parser.add_argument("--processes", type=int, default=2, help="workers of the pool for batches (0: none)")
    parser.add_argument("--python-steps", action="store_true", help="time the Python/NumPy steps, not the kernel")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    if args.python_steps:
        search.COMPILED = False
    logging.disable(logging.WARNING)  # pyctcdecode's notes about the alphabet and unigrams
    from pyctcdecode import build_ctcdecoder

    rng = np.random.default_rng(0)
    sentences = synthetic_corpus(rng)
    train, test = sentences[: -3 * args.utterances], sentences[-3 * args.utterances:]
    with tempfile.TemporaryDirectory() as tmp:
        arpa = os.path.join(tmp, "lm.arpa")
        write_bigram_arpa(train, arpa)
        reference = build_ctcdecoder(VOCAB, arpa)
        ours = BeamSearchDecoder(build_alphabet(VOCAB), LanguageModel.from_file(arpa))
        sources = corpus(test, args.utterances, rng)

        options = dict(beam_width=args.beam_width)
        # First use builds the unigram trie and loads (or compiles) the kernel.
        ours.decode_beams_batch([batch[0] for batch in sources.values()], **options)
        pool = multiprocessing.get_context("fork").Pool(args.processes) if args.processes > 1 else None
        load = os.getloadavg()[0]
        steps = "compiled kernel (numba)" if search.COMPILED else "Python/NumPy steps"
        print(f"beam width {args.beam_width}; ours: {steps}; load average {load:.1f} on {os.cpu_count()} CPUs "
              f"(a shared machine)")
        print(f"{'source':>7} {'utts':>5} {'frames':>6} | {'same text':>9} {'offsets':>8} {'beams':>6} {'max |d score|':>13} | "
              f"{'pyctcdecode ms':>14} {'ours ms':>8} {'x':>5} {'x med':>5} | {'batched ms':>10} {'x':>5} | "
              f"{'pool ms':>7} {'x':>5}")
        results = []
        totals = collections.defaultdict(float)
        for name, batch in sources.items():
            reference_times, our_times, agreement, alone = [], [], [], []
            for i, log_probs in enumerate(batch):
                order = [("reference", reference), ("ours", ours)][:: 1 if i % 2 else -1]
                for who, decoder in order:
                    start = time.perf_counter()
                    beams = decoder.decode_beams(log_probs, **options)
                    elapsed = time.perf_counter() - start
                    if who == "reference":
                        reference_beams, reference_times = beams, reference_times + [elapsed]
                    else:
                        our_beams, our_times = beams, our_times + [elapsed]
                agreement.append(compare(our_beams, reference_beams))
                alone.append(our_beams)
            size = args.batch_size or len(batch)
            start = time.perf_counter()
            batched = [beams for first in range(0, len(batch), size)
                       for beams in ours.decode_beams_batch(batch[first:first + size], **options)]
            batched_time = time.perf_counter() - start
            if batched != alone:
                raise AssertionError(f"{name}: batched decoding differs from decoding one by one")
            pool_time = math.nan
            if pool is not None:
                start = time.perf_counter()
                pooled = [beams for first in range(0, len(batch), size)
                          for beams in ours.decode_beams_batch(batch[first:first + size], pool=pool, **options)]
                pool_time = time.perf_counter() - start
                if pooled != alone:
                    raise AssertionError(f"{name}: decoding in a pool differs from decoding one by one")
            reference_times, our_times = np.array(reference_times), np.array(our_times)
            row = {
                "source": name, "utterances": len(batch), "frames": float(np.mean([len(b) for b in batch])),
                "same_text": sum(a[0] for a in agreement), "same_offsets": sum(a[1] for a in agreement),
                "same_beams": sum(a[2] for a in agreement), "max_score_difference": max(a[3] for a in agreement),
                "pyctcdecode_ms": 1000 * float(np.median(reference_times)), "ours_ms": 1000 * float(np.median(our_times)),
                "speedup": float(reference_times.sum() / our_times.sum()),
                "speedup_median": float(np.median(reference_times / our_times)),
                "batched_ms": 1000 * batched_time / len(batch), "batched_speedup": float(reference_times.sum() / batched_time),
                "pool_ms": 1000 * pool_time / len(batch), "pool_speedup": float(reference_times.sum() / pool_time),
                "ratios": reference_times / our_times,
            }
            for key, value in [("utterances", len(batch)), ("frames", row["frames"] * len(batch)),
                               ("reference", reference_times.sum()), ("ours", our_times.sum()),
                               ("batched", batched_time), ("pool", pool_time)]:
                totals[key] += value
            results.append(row)
            print_row(row)
        if pool is not None:
            pool.close()
            pool.join()
        everything = {
            "source": "all", "utterances": int(totals["utterances"]), "frames": totals["frames"] / totals["utterances"],
            **{key: sum(row[key] for row in results) for key in ["same_text", "same_offsets", "same_beams"]},
            "max_score_difference": max(row["max_score_difference"] for row in results),
            "pyctcdecode_ms": 1000 * totals["reference"] / totals["utterances"],
            "ours_ms": 1000 * totals["ours"] / totals["utterances"],
            "speedup": totals["reference"] / totals["ours"],
            "speedup_median": float(np.median(np.concatenate([row["ratios"] for row in results]))),
            "batched_ms": 1000 * totals["batched"] / totals["utterances"],
            "batched_speedup": totals["reference"] / totals["batched"],
            "pool_ms": 1000 * totals["pool"] / totals["utterances"], "pool_speedup": totals["reference"] / totals["pool"],
        }
        print_row(everything)
        results.append(everything)
        for row in results:
            row.pop("ratios", None)
        print("ms: median per utterance (all: mean; batched and pool: mean over one call per source); x: total "
              "pyctcdecode time / total ours; x med: median of per-utterance ratios")
        if args.json:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
