"""Inference speed of wav2vec2.backends.torch against the reference transformers Wav2Vec2Model (SDPA).

Both models get the same random weights (base shapes by default). Runs are interleaved, reference
then ours then reference..., so that load from other jobs on a shared machine hits both alike, and
the medians are reported.

    python benchmarks/bench_torch.py                       # one 10 s utterance, fp32, CPU
    python benchmarks/bench_torch.py --device cuda --dtype bf16 --batch 16
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from wav2vec2 import Wav2Vec2Config
from wav2vec2.backends.torch import Wav2Vec2Model

SAMPLE_RATE = 16_000
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_models(preset: str, device: str, dtype: torch.dtype):
    """(reference, ours) with identical random weights, in eval mode on ``device`` in ``dtype``."""
    import transformers

    config = Wav2Vec2Config.preset(preset)
    reference_config = transformers.Wav2Vec2Config(**config.to_dict(), attn_implementation="sdpa")
    reference = transformers.Wav2Vec2Model(reference_config)
    assert reference.config._attn_implementation == "sdpa"
    state = {
        k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"):
        v.numpy() for k, v in reference.state_dict().items()
    }
    ours = Wav2Vec2Model(config)
    ours.load_canonical_state_dict(state)
    return reference.eval().to(device, dtype), ours.eval().to(device, dtype)


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base", help="Wav2Vec2Config preset (default: base)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per utterance")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    reference, ours = build_models(args.preset, args.device, dtype)
    samples = int(args.seconds * SAMPLE_RATE)
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((args.batch, samples)).astype(np.float32))
    audio = audio.to(args.device, dtype)

    runs = {"reference": lambda: reference(audio).last_hidden_state, "ours": lambda: ours(audio).last_hidden_state}
    times = {name: [] for name in runs}
    with torch.inference_mode():
        difference = (runs["ours"]().float() - runs["reference"]().float()).abs().max().item()
        for _ in range(args.warmup):
            for fn in runs.values():
                fn()
        for i in range(args.runs):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                times[name].append(timed(runs[name], args.device))

    audio_seconds = args.batch * args.seconds
    print(
        f"wav2vec2 {args.preset}, batch {args.batch} x {args.seconds:g} s, {args.dtype} on {args.device} "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}; median of {args.runs} interleaved runs"
    )
    print(f"max |ours - reference| on last_hidden_state: {difference:.2e}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"  {name:<9} {median * 1000:9.1f} ms   {audio_seconds / median:8.1f}x real time")
    print(f"  speed-up of ours over the reference: {medians['reference'] / medians['ours']:.2f}x")
    return medians


if __name__ == "__main__":
    main()
