"""Transcribe audio with a CTC checkpoint: ``transcribe()`` for scripts and ``wav2vec2 transcribe``.

The work is split so that memory stays bounded whatever the input:

- Inputs are cut into *segments*: the whole input when it is short, otherwise chunks of
  ``chunk_length_s`` seconds with ``stride_length_s`` seconds of context on each side. Chunk
  bounds fall on the model's frame grid (``inputs_to_logits_ratio`` samples), so frame ``t`` of a
  chunk that starts at sample ``m * ratio`` is frame ``m + t`` of the whole input, and dropping the
  context frames leaves exactly the frames an unchunked pass would give. Normalisation uses the
  statistics of the whole input, so a chunk sees the very samples an unchunked pass would.
- Short inputs are read whole, a window of them at a time. A file longer than one chunk is
  streamed instead: read in blocks twice, once for its length and statistics, once to cut chunks.
- Segments of a window are sorted by length and run in batches (padding plus an attention mask
  when the checkpoint takes one; only equal lengths share a batch when it does not, because
  padding would then change the result).
- A file's kept frames are joined and decoded (greedy CTC, or beam search with a KenLM model) as
  soon as its last segment has run; its record is emitted in input order and its frames dropped.

A record is ``{"file": name, "text": str, "words": [{"word": str, "start": s, "end": s}, ...]}``;
a file that cannot be read gives ``{"file": name, "error": message}`` instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from .audio import AudioError, audio_duration, load_audio, resample, stream_audio, to_mono
from .config import Wav2Vec2Config
from .feature_extraction import NORM_EPS
from .spec.lengths import feat_extract_output_lengths, min_input_length

BACKENDS = ("torch", "tensorflow", "flax")
FORMATS = ("txt", "json", "srt", "vtt")

# Audio read per window before its segments run: bounds memory when many files are given.
_WINDOW_SECONDS = 600.0
_WINDOW_FILES = 64

ForwardFn = Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]


# ---------------------------------------------------------------------------------------- model
@dataclass
class CTCModel:
    """A loaded CTC checkpoint: its config, feature extractor, tokenizer and a NumPy forward.

    ``forward(input_values (batch, samples) float32, attention_mask (batch, samples) int32 or None)``
    returns logits (batch, frames, vocab) float32.
    """

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


def _torch_forward(path, device) -> ForwardFn:
    import torch

    from .backends.torch import Wav2Vec2ForCTC

    device = torch.device(device or "cpu")
    model = Wav2Vec2ForCTC.from_pretrained(path).to(device).eval()

    def forward(input_values, attention_mask):
        with torch.inference_mode():
            mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(device)
            logits = model(torch.from_numpy(input_values).to(device), attention_mask=mask).logits
            return logits.float().cpu().numpy()

    return forward


def _tensorflow_forward(path, device) -> ForwardFn:
    import contextlib

    import tensorflow as tf

    from .backends.tensorflow import Wav2Vec2ForCTC

    def on_device():  # None: TensorFlow's own placement (a GPU when there is one)
        return tf.device(device) if device else contextlib.nullcontext()

    with on_device():
        model = Wav2Vec2ForCTC.from_pretrained(path)

    def forward(input_values, attention_mask):
        with on_device():
            mask = None if attention_mask is None else tf.constant(attention_mask)
            return np.asarray(model(tf.constant(input_values), attention_mask=mask).logits, dtype=np.float32)

    return forward


def _flax_forward(path, device) -> ForwardFn:
    import jax

    from .backends.flax import Wav2Vec2ForCTC

    # "cpu", "gpu" or "gpu:1" -> a jax device; None leaves jax's default.
    target = None
    if device:
        platform, _, index = str(device).partition(":")
        target = jax.devices(platform)[int(index or 0)]
    model = Wav2Vec2ForCTC.from_pretrained(path)

    def forward(input_values, attention_mask):
        values = jax.device_put(input_values, target)
        mask = None if attention_mask is None else jax.device_put(attention_mask, target)
        return np.asarray(model(values, attention_mask=mask, train=False).logits, dtype=np.float32)

    return forward


_FORWARDS = {"torch": _torch_forward, "tensorflow": _tensorflow_forward, "flax": _flax_forward}


def load_ctc_model(model: str, backend: str = "torch", device: Optional[str] = None, **hub_kwargs) -> CTCModel:
    """Load a CTC checkpoint (directory or hub id) with one backend, plus its processor."""
    if backend not in _FORWARDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    from .feature_extraction import Wav2Vec2FeatureExtractor
    from .tokenization import Wav2Vec2CTCTokenizer

    config = Wav2Vec2Config.from_pretrained(model, **hub_kwargs)
    feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(model, **hub_kwargs)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(model, **hub_kwargs)
    try:
        forward = _FORWARDS[backend](model, device)
    except ImportError as e:
        raise ValueError(f"backend {backend!r} is not available: {e}") from None
    return CTCModel(config, feature_extractor, tokenizer, forward)


# ---------------------------------------------------------------------------------------- segments
@dataclass
class Segment:
    """A piece of one input's waveform and which of its output frames belong to the result."""

    item: int  # index of the input it comes from
    index: int  # position among that input's segments
    samples: np.ndarray  # (samples,) normalised waveform piece (a view into the input's)
    keep: slice  # frames of this piece's output that are kept (the rest is context)


def chunk_bounds(num_samples: int, config: Wav2Vec2Config, chunk_frames: int, context_frames: int):
    """(start_sample, stop_sample, keep) for each chunk of a ``num_samples`` waveform.

    Chunks hold ``chunk_frames`` kept frames plus up to ``context_frames`` on each side; the kept
    frames of consecutive chunks tile the whole file's output frames exactly once.
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


@dataclass
class _Input:
    """One input on its way through: its segments, then its kept frames as they come back."""

    index: int
    name: str
    num_samples: int = 0
    segments: List[Segment] = field(default_factory=list)
    error: Optional[str] = None  # why it could not be read
    frames: List[Optional[np.ndarray]] = field(default_factory=list)  # kept frames per segment
    remaining: int = 0  # segments not yet run


class Transcriber:
    """Runs a CTCModel over inputs in bounded memory and yields one record per input, in order.

    decoder: None for greedy CTC, else a Wav2Vec2ProcessorWithLM used for beam search.
    """

    def __init__(
        self,
        ctc: CTCModel,
        batch_size: int = 8,
        chunk_length_s: Optional[float] = 20.0,
        stride_length_s: Optional[float] = None,
        decoder=None,
        decode_kwargs: Optional[dict] = None,
        progress: Optional[bool] = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.ctc = ctc
        self.batch_size = batch_size
        self.decoder = decoder
        self.decode_kwargs = dict(decode_kwargs or {})
        self.progress = progress
        self.chunk_frames, self.context_frames = self._chunk_frames(chunk_length_s, stride_length_s)

    # ---------------------------------------------------------------- chunk sizes
    def _chunk_frames(self, chunk_length_s, stride_length_s):
        """Kept and context frames per chunk; (None, 0) when chunking is off."""
        if not chunk_length_s:
            return None, 0
        if self.ctc.config.add_adapter:
            raise ValueError("chunking is not supported for checkpoints with an adapter; pass chunk_length_s=0")
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        seconds_per_frame = self.ctc.config.inputs_to_logits_ratio / self.ctc.sampling_rate
        window = int(round(chunk_length_s / seconds_per_frame))
        context = int(round(stride_length_s / seconds_per_frame))
        if stride_length_s < 0 or window - 2 * context < 1:
            raise ValueError(
                f"chunk_length_s={chunk_length_s} must exceed twice stride_length_s={stride_length_s} "
                f"by at least one frame ({seconds_per_frame} s)"
            )
        return window - 2 * context, context

    # ---------------------------------------------------------------- reading inputs
    def _read(self, item, name: str) -> np.ndarray:
        """The waveform of a path, an array (at the model's rate) or an (array, rate) pair."""
        sampling_rate = self.ctc.sampling_rate
        if isinstance(item, (str, os.PathLike)):
            return load_audio(item, sampling_rate)
        if isinstance(item, tuple) and len(item) == 2:
            waveform, rate = item
            waveform = resample(to_mono(np.asarray(waveform, dtype=np.float32)), int(rate), sampling_rate)
        else:
            waveform = np.asarray(item, dtype=np.float32)
        if waveform.ndim != 1 or waveform.size == 0:
            raise AudioError(f"{name}: expected a non-empty mono waveform (samples,), got shape {waveform.shape}")
        return np.ascontiguousarray(waveform, dtype=np.float32)

    def _normalise(self, waveform: np.ndarray) -> np.ndarray:
        """The feature extractor's per-utterance normalisation, applied once to the whole file."""
        extractor = self.ctc.feature_extractor
        values = extractor(waveform, sampling_rate=self.ctc.sampling_rate, return_tensors="np")["input_values"]
        return np.asarray(values, dtype=np.float32).reshape(-1)

    def _segments(self, item: int, name: str, waveform: np.ndarray) -> List[Segment]:
        receptive_field = min_input_length(self.ctc.config)
        if waveform.size < receptive_field:
            raise AudioError(
                f"{name}: {waveform.size} samples is shorter than the model's receptive field ({receptive_field})"
            )
        values = self._normalise(waveform)
        whole = [Segment(item, 0, values, slice(None))]
        if self.chunk_frames is None:
            return whole
        window_samples = (self.chunk_frames + 2 * self.context_frames) * self.ctc.config.inputs_to_logits_ratio
        if values.size <= window_samples:
            return whole  # short input: one pass, exactly what an unchunked forward gives
        bounds = chunk_bounds(values.size, self.ctc.config, self.chunk_frames, self.context_frames)
        return [Segment(item, i, values[start:stop], keep) for i, (start, stop, keep) in enumerate(bounds)]

    # ---------------------------------------------------------------- batching
    def _batches(self, segments: Iterable[Segment]) -> Iterator[List[Segment]]:
        """Consecutive segments in batches of batch_size; only equal lengths share a batch when the
        model takes no attention mask (zero padding would change its output)."""
        batch: List[Segment] = []
        for segment in segments:
            full = len(batch) == self.batch_size
            other_length = batch and not self.ctc.takes_attention_mask and batch[0].samples.size != segment.samples.size
            if full or other_length:
                yield batch
                batch = []
            batch.append(segment)
        if batch:
            yield batch

    def _run(self, batch: List[Segment]) -> List[np.ndarray]:
        """Kept frames (frames, vocab) of each segment of one batch."""
        lengths = [s.samples.size for s in batch]
        padding_value = float(self.ctc.feature_extractor.padding_value)
        input_values = np.full((len(batch), max(lengths)), padding_value, dtype=np.float32)
        attention_mask = np.zeros((len(batch), max(lengths)), dtype=np.int32)
        for row, segment in enumerate(batch):
            input_values[row, : segment.samples.size] = segment.samples
            attention_mask[row, : segment.samples.size] = 1
        logits = self.ctc.forward(input_values, attention_mask if self.ctc.takes_attention_mask else None)
        # (batch, frames, vocab); each row is valid up to its own frame count.
        frames = feat_extract_output_lengths(self.ctc.config, np.asarray(lengths))
        return [logits[row, : frames[row]][segment.keep] for row, segment in enumerate(batch)]

    # ---------------------------------------------------------------- decoding
    def _record(self, name: str, logits: np.ndarray, num_samples: int) -> dict:
        seconds_per_frame = self.ctc.config.inputs_to_logits_ratio / self.ctc.sampling_rate
        if self.decoder is None:
            text, offsets = _greedy(self.ctc.tokenizer, logits)
        else:
            text, offsets = _beam_search(self.decoder, logits, self.decode_kwargs)
        duration = num_samples / self.ctc.sampling_rate
        words = [
            {
                "word": w["word"],
                "start": round(min(w["start_offset"] * seconds_per_frame, duration), 6),
                "end": round(min(w["end_offset"] * seconds_per_frame, duration), 6),
            }
            for w in offsets
        ]
        return {"file": name, "text": text, "words": words}

    # ---------------------------------------------------------------- the loop
    def __call__(self, inputs: Sequence) -> Iterator[dict]:
        inputs = list(inputs)
        with _progress_bar(self.progress, self._total_seconds(inputs)) as bar:
            window: List[_Input] = []
            window_seconds = 0.0
            for index, item in enumerate(inputs):
                if self._should_stream(item):
                    yield from self._run_window(window, bar)  # keep the output in input order
                    window, window_seconds = [], 0.0
                    yield self._run_streamed(index, item, bar)
                    continue
                entry = self._prepare(index, item)
                window.append(entry)
                window_seconds += entry.num_samples / self.ctc.sampling_rate
                if window_seconds >= _WINDOW_SECONDS or len(window) >= _WINDOW_FILES:
                    yield from self._run_window(window, bar)
                    window, window_seconds = [], 0.0
            yield from self._run_window(window, bar)

    def _prepare(self, index: int, item) -> _Input:
        entry = _Input(index, input_name(item, index))
        try:
            waveform = self._read(item, entry.name)
            entry.segments = self._segments(index, entry.name, waveform)
        except AudioError as e:
            entry.error = str(e)
            return entry
        entry.num_samples = waveform.size
        entry.frames = [None] * len(entry.segments)
        entry.remaining = len(entry.segments)
        return entry

    # ---------------------------------------------------------------- long files, streamed
    def _should_stream(self, item) -> bool:
        """A file longer than one chunk window is read block by block instead of whole."""
        if self.chunk_frames is None or not isinstance(item, (str, os.PathLike)):
            return False
        try:
            seconds = audio_duration(item)
        except Exception:  # unreadable: the ordinary path reports it
            return False
        window_frames = self.chunk_frames + 2 * self.context_frames
        return seconds * self.ctc.sampling_rate > window_frames * self.ctc.config.inputs_to_logits_ratio

    def _file_statistics(self, name: str):
        """(samples, shift, scale) of a file read block by block: its length at the model's rate, and
        the feature extractor's normalisation (x - shift) * scale computed over the whole file."""
        count, total, total_squares = 0, 0.0, 0.0
        for block in stream_audio(name, self.ctc.sampling_rate):
            count += block.size
            total += float(block.sum(dtype=np.float64))
            total_squares += float(np.square(block, dtype=np.float64).sum())
        if count < min_input_length(self.ctc.config):
            raise AudioError(f"{name}: {count} samples is shorter than the model's receptive field")
        if not self.ctc.feature_extractor.do_normalize:
            return count, 0.0, 1.0
        mean = total / count
        return count, mean, 1.0 / np.sqrt(max(total_squares / count - mean**2, 0.0) + NORM_EPS)

    def _streamed_segments(self, index: int, name: str, count: int, shift: float, scale: float) -> Iterator[Segment]:
        """The chunks of a file, cut from its blocks as they are read; only one window is held."""
        blocks = stream_audio(name, self.ctc.sampling_rate)
        buffer, buffer_start = np.zeros(0, np.float32), 0  # samples [buffer_start, buffer_start + len)
        bounds = chunk_bounds(count, self.ctc.config, self.chunk_frames, self.context_frames)
        for i, (start, stop, keep) in enumerate(bounds):
            while buffer_start + buffer.size < stop:
                buffer = np.concatenate([buffer, next(blocks)])
            piece = buffer[start - buffer_start : stop - buffer_start]
            yield Segment(index, i, ((piece - shift) * scale).astype(np.float32), keep)
            if i + 1 < len(bounds):  # chunks only move forward: drop what the next one does not need
                next_start = bounds[i + 1][0]
                buffer, buffer_start = buffer[next_start - buffer_start :], next_start

    def _run_streamed(self, index: int, item, bar) -> dict:
        """Transcribe one long file chunk by chunk; only its frames (frames, vocab) are kept whole."""
        name = input_name(item, index)
        seconds_per_frame = self.ctc.config.inputs_to_logits_ratio / self.ctc.sampling_rate
        frames = []
        try:
            count, shift, scale = self._file_statistics(name)
            for batch in self._batches(self._streamed_segments(index, name, count, shift, scale)):
                for kept in self._run(batch):
                    frames.append(kept)  # segments come in order
                    bar.update(kept.shape[0] * seconds_per_frame)
        except AudioError as e:
            return {"file": name, "error": str(e)}
        return self._record(name, np.concatenate(frames, axis=0), count)

    def _total_seconds(self, inputs) -> Optional[float]:
        """Audio length of all inputs, from file headers, for the progress bar (None if unknown)."""
        if self.progress is False:
            return None
        total = 0.0
        for item in inputs:
            try:
                total += audio_seconds(item, self.ctc.sampling_rate)
            except Exception:  # unreadable: reported when its turn comes
                pass
        return total

    def _run_window(self, window: List[_Input], bar) -> Iterator[dict]:
        """Run every segment of a window, yielding each input's record in order once it is done."""
        done = {entry.index: {"file": entry.name, "error": entry.error} for entry in window if entry.error}
        by_index = {entry.index: entry for entry in window}
        order = [entry.index for entry in window]
        next_out = 0
        seconds_per_frame = self.ctc.config.inputs_to_logits_ratio / self.ctc.sampling_rate
        segments = [s for entry in window for s in entry.segments]
        # Longest first, so that each batch pads as little as possible.
        for batch in self._batches(sorted(segments, key=lambda s: s.samples.size, reverse=True)):
            for segment, frames in zip(batch, self._run(batch)):
                entry = by_index[segment.item]
                entry.frames[segment.index] = frames
                entry.remaining -= 1
                bar.update(frames.shape[0] * seconds_per_frame)
                if entry.remaining == 0:
                    logits = np.concatenate(entry.frames, axis=0)  # (frames, vocab) of the whole input
                    done[entry.index] = self._record(entry.name, logits, entry.num_samples)
                    entry.frames = entry.segments = []  # free its audio and frames now
            while next_out < len(order) and order[next_out] in done:
                yield done.pop(order[next_out])
                next_out += 1
        for index in order[next_out:]:
            yield done.pop(index)


def audio_seconds(item, sampling_rate: int) -> float:
    """Length of an input in seconds: from the header of a file, from the size of a waveform."""
    if isinstance(item, (str, os.PathLike)):
        return audio_duration(item)
    if isinstance(item, tuple) and len(item) == 2:
        return np.shape(item[0])[0] / item[1]
    return np.shape(item)[0] / sampling_rate


def input_name(item, index: int) -> str:
    """How records and messages name an input: its path, or ``<array i>`` for a waveform."""
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<array {index}>"


class _NoBar:
    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress_bar(progress, total_seconds):
    """A tqdm bar on stderr counting seconds of audio; shown only when the work lasts a while."""
    if progress is False:
        return _NoBar()
    from tqdm.auto import tqdm

    # disable=None hides the bar when stderr is not a terminal; delay hides it for short work.
    return tqdm(
        total=total_seconds, unit="s audio", desc="transcribing", file=sys.stderr, delay=2.0,
        disable=None if progress is None else not progress, bar_format=_BAR_FORMAT,
    )


_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]"


def _greedy(tokenizer, logits: np.ndarray):
    """Greedy CTC: text and word offsets (in frames) from (frames, vocab) logits."""
    ids = logits.argmax(axis=-1)
    out = tokenizer.decode(ids, output_word_offsets=True)
    return out.text, out.word_offsets


def _beam_search(decoder, logits: np.ndarray, decode_kwargs: dict):
    """Beam search on log-probabilities (the decoder prunes tokens by log-probability)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    out = decoder.decode(log_probs, output_word_offsets=True, **decode_kwargs)
    return out.text, out.word_offsets


# ---------------------------------------------------------------------------------------- API
def transcribe_iter(
    audio: Iterable,
    model,
    backend: str = "torch",
    device: Optional[str] = None,
    batch_size: int = 8,
    chunk_length_s: Optional[float] = 20.0,
    stride_length_s: Optional[float] = None,
    lm: Optional[str] = None,
    beam_width: Optional[int] = None,
    alpha: Optional[float] = None,
    beta: Optional[float] = None,
    hotwords: Optional[Sequence[str]] = None,
    hotword_weight: Optional[float] = None,
    progress: Optional[bool] = False,
) -> Iterator[dict]:
    """Like ``transcribe``, but yields each record once it is ready; unreadable inputs come out as
    ``{"file": name, "error": message}`` records instead of raising."""
    if isinstance(audio, (str, os.PathLike, np.ndarray)):
        audio = [audio]
    ctc = model if isinstance(model, CTCModel) else load_ctc_model(model, backend, device)
    lm_decoder, decode_kwargs = None, {}
    if lm is not None:
        from .processing_with_lm import Wav2Vec2ProcessorWithLM

        lm_decoder = Wav2Vec2ProcessorWithLM.from_kenlm(ctc.feature_extractor, ctc.tokenizer, lm, alpha=alpha, beta=beta)
        options = dict(beam_width=beam_width, hotwords=hotwords, hotword_weight=hotword_weight)
        decode_kwargs = {k: v for k, v in options.items() if v is not None}
    transcriber = Transcriber(
        ctc, batch_size=batch_size, chunk_length_s=chunk_length_s, stride_length_s=stride_length_s,
        decoder=lm_decoder, decode_kwargs=decode_kwargs, progress=progress,
    )
    return transcriber(audio)


def transcribe(audio: Iterable, model, errors: str = "raise", **kwargs) -> List[dict]:
    """Transcribe audio files or waveforms; one record per input, in order.

    audio: paths, or float waveforms (samples,) at the model's sampling rate, or (waveform, rate)
        pairs (any rate; (samples, channels) is averaged to mono). A single path or array is
        accepted too.
    model: a checkpoint directory or hub id, or a CTCModel from ``load_ctc_model``.
    backend, device: "torch", "tensorflow" or "flax", and that framework's device string.
    batch_size: segments run per forward pass.
    chunk_length_s / stride_length_s: inputs longer than ``chunk_length_s`` run in chunks of that
        length with ``stride_length_s`` of context each side (default chunk_length_s / 6);
        0 or None runs every input whole.
    lm: a KenLM model file (.arpa or binary) for pyctcdecode's beam search instead of greedy
        decoding; beam_width, alpha, beta, hotwords and hotword_weight tune it.
    progress: show a tqdm bar on stderr (None: only when stderr is a terminal).
    errors: "raise" raises the first unreadable input's AudioError; "return" keeps it as a record
        {"file": name, "error": message}.

    Returns records {"file", "text", "words": [{"word", "start", "end"}]}, times in seconds.
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    records = []
    for record in transcribe_iter(audio, model, **kwargs):
        if "error" in record and errors == "raise":
            raise AudioError(record["error"])
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------- output formats
def _timestamp(seconds: float, decimal: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def subtitle_cues(words: Sequence[dict], max_seconds: float = 5.0, max_words: int = 12):
    """Group timed words into cues (start, end, text) of at most ``max_seconds`` / ``max_words``."""
    cues, current = [], []
    for word in words:
        if current and (word["end"] - current[0]["start"] > max_seconds or len(current) == max_words):
            cues.append(current)
            current = []
        current.append(word)
    if current:
        cues.append(current)
    return [(cue[0]["start"], cue[-1]["end"], " ".join(w["word"] for w in cue)) for cue in cues]


def format_srt(record: dict) -> str:
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(subtitle_cues(record["words"]), start=1)
    ]
    return "\n".join(blocks)


def format_vtt(record: dict) -> str:
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n"
        for start, end, text in subtitle_cues(record["words"])
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def format_record(record: dict, fmt: str) -> str:
    """One record as the text ``wav2vec2 transcribe --format fmt`` prints for it."""
    if fmt == "json":
        return json.dumps(record, ensure_ascii=False) + "\n"
    if fmt == "txt":
        return record["text"] + "\n"
    if fmt == "srt":
        return format_srt(record) + "\n"
    if fmt == "vtt":
        return format_vtt(record) + "\n"
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate and channel count)")
    parser.add_argument("--model", required=True, help="CTC checkpoint directory or hub id")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (torch); /GPU:0 (tensorflow); gpu (flax)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-length-s", type=float, default=20.0,
                        help="longer inputs run in chunks of this many seconds (0: never chunk)")
    parser.add_argument("--stride-length-s", type=float, default=None,
                        help="context on each side of a chunk, dropped after inference (default: chunk / 6)")
    parser.add_argument("--format", choices=FORMATS, default="txt")
    parser.add_argument("--lm", default=None, help="KenLM model (.arpa or binary) for beam search decoding")
    parser.add_argument("--beam-width", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=None, help="language model weight")
    parser.add_argument("--beta", type=float, default=None, help="word insertion bonus")
    parser.add_argument("--hotwords", nargs="+", default=None, help="words to favour in beam search")
    parser.add_argument("--hotword-weight", type=float, default=None)
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def run(args) -> int:
    """Print one result per readable file; report the others on stderr and return 1 if there were any."""
    try:
        records = transcribe_iter(
            args.audio, model=args.model, backend=args.backend, device=args.device,
            batch_size=args.batch_size, chunk_length_s=args.chunk_length_s, stride_length_s=args.stride_length_s,
            lm=args.lm, beam_width=args.beam_width, alpha=args.alpha, beta=args.beta,
            hotwords=args.hotwords, hotword_weight=args.hotword_weight,
            progress=False if args.no_progress else None,
        )
    except (ValueError, OSError) as e:  # the model, the LM or an option: nothing can be transcribed
        print(f"wav2vec2 transcribe: {e}", file=sys.stderr)
        return 2
    failed = 0
    for record in records:
        if "error" in record:
            print(f"wav2vec2 transcribe: {record['error']}", file=sys.stderr)
            failed += 1
            continue
        if args.format in ("srt", "vtt") and len(args.audio) > 1:
            print(f"==> {record['file']} <==")  # several subtitle files in one stream: say which is which
        sys.stdout.write(format_record(record, args.format))
        sys.stdout.flush()
    return 1 if failed else 0
