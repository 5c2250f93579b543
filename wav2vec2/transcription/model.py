"""A CTC checkpoint ready to transcribe: its config, processor and a NumPy forward in one backend.

Each backend is one loader in ``LOADERS``: ``loader(model, config, device, precision, hub_kwargs)``
returns ``forward(input_values, attention_mask) -> logits`` on NumPy arrays. The rest of the
pipeline sees only that function, so another runtime is one more entry: "onnxruntime" runs a model
exported by ``wav2vec2 export --to onnx``.
config.json is read once, here, and handed to the backend.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..config import Wav2Vec2Config

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def resolve_precision(precision: str, backend: str, device=None) -> str:
    """"auto" -> the fastest precision whose transcripts are fp32's, by measurement (docs/performance.md):
    bf16 on a CPU with AMX, in every backend (torch 3.6x its fp32 there, TensorFlow and Flax 1.8-1.9x,
    the fp32 transcripts on the demo model's speech); fp32 elsewhere (without AMX bf16 is at best on a
    par with fp32; GPUs are not measured). Any other precision is returned as it is."""
    if precision != "auto":
        return precision
    return "bf16" if _runs_on_cpu(backend, device) and _cpu_has_amx() else "fp32"


def _runs_on_cpu(backend: str, device) -> bool:
    """Whether the backend's computation lands on the CPU with this --device (None: its own choice)."""
    if device is not None:
        return str(device).lower().lstrip("/").replace("device:", "").split(":")[0] == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_physical_devices("GPU")
    if backend == "flax":
        import jax

        return jax.default_backend() == "cpu"
    return backend == "torch"  # torch runs on the CPU unless told otherwise


def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles with bf16 (Intel Sapphire Rapids and later): torch's probe where
    torch is installed, else the flags of /proc/cpuinfo (elsewhere: no)."""
    try:
        import torch
    except ImportError:
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                return any(line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo)
        except OSError:
            return False
    return torch.cpu._is_amx_tile_supported()


# (input_values (batch, samples) float32, attention_mask (batch, samples) int32 or None)
#   -> logits (batch, frames, vocab) float32
ForwardFn = Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]


@dataclass
class CTCModel:
    """A loaded CTC checkpoint: its config, feature extractor, tokenizer and a NumPy ``forward``."""

    config: Wav2Vec2Config
    feature_extractor: object  # wav2vec2.feature_extraction.Wav2Vec2FeatureExtractor
    tokenizer: object  # wav2vec2.tokenization.Wav2Vec2CTCTokenizer
    forward: ForwardFn

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def takes_attention_mask(self) -> bool:
        return bool(self.feature_extractor.return_attention_mask)

    @property
    def samples_per_frame(self) -> int:
        return self.config.inputs_to_logits_ratio

    @property
    def seconds_per_frame(self) -> float:
        """Output frame offsets times this are seconds."""
        return self.samples_per_frame / self.sampling_rate


def _device_error(backend: str, device, error: Exception) -> ValueError:
    return ValueError(f"device {device!r} cannot be used with the {backend} backend: {error}")


def _torch_forward(model, config, device, precision, hub_kwargs) -> ForwardFn:
    import torch

    from ..backends.torch import Wav2Vec2ForCTC

    try:
        device = torch.device(device or "cpu")
    except RuntimeError as e:
        raise _device_error("torch", device, e) from None
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision 'int8' (dynamic quantization) runs on the CPU only, not on {device}")
    network = Wav2Vec2ForCTC.from_pretrained(model, config=config, **hub_kwargs).eval()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if precision == "int8":  # Linear weights in int8, activations quantized on the fly
        with warnings.catch_warnings():  # torch's notice that quantized tensor types will move to torchao
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
            network = torch.ao.quantization.quantize_dynamic(network, {torch.nn.Linear}, dtype=torch.qint8)
    else:
        try:
            network = network.to(device=device, dtype=dtype)
        except (RuntimeError, AssertionError) as e:  # e.g. "Torch not compiled with CUDA enabled"
            raise _device_error("torch", str(device), e) from None

    def forward(input_values, attention_mask):
        with torch.inference_mode():
            values = torch.from_numpy(input_values).to(device=device, dtype=dtype)
            mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(device)
            return network(values, attention_mask=mask).logits.float().cpu().numpy()

    return forward


@contextlib.contextmanager
def _keras_dtype_policy(policy: Optional[str]):
    """Layers built inside take ``policy`` (Keras reads its global policy when a layer is made)."""
    if policy is None:
        yield
        return
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _tensorflow_forward(model, config, device, precision, hub_kwargs) -> ForwardFn:
    from ..backends.tensorflow import Wav2Vec2ForCTC

    import tensorflow as tf

    if device:
        try:
            spec = tf.DeviceSpec.from_string(device)
        except ValueError as e:
            raise _device_error("tensorflow", device, e) from None
        kinds = {d.device_type for d in tf.config.list_logical_devices()}
        if spec.device_type and spec.device_type.upper() not in kinds:
            # TensorFlow would silently place everything elsewhere.
            raise _device_error("tensorflow", device, f"no {spec.device_type} device here (have {sorted(kinds)})")

    def on_device():  # None: TensorFlow's own placement (a GPU when there is one)
        return tf.device(device) if device else contextlib.nullcontext()

    # bf16: Keras' "bfloat16" policy, weights stored and computed in bfloat16 like the torch model cast
    # to it; mixed_bfloat16 (float32 variables) recast every kernel in every call, 1.2x slower
    # (benchmarks/bench_cpu.py, ours-tensorflow-bf16-mixed).
    with on_device(), _keras_dtype_policy("bfloat16" if precision == "bf16" else None):
        network = Wav2Vec2ForCTC.from_pretrained(model, config=config, **hub_kwargs)
        if precision == "int8":  # Keras' own int8 weights for Dense and EinsumDense layers
            with warnings.catch_warnings():  # one per layer that has no int8 form (convs, norms): noise
                warnings.simplefilter("ignore", UserWarning)
                network.quantize("int8")

    # As graphs (TensorFlow's fused oneDNN kernels; eagerly the model ran 1.8x slower, bench_tensorflow.py),
    # traced for the first shapes and then for any (reduce_retracing), not once per input length.
    unmasked = tf.function(lambda x: tf.cast(network(x).logits, tf.float32), reduce_retracing=True)
    masked = tf.function(lambda x, m: tf.cast(network(x, attention_mask=m).logits, tf.float32), reduce_retracing=True)

    def forward(input_values, attention_mask):
        with on_device():
            if attention_mask is None:
                return unmasked(tf.constant(input_values)).numpy()
            return masked(tf.constant(input_values), tf.constant(attention_mask)).numpy()

    return forward


def _flax_forward(model, config, device, precision, hub_kwargs) -> ForwardFn:
    import jax
    import jax.numpy as jnp

    from ..backends.flax import Wav2Vec2ForCTC

    if precision == "int8":
        raise ValueError("precision 'int8' has no Flax path; use fp32 or bf16, or the torch or tensorflow backend")
    target = None  # "cpu", "gpu" or "gpu:1" -> a jax device; None leaves jax's default
    if device:
        platform, _, index = str(device).partition(":")
        try:
            target = jax.devices(platform)[int(index or 0)]
        except (RuntimeError, ValueError, IndexError) as e:
            raise _device_error("flax", device, e) from None
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    network = Wav2Vec2ForCTC.from_pretrained(model, config=config, dtype=dtype, **hub_kwargs)

    def forward(input_values, attention_mask):
        values = jax.device_put(input_values, target)
        mask = None if attention_mask is None else jax.device_put(attention_mask, target)
        return np.asarray(network(values, attention_mask=mask, train=False).logits, dtype=np.float32)

    return forward


def _onnxruntime_forward(model, config, device, precision, hub_kwargs) -> ForwardFn:
    """An exported ONNX model (``wav2vec2 export --to onnx``: model.onnx beside the processor files)."""
    import onnxruntime

    from ..io.hub import resolve_file

    if precision != "fp32":
        raise ValueError(
            f"precision {precision!r}: an ONNX model runs as it was exported; export it with --int8 for int8"
        )
    providers = {None: "CPUExecutionProvider", "cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
    if device not in providers:
        raise _device_error("onnxruntime", device, "expected cpu or cuda")
    if providers[device] not in onnxruntime.get_available_providers():
        raise _device_error("onnxruntime", device, f"this ONNX Runtime has {onnxruntime.get_available_providers()}")
    path = resolve_file(model, "model.onnx", **hub_kwargs)
    resolve_file(model, "model.onnx.data", required=False, **hub_kwargs)  # weights beside it, when > 2 GB
    try:
        session = onnxruntime.InferenceSession(os.fspath(path), providers=[providers[device]])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for unreadable models
        raise ValueError(f"{path}: not a model ONNX Runtime can run: {e}") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs not in (["input_values"], ["input_values", "attention_mask"]) or len(session.get_outputs()) != 1:
        raise ValueError(
            f"{path}: expected the inputs input_values[, attention_mask] and one output (logits) of a CTC "
            f"export, got inputs {inputs} and {len(session.get_outputs())} outputs"
        )
    takes_mask = "attention_mask" in inputs

    def forward(input_values, attention_mask):
        feeds = {"input_values": np.ascontiguousarray(input_values, dtype=np.float32)}
        if takes_mask:
            mask = np.ones(input_values.shape, np.int32) if attention_mask is None else attention_mask
            feeds["attention_mask"] = np.ascontiguousarray(mask, dtype=np.int32)
        elif attention_mask is not None and not attention_mask.all():
            raise ValueError(f"{path} takes no attention_mask, so padded batches cannot be run through it")
        return session.run(None, feeds)[0]

    return forward


LOADERS = {
    "torch": _torch_forward, "tensorflow": _tensorflow_forward, "flax": _flax_forward,
    "onnxruntime": _onnxruntime_forward,
}
BACKENDS = tuple(LOADERS)


def is_fairseq_checkpoint(model) -> bool:
    """A fairseq ``.pt``/``.pth`` file (its weights load through ``wav2vec2.io``; its processor is built here)."""
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(model) and os.fspath(model).endswith((".pt", ".pth"))


def load_processor(model, dictionary=None, **hub_kwargs):
    """(config, feature extractor, tokenizer) of a checkpoint, without its weights.

    A fairseq ``.pt`` file has no processor files: its settings come from its cfg and its vocabulary
    from ``dictionary`` (the fine-tuning run's ``dict.ltr.txt``), as ``wav2vec2 convert --dict`` does.
    """
    from ..feature_extraction import Wav2Vec2FeatureExtractor
    from ..tokenization import Wav2Vec2CTCTokenizer

    if is_fairseq_checkpoint(model):
        from ..conversion import from_fairseq

        if dictionary is None:
            raise ValueError(f"{model}: a fairseq checkpoint needs its dictionary to decode: pass --dict dict.ltr.txt")
        config, _, feature_extractor, tokenizer = from_fairseq(model, dictionary)
        return config, feature_extractor, tokenizer
    if dictionary is not None:
        raise ValueError("--dict is for fairseq .pt checkpoints; this model has its own vocabulary")
    config = Wav2Vec2Config.from_pretrained(model, **hub_kwargs)
    return (
        config,
        Wav2Vec2FeatureExtractor.from_pretrained(model, **hub_kwargs),
        Wav2Vec2CTCTokenizer.from_pretrained(model, **hub_kwargs),
    )


def load_ctc_model(
    model, backend: str = "torch", device: Optional[str] = None, precision: str = "fp32", dictionary=None,
    **hub_kwargs,
) -> CTCModel:
    """Load a CTC checkpoint (directory, hub id, or fairseq ``.pt`` with its ``dictionary``) with one
    backend, plus its processor.

    precision: "auto" (``resolve_precision``: bf16 on a CPU with AMX, else fp32); "fp32"; "bf16"
    (bfloat16 weights and compute: torch casts the model, TensorFlow builds it under Keras' "bfloat16"
    policy, Flax computes in bfloat16 with its kernels cast once); "int8" (dynamic int8 quantization of
    the linear layers: torch on the CPU, TensorFlow via Keras; Flax has none). Logits are float32.
    Raises ValueError for an unknown backend or precision, an unusable device or a missing framework.
    """
    if backend not in LOADERS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    precision = resolve_precision(precision, backend, device)
    config, feature_extractor, tokenizer = load_processor(model, dictionary, **hub_kwargs)
    try:
        forward = LOADERS[backend](model, config, device, precision, hub_kwargs)
    except ImportError as e:
        raise ValueError(f"backend {backend!r} is not available: {e}") from None
    return CTCModel(config, feature_extractor, tokenizer, forward)
