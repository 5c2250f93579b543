"""Each conv layer of the torch feature encoder two ways, in inference: oneDNN's convolution (then the
norm and GELU) against the matmul form (``ConvLayer.forward_channels_last``: matmuls over blocks of
taps read as strided views, or over copied windows, the GroupNorm folded in, activations kept (batch,
time, channels)), whole utterances (the encoder itself runs spans of frames). This is the measurement
that decides, per dtype, which one ``FeatureEncoder`` runs.

    python benchmarks/bench_conv_layers.py                    # fp32, one 10 s utterance, base shapes
    python benchmarks/bench_conv_layers.py --dtype bf16 --seconds 2

Random weights (the speed does not depend on them); medians of --repeats runs per layer, the two
forms alternated so that load from other processes hits both alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from wav2vec2 import Wav2Vec2Config
from wav2vec2.backends.torch import Wav2Vec2Model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="base", help="a Wav2Vec2Config preset")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    model = Wav2Vec2Model(Wav2Vec2Config.preset(args.config)).eval().to(dtype)
    samples = int(args.seconds * 16_000)
    conv_input = torch.randn(1, 1, samples, generator=torch.Generator().manual_seed(0)).to(dtype)
    matmul_input = conv_input.transpose(1, 2)  # (batch, samples, 1)

    print(f"{args.config}, {args.dtype}, {args.seconds:g} s, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'layer':<6}{'input':>18}{'conv ms':>10}{'im2col ms':>11}{'im2col/conv':>13}")
    totals = [0.0, 0.0]
    with torch.inference_mode():
        for i, layer in enumerate(model.feature_extractor.conv_layers):
            runs = ([], [])
            for _ in range(args.repeats + 1):  # the first round warms up
                for times, run, x in ((runs[0], layer, conv_input),
                                      (runs[1], layer.forward_channels_last, matmul_input)):
                    start = time.perf_counter()
                    run(x)
                    times.append(time.perf_counter() - start)
            conv_ms, im2col_ms = (1000 * statistics.median(times[1:]) for times in runs)
            totals[0] += conv_ms
            totals[1] += im2col_ms
            print(f"{i:<6}{str(tuple(conv_input.shape)):>18}{conv_ms:>10.1f}{im2col_ms:>11.1f}"
                  f"{im2col_ms / conv_ms:>12.2f}x")
            conv_input, matmul_input = layer(conv_input), layer.forward_channels_last(matmul_input)
    print(f"{'all':<6}{'':>18}{totals[0]:>10.1f}{totals[1]:>11.1f}{totals[1] / totals[0]:>12.2f}x")


if __name__ == "__main__":
    main()
