"""fp32 matmul throughput of the GEMM libraries behind the engines, on the shape of a base feed-forward
layer over one 10 s utterance ((500 x 768) @ (768 x 3072)): torch's ``F.linear`` (MKL's sgemm), oneDNN's
matmul (``torch.ops.mkldnn._linear_pointwise``, what the torch backend's inference runs; also with the
weight reordered once into oneDNN's layout, as ``modeling.prepacked`` keeps it), NumPy
(its BLAS), JAX (XLA), and torch in bf16 (oneDNN; AMX where the CPU has it). It says how much of a gap
between engines is their matrix-multiply library rather than their graph.

    python benchmarks/bench_gemm.py --threads 2
    python benchmarks/bench_gemm.py --threads 2 --shape 499,768,2304    # the q/k/v projection
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _gflops(run, flops: float, repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="500,768,3072", help="M,K,N (N outputs of K inputs each)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=0, help="threads for each library (default: their own)")
    args = parser.parse_args(argv)
    if args.threads:  # before the libraries start their pools
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(args.threads)
        os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}")
    m, k, n = (int(v) for v in args.shape.split(","))
    flops = 2.0 * m * k * n
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)

    rows = {"numpy": _gflops(lambda: a @ b, flops, args.repeats)}
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    weight = tb.t().contiguous()  # (out, in), as nn.Linear keeps it
    with torch.inference_mode():
        rows["torch F.linear (MKL)"] = _gflops(lambda: torch.nn.functional.linear(ta, weight), flops, args.repeats)
        a16, w16 = ta.bfloat16(), weight.bfloat16()
        if torch.backends.mkldnn.is_available():
            onednn = torch.ops.mkldnn._linear_pointwise
            reorder = torch.ops.mkldnn._reorder_linear_weight
            rows["torch oneDNN"] = _gflops(lambda: onednn(ta, weight, None, "none", [], ""), flops, args.repeats)
            packed = reorder(weight, None)  # the weight in oneDNN's blocked layout, reordered once
            rows["torch oneDNN prepacked"] = _gflops(lambda: onednn(ta, packed, None, "none", [], ""), flops, args.repeats)
            rows["torch oneDNN bf16"] = _gflops(lambda: onednn(a16, w16, None, "none", [], ""), flops, args.repeats)
            packed16 = reorder(w16, None)
            rows["torch oneDNN bf16 prepacked"] = _gflops(
                lambda: onednn(a16, packed16, None, "none", [], ""), flops, args.repeats)
        rows["torch bf16"] = _gflops(lambda: torch.nn.functional.linear(a16, w16), flops, args.repeats)
    try:
        import jax

        product = jax.jit(lambda x, y: x @ y)
        ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
        rows["jax"] = _gflops(lambda: product(ja, jb).block_until_ready(), flops, args.repeats)
    except ImportError:
        pass
    print(f"({m} x {k}) @ ({k} x {n}), fp32 unless named, median of {args.repeats}")
    for name, value in rows.items():
        print(f"{name:<22}{value:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
