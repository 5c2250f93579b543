"""Export a checkpoint for deployment: ONNX (from the torch backend), a TF SavedModel or TFLite (from
the TensorFlow backend), StableHLO (from the Flax backend).

``wav2vec2 export MODEL OUT --to onnx|saved_model|tflite|stablehlo [--int8]``. MODEL is anything ``convert``
reads (a directory or hub repo id in any weight format, or a fairseq ``.pt`` with ``--dict``). OUT is
a directory holding the exported model and, copied over, the config and processor files (so an
ONNX export transcribes: ``wav2vec2 transcribe --backend onnxruntime --model OUT``):

    onnx         model.onnx (weights in model.onnx.data beside it when they pass 2 GB)
    saved_model  saved_model/ (signature ``serving_default``)
    tflite       model.tflite (signature ``serving_default``)
    stablehlo    model.stablehlo: a ``jax.export`` serialization (StableHLO bytecode, weights as
                 constants, lowered for CPU and CUDA); ``jax.export.deserialize(bytearray(data))``
                 gives an ``Exported`` whose ``call(input_values[, attention_mask])`` returns the
                 outputs as a dict

Every export has a dynamic batch and time axis. Inputs: ``input_values`` float32 (batch, samples)
and, when the checkpoint's feature extractor returns one (layer-norm checkpoints), ``attention_mask``
int32 (batch, samples), 1 on real samples. Outputs by head: ``last_hidden_state`` (bare model and
pretraining checkpoints, whose body is exported), ``logits`` (CTC, classification), ``logits`` and
``embeddings`` (x-vector). ``--int8`` (ONNX) quantizes the MatMul weights to int8 with ONNX Runtime's
dynamic quantization (activations quantized on the fly).

OUT is built in a staging directory beside it and swapped in whole, as ``convert`` does.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .config import Wav2Vec2Config
from .conversion import Source, _copy_carried_files, _read_source, infer_head
from .feature_extraction import FEATURE_EXTRACTOR_NAME
from .io import match_state_dict
from .io.staging import check_destination, recover_interrupted, staged_directory
from .spec.lengths import min_input_length, xvector_min_frames
from .spec.names import HEAD_CLASSES, canonical_shapes

logger = logging.getLogger(__name__)

TARGETS = ("onnx", "saved_model", "tflite", "stablehlo")
ONNX_NAME = "model.onnx"
SAVED_MODEL_DIR = "saved_model"
TFLITE_NAME = "model.tflite"
STABLEHLO_NAME = "model.stablehlo"
STABLEHLO_PLATFORMS = ("cpu", "cuda")
SIGNATURE = "serving_default"

# What each head's export returns, in order (pretraining checkpoints export their body).
OUTPUTS = {
    "model": ("last_hidden_state",),
    "ctc": ("logits",),
    "sequence_classification": ("logits",),
    "audio_frame_classification": ("logits",),
    "xvector": ("logits", "embeddings"),
}
_ONNX_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's limit is 2 GiB for the whole file


def export(model, out, to: str = "onnx", *, int8: bool = False, overwrite: bool = False, opset=None,
           dict_path=None, **hub_kwargs) -> Path:
    """Export MODEL (anything ``convert`` reads) as ``to`` into the directory OUT; returns OUT.

    Raises ValueError for bad options or a model that cannot be exported, before anything is
    written; FileExistsError for a non-empty OUT without ``overwrite``; ImportError when the
    framework a target needs is missing.
    """
    prepared = _prepare(model, out, to, int8, overwrite, opset, dict_path, hub_kwargs)
    return _write_export(prepared, out, to, int8=int8, opset=opset)


def _prepare(model, out, to, int8, overwrite, opset, dict_path, hub_kwargs):
    """Everything before the first write: the options, the paths, the checkpoint read and checked."""
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {TARGETS}, got {to!r}")
    if int8 and to != "onnx":
        raise ValueError(f"--int8 is for --to onnx (ONNX Runtime dynamic quantization), not {to}")
    if opset is not None and to != "onnx":
        raise ValueError(f"--opset is for --to onnx, not {to}")
    if to == "onnx":
        _import_onnx_exporter(int8)
    elif to == "stablehlo":
        try:
            import flax  # noqa: F401
            import jax  # noqa: F401
        except ImportError as e:
            raise ImportError(f"--to {to} needs JAX and Flax: {e}") from None
    else:
        try:
            from .backends import import_tensorflow

            import_tensorflow()
        except ImportError as e:
            raise ImportError(f"--to {to} needs TensorFlow: {e}") from None
    recover_interrupted(out)
    check_destination(out, overwrite, inputs=[model] + ([dict_path] if dict_path is not None else []))
    source = _read_source(model, dict_path=dict_path, **hub_kwargs)
    head, state = exported_head(source)
    return source, head, state, takes_attention_mask(source)


def _write_export(prepared, out, to, int8=False, opset=None) -> Path:
    source, head, state, with_mask = prepared
    write = {"onnx": _write_onnx, "saved_model": _write_saved_model, "tflite": _write_tflite,
             "stablehlo": _write_stablehlo}[to]
    with staged_directory(out) as staging:
        if source.carried_dir is not None:
            _copy_carried_files(source.carried_dir, staging)
        source.config.save_pretrained(staging)
        for save in source.savers:
            save(staging)
        kwargs = dict(int8=int8, opset=opset) if to == "onnx" else {}
        write(source.config, head, state, with_mask, staging, **kwargs)
    return Path(out)


# ------------------------------------------------------------------------------------ what is exported
def exported_head(source: Source):
    """(head, canonical weights of that head): the checkpoint's own head; a pretraining one's body."""
    head = infer_head(source.state)
    if head == "pretraining":
        logger.info("%s: a pretraining checkpoint; its body (last_hidden_state) is exported", source.name)
        head = "model"
    report = match_state_dict(source.state, canonical_shapes(source.config, head))
    if report.missing:
        raise ValueError(f"{source.name}: weights missing for a {head!r} export: {sorted(report.missing)[:5]}")
    if source.config.adapter_attn_dim is not None and source.adapters:
        logger.warning("%s: exported with the adapter weights of its main weight file; adapter files are not "
                       "exported", source.name)
    return head, report.state


def takes_attention_mask(source: Source) -> bool:
    """Whether the export gets an attention_mask input: as the checkpoint's feature extractor says,
    else as the reference decides (layer-norm convs only)."""
    for save in source.savers:  # a fairseq checkpoint's feature extractor, built from its cfg
        owner = getattr(save, "__self__", None)
        if hasattr(owner, "return_attention_mask"):
            return bool(owner.return_attention_mask)
    if source.carried_dir is not None and (source.carried_dir / FEATURE_EXTRACTOR_NAME).is_file():
        from .feature_extraction import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor.from_pretrained(source.carried_dir).return_attention_mask
    return source.config.feat_extract_norm == "layer"


def shortest_input(config: Wav2Vec2Config, head: str) -> int:
    """Fewest samples an export of ``head`` takes: one encoder frame; the x-vector's TDNN context."""
    frames = xvector_min_frames(config) if head == "xvector" else 1
    return min_input_length(config, frames=frames)  # the adapter's frames, when it has one


def example_inputs(config: Wav2Vec2Config, head: str = "model", batch: int = 2, seed: int = 0,
                   with_mask: bool = True):
    """(input_values float32 (batch, samples), attention_mask int32 or None): a padded random batch
    whose last row is the shortest input the head takes, the others a few frames longer."""
    rng = np.random.default_rng(seed)
    shortest = shortest_input(config, head)
    samples = shortest + 3 * config.inputs_to_logits_ratio + 7
    values = rng.standard_normal((batch, samples)).astype(np.float32)
    mask = np.ones((batch, samples), np.int32)
    if batch > 1:
        mask[-1, shortest:] = 0
        values[-1, shortest:] = 0.0
    return values, (mask if with_mask else None)


def backend_model(framework: str, config: Wav2Vec2Config, head: str, state):
    """The ``framework`` backend's (torch, tensorflow, flax) model of ``head`` with ``state`` loaded,
    float32; a torch model in eval mode."""
    backend = importlib.import_module(f"{__package__}.backends.{framework}")
    network = getattr(backend, HEAD_CLASSES[head])(config)
    if framework == "tensorflow":
        network._build_weights()  # Keras creates its variables on building
    network.load_canonical_state_dict(state)
    return network.eval() if framework == "torch" else network


# ------------------------------------------------------------------------------------ ONNX
def _import_onnx_exporter(int8: bool):
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter writes through it)
        import torch  # noqa: F401
        if int8:
            import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs torch, onnx and onnxscript (and onnxruntime for --int8): {e}") from None


def _torch_wrapper(network, head: str, with_mask: bool):
    import torch

    names = OUTPUTS[head]

    class Exported(torch.nn.Module):
        """(input_values[, attention_mask]) -> the head's outputs as a tuple, for torch.export."""

        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, input_values, attention_mask=None):
            output = self.network(input_values, attention_mask=attention_mask)
            return tuple(getattr(output, name) for name in names)

    if with_mask:
        return Exported().eval()

    class ExportedWithoutMask(Exported):
        def forward(self, input_values):
            return super().forward(input_values)

    return ExportedWithoutMask().eval()


def _write_onnx(config, head, state, with_mask, directory: Path, int8: bool = False, opset=None) -> None:
    import torch

    network = backend_model("torch", config, head, state)
    wrapper = _torch_wrapper(network, head, with_mask)
    values, mask = example_inputs(config, head, batch=2, with_mask=with_mask)
    shortest = shortest_input(config, head)
    batch = torch.export.Dim("batch", min=1)
    samples = torch.export.Dim("samples", min=shortest)
    args = (torch.from_numpy(values),) + ((torch.from_numpy(mask),) if with_mask else ())
    dynamic = ({0: batch, 1: samples},) * len(args)
    input_names = ["input_values", "attention_mask"][: len(args)]
    size = sum(np.asarray(v).nbytes for v in state.values())
    path = directory / ONNX_NAME
    with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            wrapper, args, dynamo=True, dynamic_shapes=dynamic, input_names=input_names,
            output_names=list(OUTPUTS[head]), opset_version=opset, verbose=False,
        )
    program.save(os.fspath(path), external_data=size > _ONNX_EXTERNAL_DATA_BYTES)
    if int8:
        _quantize_onnx(path, external_data=size / 4 > _ONNX_EXTERNAL_DATA_BYTES)


@contextlib.contextmanager
def _quiet_exporter():
    """Without the exporter's notes on torchvision ops and axis names, which say nothing about this model."""
    logger_ = logging.getLogger("torch.onnx")
    level = logger_.level
    logger_.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger_.setLevel(level)


def _quantize_onnx(path: Path, external_data: bool) -> None:
    """Replace ``path`` with its int8 form: MatMul weights int8, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = path.with_name("float." + path.name)
    os.replace(path, float_path)
    if os.path.exists(f"{path}.data"):
        os.replace(f"{path}.data", f"{float_path}.data")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises shape-inference pre-processing, which MatMul-only does not need
    try:
        quantize_dynamic(
            os.fspath(float_path), os.fspath(path), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
            use_external_data_format=external_data,
        )
    finally:
        root.setLevel(level)
    for leftover in (float_path, Path(f"{float_path}.data")):
        if leftover.exists():
            leftover.unlink()


# ------------------------------------------------------------------------------------ TensorFlow
def _write_saved_model(config, head, state, with_mask, directory: Path) -> None:
    import keras

    network = backend_model("tensorflow", config, head, state)
    names = OUTPUTS[head]
    signature = [keras.InputSpec(shape=(None, None), dtype="float32", name="input_values")]
    if with_mask:
        signature.append(keras.InputSpec(shape=(None, None), dtype="int32", name="attention_mask"))

        def serve(input_values, attention_mask):
            output = network(input_values, attention_mask=attention_mask, training=False)
            return {name: getattr(output, name) for name in names}
    else:
        def serve(input_values):
            output = network(input_values, training=False)
            return {name: getattr(output, name) for name in names}

    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=signature)
    archive.write_out(os.fspath(directory / SAVED_MODEL_DIR), verbose=False)


def _write_tflite(config, head, state, with_mask, directory: Path) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        _write_saved_model(config, head, state, with_mask, Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, SAVED_MODEL_DIR), [SIGNATURE])
        flatbuffer = converter.convert()
    (directory / TFLITE_NAME).write_bytes(flatbuffer)


# ------------------------------------------------------------------------------------ StableHLO
def _write_stablehlo(config, head, state, with_mask, directory: Path) -> None:
    import jax
    from jax import export as jax_export

    network = backend_model("flax", config, head, state)
    module, params, names = network.module, network.params, OUTPUTS[head]

    def serve(input_values, attention_mask=None):
        output = module.apply({"params": params}, input_values, attention_mask=attention_mask, deterministic=True)
        return {name: getattr(output, name) for name in names}

    shortest = shortest_input(config, head)
    batch, samples = jax_export.symbolic_shape("batch, samples", constraints=(f"samples >= {shortest}",))
    specs = [jax.ShapeDtypeStruct((batch, samples), np.float32)]
    if with_mask:
        specs.append(jax.ShapeDtypeStruct((batch, samples), np.int32))
    exported = jax_export.export(jax.jit(serve), platforms=STABLEHLO_PLATFORMS)(*specs)
    (directory / STABLEHLO_NAME).write_bytes(exported.serialize())


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("model", help="checkpoint directory or hub repo id, or a fairseq .pt file (with --dict)")
    parser.add_argument("out", help="output directory (must be empty or absent unless --overwrite)")
    parser.add_argument("--to", choices=TARGETS, required=True, help="what to write")
    parser.add_argument("--int8", action="store_true",
                        help="ONNX only: int8 MatMul weights (ONNX Runtime dynamic quantization)")
    parser.add_argument("--opset", type=_opset, default=None, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--dict", dest="dict_path", default=None,
                        help="fairseq dictionary (dict.ltr.txt) of a fine-tuned .pt: writes the tokenizer files")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT (whole, in one step) if it exists")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def _opset(text: str) -> int:
    from .cli import positive_int

    value = positive_int(text)
    if value < 18:
        import argparse

        raise argparse.ArgumentTypeError(f"must be 18 or newer (torch's exporter), got {text!r}")
    return value


def run(args) -> int:
    from .cli import InputError, UsageError

    try:  # a bad option, a missing framework or a MODEL that cannot be exported: nothing written
        prepared = _prepare(args.model, args.out, args.to, args.int8, args.overwrite, args.opset, args.dict_path,
                            dict(revision=args.revision))
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(str(e)) from None
    try:
        _write_export(prepared, args.out, args.to, int8=args.int8, opset=args.opset)
    except OSError as e:  # the disk: full, read-only, permissions
        raise InputError(f"cannot write {args.out}: {e}") from None
    print(f"wrote {args.out} ({args.to}{', int8' if args.int8 else ''})")
    return 0
