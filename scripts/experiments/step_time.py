"""Throwaway: time forward+backward+AdamW of candidate small CTC configs on random audio, interleaved.

    python scripts/experiments/step_time.py --seconds 32 --rounds 5

Prints, per config, parameters, median step seconds, and seconds of audio trained per wall second.
The machine is shared: compare the configs by their ratios, measured interleaved in one process.
Each round also times a 1024x1024 fp32 matmul, so that step times can be scaled to a quiet machine
by the ratio of its GFLOP/s to the matmul's GFLOP/s measured here.
"""
import argparse
import time

import numpy as np
import torch

from wav2vec2 import Wav2Vec2Config
from wav2vec2.backends.torch import Wav2Vec2ForCTC

COMMON = dict(
    vocab_size=32, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
    hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
    feat_proj_dropout=0.0, mask_time_prob=0.05, mask_time_length=5, ctc_loss_reduction="mean", ctc_zero_infinity=True,
)
CONFIGS = {
    # 320x down-sampling (50 frames/s) in 4 convs
    "c64-128-128-256_h256x4": dict(
        conv_dim=(64, 128, 128, 256), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 8, 8),
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
    "c32-64-128-256_h192x4": dict(
        conv_dim=(32, 64, 128, 256), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 8, 8),
        hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
    "c32-64-128-128_h128x3": dict(
        conv_dim=(32, 64, 128, 128), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 8, 8),
        hidden_size=128, num_hidden_layers=3, num_attention_heads=2, intermediate_size=512,
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
    # a filter-bank-like first conv: 25 ms windows every 10 ms, then 2x down to 50 frames/s
    "fb128k400s160-256_h192x4": dict(
        conv_dim=(128, 256), conv_stride=(160, 2), conv_kernel=(400, 5),
        hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
    "c128x5_h256x6": dict(
        conv_dim=(128, 128, 128, 128, 256), conv_stride=(5, 4, 2, 2, 4), conv_kernel=(10, 8, 4, 4, 8),
        hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=1024,
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
    # 640x (25 frames/s)
    "c64-128-128-256_s640_h256x4": dict(
        conv_dim=(64, 128, 128, 256), conv_stride=(5, 4, 4, 8), conv_kernel=(10, 8, 8, 16),
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16,
    ),
    # the reference's conv stack, narrowed
    "ref-conv-c128_h256x4": dict(
        conv_dim=(128,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=32.0, help="audio per batch")
    parser.add_argument("--utterance", type=float, default=3.2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batch = int(args.seconds / args.utterance)
    samples = int(args.utterance * 16000)
    x = torch.from_numpy(rng.standard_normal((batch, samples)).astype(np.float32))
    mask = torch.ones_like(x, dtype=torch.long)
    labels = torch.from_numpy(rng.integers(1, 32, size=(batch, int(args.utterance * 15))))
    models = {}
    for name, values in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = Wav2Vec2ForCTC(Wav2Vec2Config(**COMMON, **values)).train()
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times = {name: [] for name in models}
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    matmul = []
    for round_ in range(args.rounds + 1):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        matmul.append(10 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
        for name, (model, optimizer) in models.items():
            start = time.perf_counter()
            loss = model(x, attention_mask=mask, labels=labels, spec_augment_rng=rng).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if round_:  # the first round warms up allocators and kernels
                times[name].append(time.perf_counter() - start)
    print(f"matmul 1024^3 fp32 on {args.threads} threads: median {np.median(matmul[1:]):.0f} GFLOP/s")
    for name, (model, _) in models.items():
        params = sum(p.numel() for p in model.parameters())
        median = float(np.median(times[name]))
        print(f"{name:32s} {params / 1e6:6.2f}M params  step {median:6.2f} s  {args.seconds / median:6.1f} s audio/s")


if __name__ == "__main__":
    main()
