"""Wav2Vec2FeatureExtractor: raw mono waveforms -> normalised, padded ``input_values``.

Reads and writes the reference's ``preprocessor_config.json``, so a directory saved by either
library loads in the other. Needs NumPy only; a framework is imported only when ``return_tensors``
asks for its tensors.

One deliberate difference from the reference: each utterance is normalised over its own samples
only, before padding, whether or not an attention mask is returned (this is what fairseq did when
training the checkpoints). The reference normalises over the padded array when it returns no
attention mask, so the padding shifts the mean and variance of the shorter utterances.
"""
from __future__ import annotations

import json
import numbers
import os
from typing import Any, Dict, List, Optional

import numpy as np

FEATURE_EXTRACTOR_NAME = "preprocessor_config.json"

# The reference's epsilon under the square root of the variance.
NORM_EPS = 1e-7

_PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
_TENSOR_TYPES = ("np", "pt", "tf", "jax")
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "subfolder")


# ---------------------------------------------------------------------------------------- outputs
class BatchFeature(dict):
    """A dict of model inputs that also reads as attributes (``batch.input_values``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no model input named {name!r}; have {sorted(self)}") from None

    def convert_to_tensors(self, tensor_type: Optional[str]) -> "BatchFeature":
        if tensor_type is not None:
            for key, value in self.items():
                self[key] = to_tensor(value, tensor_type, key)
        return self

    def to(self, *args, **kwargs) -> "BatchFeature":
        """Move PyTorch tensors (e.g. ``batch.to("cuda")``); other values are left as they are."""
        return BatchFeature({k: v.to(*args, **kwargs) if hasattr(v, "to") else v for k, v in self.items()})


def _framework_of(value) -> Optional[str]:
    """'pt', 'tf' or 'jax' when ``value`` is one of their arrays, judged without importing anything."""
    module = type(value).__module__.split(".")[0]
    return {"torch": "pt", "tensorflow": "tf", "jax": "jax", "jaxlib": "jax"}.get(module)


def _batched_inputs(inputs, required_key: str) -> dict:
    """``pad()``'s inputs as one dict of batches: a list of per-example dicts becomes a dict of lists."""
    if isinstance(inputs, (list, tuple)):
        if not inputs or not all(isinstance(x, dict) for x in inputs):
            raise ValueError("pad() takes a dict of batched inputs or a non-empty list of per-example dicts")
        inputs = {k: [x[k] for x in inputs] for k in inputs[0]}
    if not isinstance(inputs, dict) or required_key not in inputs:
        keys = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"pad() needs {required_key!r} among its inputs, got {keys}")
    return inputs


def to_numpy(value) -> np.ndarray:
    """An array-like, or a framework tensor on any device, as a NumPy array."""
    if _framework_of(value) == "pt":
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()  # NumPy has no bfloat16
    return np.asarray(value)


def to_tensor(value, tensor_type: str, name: str = "value"):
    """A batch (2-D array or list of equal-length sequences) as one ``tensor_type`` tensor."""
    if tensor_type not in _TENSOR_TYPES:
        raise ValueError(f"return_tensors must be one of {_TENSOR_TYPES} or None, got {tensor_type!r}")
    if _framework_of(value) is not None:
        value = to_numpy(value)
    if isinstance(value, (list, tuple)) and value and not np.isscalar(value[0]):
        lengths = {len(v) for v in value}
        if len(lengths) > 1:
            raise ValueError(
                f"cannot make one tensor of {name}: its sequences have different lengths {sorted(lengths)}; "
                f"pass padding=True (or padding='max_length' with max_length=) to pad them"
            )
        value = np.stack([np.asarray(v) for v in value]) if value else np.asarray(value)
    array = np.asarray(value)
    if tensor_type == "np":
        return array
    if tensor_type == "pt":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))
    if tensor_type == "tf":
        import tensorflow as tf

        return tf.constant(array)
    import jax.numpy as jnp

    return jnp.asarray(array)


# ---------------------------------------------------------------------------------------- padding
def padding_strategy(padding) -> str:
    """Normalise the reference's ``padding`` argument to 'longest', 'max_length' or 'do_not_pad'."""
    if padding is True:
        return "longest"
    if padding is False or padding is None:
        return "do_not_pad"
    value = getattr(padding, "value", padding)  # accepts an enum member such as PaddingStrategy.LONGEST
    if value not in _PADDING_STRATEGIES:
        raise ValueError(f"padding must be True, False or one of {_PADDING_STRATEGIES}, got {padding!r}")
    return value


def target_length(
    lengths: List[int], padding, max_length: Optional[int], truncation: bool, pad_to_multiple_of: Optional[int]
) -> tuple:
    """(cut, pad): the length sequences are cut to (or None) and padded to (or None).

    As in the reference, ``pad_to_multiple_of`` rounds ``max_length`` up for truncation too, and
    ``padding='max_length'`` never cuts a longer sequence unless ``truncation`` is set.
    """
    strategy = padding_strategy(padding)
    if max_length is not None and (not isinstance(max_length, numbers.Integral) or max_length < 0):
        raise ValueError(f"max_length must be a non-negative integer, got {max_length!r}")
    multiple_ok = isinstance(pad_to_multiple_of, numbers.Integral) and pad_to_multiple_of >= 1
    if pad_to_multiple_of is not None and not multiple_ok:
        raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
    if strategy == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length=")
    if truncation and max_length is None:
        raise ValueError("truncation=True needs max_length=")

    def round_up(length):
        if pad_to_multiple_of is None:
            return length
        return -(-length // pad_to_multiple_of) * pad_to_multiple_of

    cut = round_up(max_length) if truncation else None
    if strategy == "do_not_pad":
        return cut, None
    if strategy == "longest":
        longest = max((min(n, cut) if cut is not None else n for n in lengths), default=0)
        return cut, round_up(longest)
    return cut, round_up(max_length)


def pad_sequences(sequences: List[np.ndarray], length: Optional[int], value, side: str = "right") -> List[np.ndarray]:
    """Each 1-D sequence padded with ``value`` up to ``length`` (longer ones are left as they are)."""
    if length is None:
        return list(sequences)
    padded = []
    for seq in sequences:
        missing = max(length - len(seq), 0)
        widths = (0, missing) if side == "right" else (missing, 0)
        padded.append(np.pad(seq, widths, constant_values=value))
    return padded


# ---------------------------------------------------------------------------------------- inputs
def _as_waveform(audio, index: int) -> np.ndarray:
    """One utterance as a float32 1-D array, or a ValueError that says what is wrong with it."""
    where = f"utterance {index}"
    if isinstance(audio, (str, bytes, dict)) or audio is None:
        raise ValueError(
            f"{where}: expected a 1-D array or list of float samples, got {type(audio).__name__}; "
            f"decode audio files first (e.g. soundfile.read(path))"
        )
    try:
        array = to_numpy(audio)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot read it as an array of samples ({e})") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{where}: samples must be real numbers, got dtype {array.dtype}")
    if array.ndim != 1:
        if array.ndim == 2:
            raise ValueError(
                f"{where}: expected mono audio (samples,), got shape {array.shape}. Downmix multi-channel "
                f"audio first: audio.mean(axis=1) for (samples, channels) as soundfile returns it, "
                f"audio.mean(axis=0) for (channels, samples)"
            )
        raise ValueError(f"{where}: expected mono audio of shape (samples,), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{where}: the audio is empty (0 samples)")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: the audio contains NaN or infinite samples")
    return array


def as_waveform_batch(raw_speech) -> List[np.ndarray]:
    """Accept one utterance (1-D array, list of floats) or a batch (2-D array, list of those)."""
    if isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("raw_speech is empty: pass at least one utterance")
        scalars = [isinstance(x, numbers.Real) and not isinstance(x, bool) for x in raw_speech]
        if all(scalars):
            return [_as_waveform(raw_speech, 0)]
        if any(scalars):
            raise ValueError(
                "raw_speech mixes numbers and sequences: pass one utterance as a list of floats, "
                "or a batch as a list of arrays"
            )
        return [_as_waveform(x, i) for i, x in enumerate(raw_speech)]

    if isinstance(raw_speech, np.ndarray) or _framework_of(raw_speech) is not None:
        array = to_numpy(raw_speech)
        if array.ndim == 1:
            return [_as_waveform(array, 0)]
        if array.ndim == 2:
            # A 2-D array is a batch (utterances, samples). soundfile gives stereo as (samples, 2):
            # taken as a batch that would silently be thousands of 2-sample utterances.
            if array.shape[1] <= 8 < array.shape[0]:
                raise ValueError(
                    f"raw_speech of shape {array.shape} looks like multi-channel audio (samples, channels); "
                    f"only mono is supported: downmix it with audio.mean(axis=1). A 2-D array is read as a "
                    f"batch of shape (utterances, samples)"
                )
            return [_as_waveform(row, i) for i, row in enumerate(array)]
        raise ValueError(
            f"raw_speech must be (samples,) or a batch (utterances, samples), got shape {array.shape}; "
            f"only mono audio is supported"
        )
    return [_as_waveform(raw_speech, 0)]


def zero_mean_unit_var(waveform: np.ndarray, mean=None, variance=None) -> np.ndarray:
    """(samples,) -> the same samples with zero mean and unit variance (float32, as the reference).

    ``mean`` and ``variance`` default to the waveform's own. A piece of a longer utterance read in
    blocks (long audio, streamed) passes the whole utterance's, as float32 scalars, so that every
    piece goes through this one formula with the same statistics.
    """
    mean = waveform.mean() if mean is None else mean
    variance = waveform.var() if variance is None else variance
    return (waveform - mean) / np.sqrt(variance + NORM_EPS)


# ---------------------------------------------------------------------------------------- extractor
class Wav2Vec2FeatureExtractor:
    """Turns mono waveforms into the model's ``input_values`` (and, when asked, ``attention_mask``).

    ``return_attention_mask`` should be True for layer-norm ("stable") checkpoints and False for
    group-norm (base) ones, which were trained on zero-padded batches without a mask.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        do_normalize: bool = True,
        padding_side: str = "right",
        **extra,
    ):
        if feature_size != 1:
            raise ValueError(f"feature_size must be 1 (wav2vec 2.0 reads mono samples), got {feature_size!r}")
        if not isinstance(sampling_rate, numbers.Integral) or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer in Hz, got {sampling_rate!r}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.feature_size = 1
        self.sampling_rate = int(sampling_rate)
        self.padding_value = float(padding_value)
        self.return_attention_mask = bool(return_attention_mask)
        self.do_normalize = bool(do_normalize)
        self.padding_side = padding_side
        extra.pop("feature_extractor_type", None)  # always written back as this class's name
        self.processor_class = extra.pop("processor_class", None)
        # Keys this class does not use are kept and written back, so a round trip loses nothing.
        self.extra = extra

    def __repr__(self):
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    # -------------------------------------------------------------------- calling
    def __call__(
        self,
        raw_speech,
        sampling_rate: Optional[int] = None,
        padding=False,
        max_length: Optional[int] = None,
        truncation: bool = False,
        pad_to_multiple_of: Optional[int] = None,
        return_attention_mask: Optional[bool] = None,
        return_tensors: Optional[str] = None,
    ) -> BatchFeature:
        """Normalise and pad one utterance or a batch; the result is always a batch.

        ``input_values`` is a list of float32 arrays (``return_tensors=None``) or one
        (batch, samples) tensor; ``attention_mask`` (1 = real sample) comes with it when
        ``return_attention_mask`` (default: this extractor's setting) is true.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"the audio is sampled at {sampling_rate} Hz but this feature extractor (and its model) "
                f"expects {self.sampling_rate} Hz: resample it first (e.g. librosa.resample or "
                f"torchaudio.functional.resample)"
            )
        waveforms = as_waveform_batch(raw_speech)
        cut, pad_to = target_length([len(w) for w in waveforms], padding, max_length, truncation, pad_to_multiple_of)
        if cut is not None:
            waveforms = [w[:cut] for w in waveforms]
            if any(len(w) == 0 for w in waveforms):
                raise ValueError(f"truncation to max_length={max_length} leaves an empty utterance")
        if self.do_normalize:
            waveforms = [zero_mean_unit_var(w) for w in waveforms]
        return self._padded_batch(waveforms, pad_to, return_attention_mask, return_tensors)

    def pad(
        self,
        processed_features,
        padding=True,
        max_length: Optional[int] = None,
        truncation: bool = False,
        pad_to_multiple_of: Optional[int] = None,
        return_attention_mask: Optional[bool] = None,
        return_tensors: Optional[str] = None,
    ) -> BatchFeature:
        """Pad already extracted ``input_values`` (a dict of batches, or a list of per-example dicts).

        Nothing is normalised. Keys other than ``input_values``/``attention_mask`` pass through.
        Without ``return_tensors`` the result is NumPy, or the framework the inputs came in.
        """
        processed_features = _batched_inputs(processed_features, "input_values")
        values = list(processed_features["input_values"])
        if return_tensors is None:
            return_tensors = _framework_of(values[0]) if values else None
            return_tensors = return_tensors or "np"
        values = [to_numpy(v) for v in values]
        for i, v in enumerate(values):
            if v.ndim != 1:
                raise ValueError(f"input_values[{i}]: expected shape (samples,), got {v.shape}")
        masks = processed_features.get("attention_mask")
        masks = [to_numpy(m).astype(np.int32) for m in masks] if masks is not None else None

        cut, pad_to = target_length([len(v) for v in values], padding, max_length, truncation, pad_to_multiple_of)
        if cut is not None:
            values = [v[:cut] for v in values]
            masks = [m[:cut] for m in masks] if masks is not None else None
        values = [v.astype(np.float32) if v.dtype == np.float64 else v for v in values]
        batch = self._padded_batch(values, pad_to, return_attention_mask, None, masks)
        for key, value in processed_features.items():
            batch.setdefault(key, value)
        return batch.convert_to_tensors(return_tensors)

    def _padded_batch(self, waveforms, pad_to, return_attention_mask, return_tensors, masks=None) -> BatchFeature:
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        batch = BatchFeature(input_values=pad_sequences(waveforms, pad_to, self.padding_value, self.padding_side))
        if return_attention_mask:
            if masks is None:
                masks = [np.ones(len(w), dtype=np.int32) for w in waveforms]
            batch["attention_mask"] = pad_sequences(masks, pad_to, 0, self.padding_side)
        return batch.convert_to_tensors(return_tensors)

    # -------------------------------------------------------------------- files
    def to_dict(self) -> Dict[str, Any]:
        data = dict(self.extra)
        data.update(
            do_normalize=self.do_normalize,
            feature_extractor_type=type(self).__name__,
            feature_size=self.feature_size,
            padding_side=self.padding_side,
            padding_value=self.padding_value,
            return_attention_mask=self.return_attention_mask,
            sampling_rate=self.sampling_rate,
        )
        if self.processor_class is not None:
            data["processor_class"] = self.processor_class
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any], **overrides) -> "Wav2Vec2FeatureExtractor":
        return cls(**{**data, **overrides})

    @classmethod
    def from_json_file(cls, path, **overrides) -> "Wav2Vec2FeatureExtractor":
        from .io.hub import read_json_object

        data = read_json_object(path)
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_pretrained(cls, path_or_repo_id, **kwargs) -> "Wav2Vec2FeatureExtractor":
        """Load ``preprocessor_config.json`` from a directory, a file or a hub repo id.

        Hub options (revision, cache_dir, local_files_only, token, subfolder) go to
        ``wav2vec2.io.hub.resolve_file``; any other keyword overrides a saved setting.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        if os.path.isfile(path_or_repo_id):
            return cls.from_json_file(path_or_repo_id, **kwargs)
        from .io.hub import resolve_file

        return cls.from_json_file(resolve_file(path_or_repo_id, FEATURE_EXTRACTOR_NAME, **hub_kwargs), **kwargs)

    def save_pretrained(self, save_directory) -> str:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, FEATURE_EXTRACTOR_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path
