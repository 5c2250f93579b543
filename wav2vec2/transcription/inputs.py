"""Inputs on their way to the model: named, probed, read, normalised and cut into chunks.

- An input is a path, a waveform (samples,) at the model's rate or a ``(waveform, rate)`` pair.
  ``probe`` reads a file's header once; its length decides whether the file is read whole or
  streamed, and feeds the progress bar.
- Normalisation is the feature extractor's, over the whole input. A streamed file is read twice
  in blocks: once for its length and statistics (``streamed_statistics``), once to cut chunks,
  each normalised with those statistics by the same formula (``zero_mean_unit_var``).
- ``ChunkPlan`` cuts an input longer than one window into chunks on the model's frame grid
  (``inputs_to_logits_ratio`` samples): frame ``t`` of a chunk that starts at sample ``m * ratio``
  is frame ``m + t`` of the whole input, so dropping the context frames leaves exactly the frames
  an unchunked pass gives. Shorter inputs run whole.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from .. import audio
from ..audio import AudioError
from ..feature_extraction import zero_mean_unit_var
from ..spec.lengths import feat_extract_output_lengths, min_input_length


@dataclass
class Chunk:
    """A piece of one input's normalised waveform and which of its output frames are kept."""

    item: int  # position of the input it comes from
    index: int  # position among that input's chunks
    values: np.ndarray  # (samples,) normalised samples (a view into the input's when it was read whole)
    keep: slice  # frames of this chunk's output that are kept (the rest is context)


# ---------------------------------------------------------------------------------------- chunk plan
def chunk_bounds(num_samples: int, config, chunk_frames: int, context_frames: int) -> List[Tuple[int, int, slice]]:
    """(start_sample, stop_sample, keep) for each chunk of a ``num_samples`` waveform.

    Chunks hold ``chunk_frames`` kept frames plus up to ``context_frames`` on each side; the kept
    frames of consecutive chunks tile the whole input's output frames exactly once.
    """
    ratio = config.inputs_to_logits_ratio
    receptive_field = min_input_length(config)
    total = feat_extract_output_lengths(config, num_samples)
    bounds = []
    for first_kept in range(0, total, chunk_frames):
        last_kept = min(first_kept + chunk_frames, total)
        first = max(0, first_kept - context_frames)
        last = min(total, last_kept + context_frames)
        # Frame t needs samples [t * ratio, t * ratio + receptive_field).
        start, stop = first * ratio, (last - 1) * ratio + receptive_field
        bounds.append((start, stop, slice(first_kept - first, last_kept - first)))
    return bounds


def _seconds(name: str, value, allow_none: bool) -> Optional[float]:
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ChunkPlan:
    """How inputs are cut: ``chunk_frames`` kept frames (None: never cut) plus ``context_frames``
    frames of context on each side."""

    config: object  # Wav2Vec2Config
    chunk_frames: Optional[int]
    context_frames: int = 0

    @classmethod
    def from_seconds(cls, ctc, chunk_length_s: Optional[float], stride_length_s: Optional[float] = None) -> "ChunkPlan":
        """Chunks of ``chunk_length_s`` (0 or None: never cut) with ``stride_length_s`` of context on
        each side (default a sixth of the chunk), rounded to whole frames."""
        chunk_length_s = _seconds("chunk_length_s", chunk_length_s, allow_none=True)
        stride_length_s = _seconds("stride_length_s", stride_length_s, allow_none=True)
        if not chunk_length_s:
            return cls(ctc.config, None)
        if ctc.config.add_adapter:
            raise ValueError("chunking is not supported for checkpoints with an adapter; pass chunk_length_s=0")
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        window = int(round(chunk_length_s / ctc.seconds_per_frame))
        context = int(round(stride_length_s / ctc.seconds_per_frame))
        if window - 2 * context < 1:
            raise ValueError(
                f"chunk_length_s={chunk_length_s} must exceed twice stride_length_s={stride_length_s} "
                f"by at least one frame ({ctc.seconds_per_frame} s)"
            )
        return cls(ctc.config, window - 2 * context, context)

    @property
    def window_samples(self) -> Optional[int]:
        """Samples of the longest chunk (None when nothing is cut)."""
        if self.chunk_frames is None:
            return None
        return (self.chunk_frames + 2 * self.context_frames) * self.config.inputs_to_logits_ratio

    def is_long(self, num_samples: float) -> bool:
        """Whether an input of ``num_samples`` samples is cut into chunks."""
        return self.chunk_frames is not None and num_samples > self.window_samples

    def bounds(self, num_samples: int) -> List[Tuple[int, int, slice]]:
        """(start, stop, keep) of each chunk; one chunk, the whole input, when it is not long."""
        if not self.is_long(num_samples):
            return [(0, num_samples, slice(None))]
        return chunk_bounds(num_samples, self.config, self.chunk_frames, self.context_frames)

    def cut(self, item: int, values: np.ndarray) -> List[Chunk]:
        """The chunks of a whole normalised waveform (views into it)."""
        return [Chunk(item, i, values[start:stop], keep) for i, (start, stop, keep) in enumerate(self.bounds(values.size))]


# ---------------------------------------------------------------------------------------- sources
@dataclass
class Source:
    """One input and what its header says: ``seconds`` is None when the header cannot be read
    (the read then reports why)."""

    index: int
    item: object  # a path, a waveform, or a (waveform, rate) pair
    name: str  # how records and messages name it: its path, or ``<array i>``
    seconds: Optional[float]

    @property
    def path(self) -> Optional[str]:
        return os.fspath(self.item) if isinstance(self.item, (str, os.PathLike)) else None


def input_name(item, index: int) -> str:
    """How records and messages name an input: its path, or ``<array i>`` for a waveform."""
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<array {index}>"


def probe(index: int, item, sampling_rate: int) -> Source:
    """A Source: a file's length from its header (read once, here), a waveform's from its size."""
    name = input_name(item, index)
    seconds = None  # for what cannot be measured: reading it says why
    try:
        if isinstance(item, (str, os.PathLike)):
            seconds = audio.audio_duration(item)
        elif isinstance(item, tuple) and len(item) == 2:
            seconds = np.shape(item[0])[0] / float(item[1])
        else:
            seconds = np.shape(item)[0] / sampling_rate
    except (AudioError, TypeError, ValueError, IndexError, ZeroDivisionError):
        pass
    return Source(index, item, name, seconds)


def read_waveform(source: Source, sampling_rate: int) -> np.ndarray:
    """The whole raw waveform (samples,) float32 of an input, at ``sampling_rate``."""
    if source.path is not None:
        return audio.load_audio(source.path, sampling_rate)
    item = source.item
    try:
        if isinstance(item, tuple) and len(item) == 2:
            waveform, rate = item
            waveform = audio.resample(audio.to_mono(np.asarray(waveform, dtype=np.float32)), int(rate), sampling_rate)
        else:
            waveform = np.asarray(item, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AudioError(f"{source.name}: {e}") from None
    if waveform.ndim != 1 or waveform.size == 0:
        raise AudioError(f"{source.name}: expected a non-empty mono waveform (samples,), got shape {waveform.shape}")
    audio.check_finite(source.name, waveform, sampling_rate)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _check_receptive_field(name: str, num_samples: int, config) -> None:
    receptive_field = min_input_length(config)
    if num_samples < receptive_field:
        raise AudioError(f"{name}: {num_samples} samples is shorter than the model's receptive field ({receptive_field})")


def normalise_whole(ctc, name: str, waveform: np.ndarray) -> np.ndarray:
    """The feature extractor's ``input_values`` (samples,) for one whole waveform."""
    _check_receptive_field(name, waveform.size, ctc.config)
    try:
        values = ctc.feature_extractor(waveform, sampling_rate=ctc.sampling_rate, return_tensors="np")["input_values"]
    except ValueError as e:
        raise AudioError(f"{name}: {e}") from None
    return values.reshape(-1)


# ---------------------------------------------------------------------------------------- streaming
def should_stream(source: Source, plan: ChunkPlan, sampling_rate: int) -> bool:
    """A file longer than one chunk window is read in blocks instead of whole."""
    return source.path is not None and source.seconds is not None and plan.is_long(source.seconds * sampling_rate)


class Statistics(NamedTuple):
    """Length and normalisation statistics of an input read in blocks."""

    count: int  # samples at the model's rate
    mean: np.float32
    variance: np.float32


def block_statistics(blocks: Iterable[np.ndarray]) -> Statistics:
    """Mean and variance over all samples of ``blocks``: each block's in float64 (two passes),
    merged as Chan et al. do, so no sum of squares loses the variance of a loud file."""
    count, mean, squares = 0, 0.0, 0.0  # squares: sum of squared deviations from the mean
    for block in blocks:
        n = block.size
        block_mean = float(block.mean(dtype=np.float64))
        block_squares = float(np.square(block - block_mean, dtype=np.float64).sum())
        delta = block_mean - mean
        total = count + n
        mean += delta * n / total
        squares += block_squares + delta * delta * count * n / total
        count = total
    variance = squares / count if count else 0.0
    return Statistics(count, np.float32(mean), np.float32(variance))


def streamed_statistics(path: str, sampling_rate: int) -> Statistics:
    """First pass over a streamed file: its length at the model's rate and its statistics."""
    return block_statistics(audio.stream_audio(path, sampling_rate))


def _normalise_piece(ctc, piece: np.ndarray, stats: Statistics) -> np.ndarray:
    if not ctc.feature_extractor.do_normalize:
        return piece
    return zero_mean_unit_var(piece, stats.mean, stats.variance)


def streamed_chunks(ctc, plan: ChunkPlan, source: Source, stats: Statistics) -> Iterator[Chunk]:
    """Second pass: the chunks of a file, cut from its blocks as they are read; only one window
    of samples is held."""
    _check_receptive_field(source.name, stats.count, ctc.config)
    blocks = audio.stream_audio(source.path, ctc.sampling_rate)
    buffer, buffer_start = np.zeros(0, np.float32), 0  # samples [buffer_start, buffer_start + len)
    bounds = plan.bounds(stats.count)
    for i, (start, stop, keep) in enumerate(bounds):
        while buffer_start + buffer.size < stop:
            buffer = np.concatenate([buffer, next(blocks)])
        piece = buffer[start - buffer_start : stop - buffer_start]
        yield Chunk(source.index, i, _normalise_piece(ctc, piece, stats), keep)
        if i + 1 < len(bounds):  # chunks only move forward: drop what the next one does not need
            next_start = bounds[i + 1][0]
            buffer, buffer_start = buffer[next_start - buffer_start :], next_start


def read_normalised(ctc, plan: ChunkPlan, source: Source) -> np.ndarray:
    """An input's whole normalised waveform (samples,), with the very samples and statistics the
    streamed path would use for a file it streams (for workers that hold each input whole)."""
    if not should_stream(source, plan, ctc.sampling_rate):
        return normalise_whole(ctc, source.name, read_waveform(source, ctc.sampling_rate))
    blocks = list(audio.stream_audio(source.path, ctc.sampling_rate))
    stats = block_statistics(blocks)
    _check_receptive_field(source.name, stats.count, ctc.config)
    return _normalise_piece(ctc, np.concatenate(blocks), stats)
