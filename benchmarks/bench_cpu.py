"""CPU inference engines side by side, in one process, on the same weights: this library's three
backends (fp32 and bf16), the reference transformers PyTorch class, ONNX Runtime (fp32 and int8)
and OpenVINO (fp32 and its bf16 hint), the last two from an ONNX export of the same weights.

Every engine computes CTC logits of the same random waveforms. Runs are interleaved (each round
visits every engine, in a rotated order), so that load from other processes hits all alike; the
medians, their ratios to the reference and to OpenVINO, and the outputs' agreement with the fp32
reference (max |diff| on the logits, argmax agreement per frame) are printed.

    python benchmarks/bench_cpu.py                                  # base shapes, 10 s, batch 1
    python benchmarks/bench_cpu.py --batch 4 --repeats 7 --threads 2
    python benchmarks/bench_cpu.py --config tiny.json --seconds 1 --repeats 1   # a smoke run
    python benchmarks/bench_cpu.py --engines ours-torch-fp32,onnxruntime-fp32
    python benchmarks/bench_cpu.py --engines ours-torch-fp32,ours-torch-fp32-plain --profile ours-torch-fp32
    python benchmarks/bench_cpu.py --device cuda --batch 16 --repeats 10    # on a GPU: torch and Flax

With --device cuda the torch, Flax and TensorFlow engines run on that GPU ("-compiled" there is
torch.compile's reduce-overhead mode: CUDA graphs); ONNX Runtime and OpenVINO stay CPU engines.

"-plain" engines are the torch backend with its inference fast paths switched off (F.linear, convolutions,
weight norm per call), to measure them in the same run. "-compiled" engines (only when named) are
it under torch.compile (inductor, freezing on); they compile in the warm-up round.

Random weights are fine for speed (same FLOPs); agreement on random weights is a weak check
(near-ties flip the argmax), so transcripts on trained models are checked by the test suite.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from wav2vec2 import Wav2Vec2Config  # noqa: E402

SAMPLE_RATE = 16_000
REFERENCE = "reference-torch-fp32"
ENGINES = (
    REFERENCE, "reference-torch-bf16",
    "ours-torch-fp32", "ours-torch-bf16", "ours-torch-int8", "ours-torch-fp32-plain", "ours-torch-bf16-plain",
    "ours-tensorflow-fp32", "ours-tensorflow-bf16",
    "ours-flax-fp32", "ours-flax-bf16",
    "onnxruntime-fp32", "onnxruntime-int8",
    "openvino-fp32", "openvino-bf16",
)
# On a GPU (--device cuda): torch and Flax (TensorFlow where it sees the GPU); bf16 first, the issue's
# figure of merit there. ONNX Runtime and OpenVINO run here on the CPU only, and the -plain engines
# measure CPU fast paths.
GPU_ENGINES = ("reference-torch-bf16", "ours-torch-bf16", "ours-torch-bf16-compiled", "ours-flax-bf16",
               REFERENCE, "ours-torch-fp32", "ours-flax-fp32")
CPU_ONLY = ("onnxruntime-", "openvino-", "-plain", "-int8")
# Not in the default set: torch.compile's first call takes a minute on base shapes here.
OPTIONAL_ENGINES = ("ours-torch-fp32-compiled", "ours-torch-bf16-compiled",
                    "ours-tensorflow-bf16-mixed", "ours-tensorflow-bf16-xla", "ours-tensorflow-fp32-xla")


def _config(text: str) -> Wav2Vec2Config:
    if os.path.isfile(text) or os.path.isdir(text):
        return Wav2Vec2Config.from_pretrained(text)
    return Wav2Vec2Config.preset(text)


# ------------------------------------------------------------------------------------ engines
# Each builder takes (config, canonical CTC weights, threads, workdir, device) and returns
# run(waveforms float32 (batch, samples)) -> logits float32 (batch, frames, vocab), on the host: the copy
# back waits for the device to finish. device is "cpu" or "cuda[:N]".
def _plain_paths(model):
    """Make the torch model run its plain paths (F.linear's matmuls, convolutions, weight norm per
    call) in inference, to measure what the fast paths buy within the same run."""
    from unittest import mock

    from wav2vec2.backends.torch import modeling

    encoder, positional = model.wav2vec2.feature_extractor, model.wav2vec2.encoder.pos_conv_embed
    fast_forward = model.forward

    def forward(*args, **kwargs):
        with mock.patch.object(modeling, "uses_onednn_matmul", lambda x: False):
            return fast_forward(*args, **kwargs)

    def encode(input_values):
        x = input_values[:, None]
        for layer in encoder.conv_layers:
            x = layer(x)
        return x

    def positional_conv(hidden_states):
        x = positional.conv(hidden_states.transpose(1, 2))
        x = x[:, :, :-1] if positional.trim_last_frame else x
        return positional.activation(x).transpose(1, 2)

    encoder.forward, positional.forward, model.forward = encode, positional_conv, forward


def _torch_logits(model, dtype, device):
    """waveforms (batch, samples) float32 NumPy -> logits float32 NumPy, through a torch CTC model."""
    import torch

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device, dtype)).logits.float().cpu().numpy()

    return run


def _torch(dtype_name, plain=False, compiled=False):
    def build(config, state, threads, workdir, device):
        import torch

        from wav2vec2.backends.torch import Wav2Vec2ForCTC

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}[dtype_name]
        model = Wav2Vec2ForCTC(config)
        model.load_canonical_state_dict(state)
        model = model.eval().to(device, dtype)  # the plain idiom: weights and inputs in the dtype
        if plain:
            _plain_paths(model)
        if dtype_name == "int8":  # transcribe --precision int8: dynamic int8 Linear layers
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        if compiled and device == "cpu":
            # inductor with freezing: weights folded in as constants and prepacked for oneDNN; the
            # first call (in the warm-up round) compiles
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            model = torch.compile(model)
        elif compiled:  # a GPU: inductor's kernels replayed as one CUDA graph per input shape
            model = torch.compile(model, mode="reduce-overhead")
        return _torch_logits(model, dtype, device)

    return build


def _reference(dtype_name):
    def build(config, state, threads, workdir, device):
        import torch
        import transformers

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}[dtype_name]
        reference_config = transformers.Wav2Vec2Config(**config.to_dict(), attn_implementation="sdpa")
        model = transformers.Wav2Vec2ForCTC(reference_config)
        renamed = {
            k.replace("weight_g", "parametrizations.weight.original0").replace("weight_v", "parametrizations.weight.original1"):
            torch.from_numpy(v) for k, v in state.items()
        }
        missing, unexpected = model.load_state_dict(renamed, strict=False)
        assert not unexpected and not [k for k in missing if "masked_spec_embed" not in k], (missing, unexpected)
        return _torch_logits(model.eval().to(device, dtype), dtype, device)

    return build


class Unavailable(Exception):
    """An engine that cannot run on this --device here (the run goes on without it)."""


def _tensorflow(policy, xla=False):
    """A Keras dtype policy: "float32"; "bfloat16" (bf16 weights and compute, what ``transcribe
    --precision bf16`` runs); "mixed_bfloat16" (float32 weights cast to bf16 in every call, training's)."""
    def build(config, state, threads, workdir, device):
        import keras
        import tensorflow as tf

        from wav2vec2.backends.tensorflow import Wav2Vec2ForCTC

        index = int(device.partition(":")[2] or 0)
        if device != "cpu" and len(tf.config.list_physical_devices("GPU")) <= index:
            raise Unavailable(f"TensorFlow sees no GPU {index} here")  # it would place ops on the CPU silently
        placement = tf.device("/CPU:0" if device == "cpu" else f"/GPU:{index}")
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            with placement:
                model = Wav2Vec2ForCTC(config)
                model._build_weights()
                model.load_canonical_state_dict(state)
        finally:
            keras.config.set_dtype_policy(previous)
        forward = tf.function(lambda x: tf.cast(model(x, training=False).logits, tf.float32), jit_compile=xla)

        def run(x):
            with placement:
                return forward(tf.constant(x)).numpy()

        return run

    return build


def _flax(dtype_name):
    def build(config, state, threads, workdir, device):
        import jax
        import jax.numpy as jnp

        from wav2vec2.backends.flax import Wav2Vec2ForCTC

        platform, _, index = device.replace("cuda", "gpu").partition(":")
        try:
            target = jax.devices(platform)[int(index or 0)]
        except (RuntimeError, IndexError):
            raise Unavailable(f"jax sees no {device} here") from None
        with jax.default_device(target):
            model = Wav2Vec2ForCTC(config, dtype=jnp.bfloat16 if dtype_name == "bf16" else jnp.float32)
            model.load_canonical_state_dict(state)

        def run(x):
            with jax.default_device(target):
                return np.asarray(model(jnp.asarray(x)).logits, dtype=np.float32)

        return run

    return build


_ONNX_FILES = {}


def _onnx_file(config, state, workdir, int8: bool) -> str:
    """The ONNX export of the weights (once per precision), as `wav2vec2 export` writes it."""
    from wav2vec2 import export

    if False not in _ONNX_FILES:
        directory = Path(workdir, "fp32")
        directory.mkdir()
        export._write_onnx(config, "ctc", state, False, directory)
        _ONNX_FILES[False] = directory / export.ONNX_NAME
    if int8 and True not in _ONNX_FILES:
        path = Path(workdir, "int8", export.ONNX_NAME)
        path.parent.mkdir()
        shutil.copyfile(_ONNX_FILES[False], path)
        export._quantize_onnx(path, external_data=False)
        _ONNX_FILES[True] = path
    return os.fspath(_ONNX_FILES[int8])


def _onnxruntime(int8: bool):
    def build(config, state, threads, workdir, device):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(_onnx_file(config, state, workdir, int8), options,
                                       providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input_values": x})[0]

    return build


def _openvino(dtype_name):
    def build(config, state, threads, workdir, device):
        import openvino as ov

        properties = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[dtype_name]}
        if threads:
            properties["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(_onnx_file(config, state, workdir, False), "CPU", properties)
        got = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()  # "<Type: 'bfloat16'>" or f32
        if dtype_name == "bf16" and "bf" not in got:
            print(f"  note: openvino-bf16 runs in {got} here (no native bf16 on this CPU)")
        request = compiled.create_infer_request()
        return lambda x: np.array(request.infer({"input_values": x})[0], dtype=np.float32)

    return build


BUILDERS = {
    "reference-torch-fp32": _reference("fp32"), "reference-torch-bf16": _reference("bf16"),
    "ours-torch-fp32": _torch("fp32"), "ours-torch-bf16": _torch("bf16"), "ours-torch-int8": _torch("int8"),
    "ours-torch-fp32-plain": _torch("fp32", plain=True), "ours-torch-bf16-plain": _torch("bf16", plain=True),
    "ours-torch-fp32-compiled": _torch("fp32", compiled=True), "ours-torch-bf16-compiled": _torch("bf16", compiled=True),
    "ours-tensorflow-fp32": _tensorflow("float32"), "ours-tensorflow-bf16": _tensorflow("bfloat16"),
    "ours-tensorflow-bf16-mixed": _tensorflow("mixed_bfloat16"),
    "ours-tensorflow-bf16-xla": _tensorflow("bfloat16", xla=True), "ours-tensorflow-fp32-xla": _tensorflow("float32", xla=True),
    "ours-flax-fp32": _flax("fp32"), "ours-flax-bf16": _flax("bf16"),
    "onnxruntime-fp32": _onnxruntime(False), "onnxruntime-int8": _onnxruntime(True),
    "openvino-fp32": _openvino("fp32"), "openvino-bf16": _openvino("bf16"),
}


# ------------------------------------------------------------------------------------ main
def set_threads(threads):
    """Thread counts for every framework, before any of them starts its pools."""
    if not threads:
        return
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}")
    import torch

    torch.set_num_threads(threads)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except ImportError:
        pass


def profile(name, run, waveforms, top=12):
    """torch.profiler over one run of a torch engine: the ops that take the most self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run(waveforms)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nprofile of {name} (one run, {total / 1000:.0f} ms of self CPU time on all threads):")
    for event in events[:top]:
        print(f"  {event.key:40s} {event.self_cpu_time_total / 1000:9.1f} ms {event.self_cpu_time_total / total:6.1%}"
              f"  calls {event.count}")


def random_ctc_weights(config, seed=0):
    """Canonical CTC weights from the torch backend's random initialisation (the reference's scheme)."""
    import torch

    from wav2vec2.backends.torch import Wav2Vec2ForCTC

    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(config).canonical_state_dict()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="base", help="a Wav2Vec2Config preset or a config.json (default base)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each engine once per round)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (XLA compiles in the first)")
    parser.add_argument("--threads", type=int, default=None, help="threads per engine (default: each engine's own)")
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda / cuda:N: the torch, Flax and "
                        "TensorFlow engines on that GPU (default engines there: " + ", ".join(GPU_ENGINES) + ")")
    parser.add_argument("--engines", default=None,
                        help=f"comma-separated subset of {', '.join(ENGINES + OPTIONAL_ENGINES)} "
                        "(default: all but the optional ones on the CPU)")
    parser.add_argument("--profile", default="", help="comma-separated torch engines to profile after timing "
                        "(torch.profiler, one run each: the top ops by self CPU time)")
    args = parser.parse_args(argv)
    device = args.device.lower()
    on_gpu = device != "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        parser.error(f"--device {args.device!r}: expected cpu, cuda or cuda:N")
    engines = [e for e in (args.engines or ",".join(GPU_ENGINES if on_gpu else ENGINES)).split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES + OPTIONAL_ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}; expected some of {list(ENGINES + OPTIONAL_ENGINES)}")
    if on_gpu and (cpu_only := [e for e in engines if any(part in e for part in CPU_ONLY)]):
        parser.error(f"engines {cpu_only} run on the CPU only; --device {args.device} takes the torch, Flax "
                     "and TensorFlow ones")
    if on_gpu:
        import torch

        if int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
            parser.error(f"--device {args.device}: torch sees no such CUDA device here")

    set_threads(args.threads)
    config = _config(args.config)
    state = random_ctc_weights(config)
    samples = int(args.seconds * SAMPLE_RATE)
    waveforms = np.random.default_rng(0).standard_normal((args.batch, samples)).astype(np.float32)

    runs, skipped = {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in engines:
            start = time.perf_counter()
            try:
                runs[name] = BUILDERS[name](config, state, args.threads, workdir, device)
            except ImportError as e:
                skipped[name] = f"not installed ({e})"
                continue
            except Unavailable as e:
                skipped[name] = str(e)
                continue
            print(f"  built {name} in {time.perf_counter() - start:.1f} s", flush=True)
        outputs = {}
        for name in list(runs):  # compiles / warms each once
            try:
                outputs[name] = runs[name](waveforms)
            except Exception as e:  # noqa: BLE001
                if not on_gpu:
                    raise
                # a GPU machine is lent for one call: the other engines' numbers are not lost to one
                skipped[name] = f"failed: {type(e).__name__}: {e}"[:400]
                del runs[name]
        for _ in range(max(args.warmup - 1, 0)):
            for run in runs.values():
                run(waveforms)
        times = {name: [] for name in runs}
        names = list(runs)
        for i in range(args.repeats):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runs[name](waveforms)
                times[name].append(time.perf_counter() - start)
        for name in filter(None, args.profile.split(",")):
            profile(name, runs[name], waveforms)

    audio = args.batch * args.seconds
    medians = {name: statistics.median(t) for name, t in times.items()}
    baseline = outputs.get(REFERENCE, outputs.get("ours-torch-fp32"))
    baseline_name = REFERENCE if REFERENCE in outputs else "ours-torch-fp32"
    print(f"\nwav2vec2 {args.config}, batch {args.batch} x {args.seconds:g} s, {device}, "
          f"threads {args.threads or 'default'}, "
          f"median of {args.repeats} interleaved rounds; outputs against {baseline_name}")
    print(f"{'engine':24s} {'median ms':>10s} {'x real time':>12s} {'vs reference':>13s} {'vs openvino':>12s} "
          f"{'max |diff|':>11s} {'argmax agree':>13s}")
    rows = {}
    for name, median in medians.items():
        diff = float(np.abs(outputs[name] - baseline).max()) if baseline is not None else float("nan")
        agree = float((outputs[name].argmax(-1) == baseline.argmax(-1)).mean()) if baseline is not None else float("nan")
        reference_ratio = medians[REFERENCE] / median if REFERENCE in medians else float("nan")
        ov_name = "openvino-bf16" if ("bf16" in name or name.endswith("int8")) and "openvino-bf16" in medians else "openvino-fp32"
        ov_ratio = medians[ov_name] / median if ov_name in medians else float("nan")
        rows[name] = dict(median_s=median, realtime=audio / median, vs_reference=reference_ratio,
                          vs_openvino=ov_ratio, max_diff=diff, argmax_agreement=agree)
        print(f"{name:24s} {median * 1000:10.1f} {audio / median:12.1f} {reference_ratio:12.2f}x {ov_ratio:11.2f}x "
              f"{diff:11.2e} {agree:12.1%}")
    for name, why in skipped.items():
        print(f"{name:24s} skipped: {why}")
    print("vs reference / vs openvino: speed ratio (>1 is faster); bf16 and int8 rows compare with openvino-bf16")
    return rows


if __name__ == "__main__":
    main()
