"""Inference speed of the Keras 3 backend against the reference TFWav2Vec2Model: eager, graph, XLA.

Base shapes (Wav2Vec2Config.preset("base")), random weights identical in both models (ours are written
as tf_model.h5 and loaded by the reference), one utterance, fp32, on whatever CPU runs this. Graph is
tf.function without XLA (TensorFlow's own kernels, oneDNN on x86, with its fusions); XLA is
tf.function(jit_compile=True). The six variants run interleaved, round after round, so that load from other processes hits them alike;
the medians are reported.

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/bench_tensorflow.py [--seconds 10] [--rounds 7]
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from wav2vec2 import Wav2Vec2Config  # noqa: E402
from wav2vec2.backends.tensorflow import Wav2Vec2Model  # noqa: E402

SAMPLE_RATE = 16_000


def build_models(config):
    import transformers

    ours = Wav2Vec2Model(config)
    with tempfile.TemporaryDirectory() as directory:
        ours.save_pretrained(directory, format="tensorflow")
        reference = transformers.TFWav2Vec2Model.from_pretrained(directory)
    return ours, reference


def variants(ours, reference):
    """name -> a function of the waveform batch returning the last hidden state."""
    ours_xla = tf.function(lambda x: ours(x).last_hidden_state, jit_compile=True)
    reference_xla = tf.function(lambda x: reference(x, training=False).last_hidden_state, jit_compile=True)
    return {
        "ours eager": lambda x: ours(x).last_hidden_state,
        "ours graph": tf.function(lambda x: ours(x).last_hidden_state),
        "ours XLA": ours_xla,
        "reference eager": lambda x: reference(x, training=False).last_hidden_state,
        "reference graph": tf.function(lambda x: reference(x, training=False).last_hidden_state),
        "reference XLA": reference_xla,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds after the warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    config = Wav2Vec2Config.preset("base")
    ours, reference = build_models(config)
    waveform = tf.constant(np.random.default_rng(0).standard_normal((1, int(args.seconds * SAMPLE_RATE))), tf.float32)
    runs = variants(ours, reference)

    outputs = {name: run(waveform).numpy() for name, run in runs.items()}  # also compiles the XLA variants
    for name, output in outputs.items():
        difference = np.abs(output - outputs["reference eager"]).max()
        print(f"{name:16s} max |difference| from reference eager: {difference:.2e}")
    for _ in range(args.warmup):
        for run in runs.values():
            run(waveform).numpy()

    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(waveform).numpy()
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{args.seconds:g} s of audio, batch 1, fp32, median of {args.rounds} interleaved rounds")
    print(f"{'variant':16s} {'median s':>9s} {'min s':>7s} {'x real time':>12s}")
    for name, median in medians.items():
        print(f"{name:16s} {median:9.3f} {min(times[name]):7.3f} {args.seconds / median:12.1f}")
    print(f"\nours eager / reference eager: {medians['ours eager'] / medians['reference eager']:.2f}x the time")
    print(f"ours graph / reference graph: {medians['ours graph'] / medians['reference graph']:.2f}x the time")
    print(f"ours XLA   / reference XLA:   {medians['ours XLA'] / medians['reference XLA']:.2f}x the time")
    best_ours, best_reference = min(medians, key=lambda n: medians[n] if n.startswith("ours") else 1e9), min(
        medians, key=lambda n: medians[n] if n.startswith("reference") else 1e9)
    print(f"fastest: {best_ours} / {best_reference}: {medians[best_ours] / medians[best_reference]:.2f}x the time")


if __name__ == "__main__":
    main()
