"""Speed of the Flax backend (jit) against the reference FlaxWav2Vec2Model (jit), in one run.

Both run the same random weights on one utterance, fp32, on whatever device JAX picks (the CPU
here). The reference Flax only supports the stable-layer-norm architecture, so the comparison uses
it (base-size shapes with layer-norm convs and a pre-norm encoder, as REFERENCE.md's figure did,
and optionally large-lv60); our base (group-norm, post-norm) model is timed alone. Runs of the two
implementations are interleaved, so load from other processes hits both alike; medians reported.

    .venv/bin/python benchmarks/bench_flax.py [--seconds 10] [--repeats 7] [--large]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from wav2vec2 import Wav2Vec2Config  # noqa: E402
from wav2vec2.backends import flax as wf  # noqa: E402
from wav2vec2.spec.names import to_flax_tree  # noqa: E402

SAMPLE_RATE = 16_000
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.0)


def ours_forward(config):
    model = wf.Wav2Vec2Model(config)
    forward = jax.jit(lambda params, x: model.module.apply({"params": params}, x).last_hidden_state)
    return model, lambda x: forward(model.params, x)


def reference_forward(config, ours_model):
    import transformers

    ref = transformers.FlaxWav2Vec2Model(transformers.Wav2Vec2Config(**config.to_dict()), _do_init=False)
    params = jax.tree_util.tree_map(jax.numpy.asarray, to_flax_tree(ours_model.canonical_state_dict()))
    forward = jax.jit(lambda p, x: ref.module.apply({"params": p}, x, deterministic=True, return_dict=True).last_hidden_state)
    return lambda x: forward(params, x)


def timed(fn, x) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(x))
    return time.perf_counter() - start


def compare(name, config, x, repeats, with_reference=True):
    model, ours = ours_forward(config)
    contenders = {"ours": ours}
    if with_reference:
        reference = reference_forward(config, model)
        contenders["reference"] = reference
        difference = float(np.abs(np.asarray(ours(x)) - np.asarray(reference(x))).max())
        print(f"{name}: max |ours - reference| = {difference:.2e}")
    for fn in contenders.values():  # warm-up: compile and run once more
        fn(x)
        timed(fn, x)
    times = {label: [] for label in contenders}
    for _ in range(repeats):  # interleaved
        for label, fn in contenders.items():
            times[label].append(timed(fn, x))
    audio_seconds = x.shape[1] / SAMPLE_RATE
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{name:34s} {label:9s} median {median * 1000:8.1f} ms  {audio_seconds / median:6.1f}x real time"
              f"  (runs: {', '.join(f'{v * 1000:.0f}' for v in values)})")
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--large", action="store_true", help="also time the large-lv60 shapes")
    args = parser.parse_args()

    x = np.random.default_rng(0).standard_normal((1, int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; one {args.seconds:g} s utterance, fp32")
    stable_base = Wav2Vec2Config.preset(
        "base", feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, **NO_DROPOUT
    )
    compare("base shapes, stable layer norm", stable_base, x, args.repeats)
    compare("base (group norm, post-norm)", Wav2Vec2Config.preset("base", **NO_DROPOUT), x, args.repeats,
            with_reference=False)
    if args.large:
        compare("large-lv60", Wav2Vec2Config.preset("large-lv60", **NO_DROPOUT), x, args.repeats)


if __name__ == "__main__":
    main()
