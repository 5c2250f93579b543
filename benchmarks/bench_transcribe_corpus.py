"""Corpus transcription throughput: one process against Ray Data with 1 and 2 actors, same files and model.

Builds a random CTC checkpoint of wav2vec2-base shapes (nothing can be downloaded) and a corpus of
espeak-ng sentences (about 10 s each), then runs ``wav2vec2 transcribe --input-dir ... --output ...``
each way, ``--repeats`` times interleaved, and prints each run's summary line (audio per second).
Each Ray run starts its own local Ray, so its times include Ray's start-up and the actors' model loading.

    python benchmarks/bench_transcribe_corpus.py --files 24 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SENTENCES = [
    "the quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate",
    "a wizard's job is to vex chumps quickly in fog and then to vanish before anyone can ask him why",
    "pack my box with five dozen liquor jugs and carry it carefully down the long and narrow staircase",
]


def build_checkpoint(directory: str) -> None:
    from wav2vec2 import Wav2Vec2Config
    from wav2vec2.backends.torch import Wav2Vec2ForCTC
    from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
    from wav2vec2.tokenization import Wav2Vec2CTCTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz'"
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(letters)}}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    config = Wav2Vec2Config.preset("base", vocab_size=len(vocab), pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    Wav2Vec2CTCTokenizer(os.path.join(directory, "vocab.json")).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(directory)


def build_corpus(directory: str, files: int) -> float:
    import soundfile
    import soxr

    os.makedirs(directory, exist_ok=True)
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        spoken = []
        for i, sentence in enumerate(SENTENCES):
            path = os.path.join(tmp, f"{i}.wav")
            subprocess.run(["espeak-ng", "-w", path, sentence, sentence], check=True, capture_output=True)
            samples, rate = soundfile.read(path, dtype="float32")
            spoken.append(soxr.resample(samples, rate, 16000).astype(np.float32))
    for i in range(files):
        samples = spoken[i % len(spoken)]
        soundfile.write(os.path.join(directory, f"{i:04d}.flac"), samples, 16000)
        seconds += samples.size / 16000
    return seconds


def run(command, env) -> str:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    summary = [line for line in done.stderr.splitlines() if re.search(r"\d+ done, \d+ failed", line)]
    if done.returncode != 0 or not summary:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return f"{summary[-1].split(': ', 1)[1]}  [process wall {wall:.1f} s]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    work = tempfile.mkdtemp(prefix="bench_corpus_")
    try:
        build_checkpoint(os.path.join(work, "model"))
        seconds = build_corpus(os.path.join(work, "audio"), args.files)
        print(f"{args.files} files, {seconds:.0f} s of audio; wav2vec2-base shapes, random weights, torch fp32, "
              f"batch {args.batch_size}; {os.cpu_count()} CPUs")
        ways = {
            "one process": [],
            "Ray, 1 actor": ["--ray", "--actors", "1"],
            "Ray, 2 actors x 1 CPU": ["--ray", "--actors", "2"],
        }
        for repeat in range(args.repeats):
            for name, extra in ways.items():
                output = os.path.join(work, "results.jsonl")
                if os.path.exists(output):
                    os.remove(output)
                command = [sys.executable, "-m", "wav2vec2", "transcribe", "--input-dir", os.path.join(work, "audio"),
                           "--model", os.path.join(work, "model"), "--output", output, "--batch-size",
                           str(args.batch_size), "--no-progress", *extra]
                print(f"[{repeat}] {name:24s} {run(command, env)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
