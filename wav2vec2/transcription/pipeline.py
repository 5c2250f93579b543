"""The transcription loop: inputs in bounded memory through the model, one record per input, in order.

- Short inputs are read whole, a window of them at a time (up to 64 files or 10 minutes of audio).
  A window's chunks run longest first, ``batch_size`` at a time; a record is emitted as soon as
  its input's last chunk has run and its predecessors are out, and its frames are dropped.
- A file longer than one chunk window is streamed (``inputs.streamed_chunks``) and runs on its own.
- A bad input (missing, undecodable, empty, NaN or infinite samples, shorter than the receptive
  field) becomes ``{"file": name, "error": message}``; the others still run.
"""
from __future__ import annotations

import numbers
import os
import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence

import numpy as np

from ..audio import AudioError
from .batching import batches, run_batch
from .decoding import Decoder
from .inputs import (
    Chunk, ChunkPlan, Source, normalise_whole, probe, read_waveform, should_stream, streamed_chunks,
    streamed_statistics,
)
from .model import CTCModel, load_ctc_model

# Audio read per window before its chunks run: bounds memory when many files are given.
_WINDOW_SECONDS = 600.0
_WINDOW_FILES = 64


@dataclass
class _Pending:
    """One input of a window: its chunks, then its kept frames as they come back."""

    index: int
    name: str
    num_samples: int = 0
    chunks: List[Chunk] = field(default_factory=list)
    error: Optional[str] = None  # why it could not be read
    frames: List[Optional[np.ndarray]] = field(default_factory=list)  # kept frames per chunk
    remaining: int = 0  # chunks not yet run

    def set_chunks(self, chunks: List[Chunk], num_samples: int) -> "_Pending":
        self.chunks, self.num_samples = chunks, num_samples
        self.frames = [None] * len(chunks)
        self.remaining = len(chunks)
        return self


def check_batch_size(batch_size) -> int:
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


class Transcriber:
    """Runs a CTCModel over inputs and yields one record per input, in input order.

    ``audio_seconds`` and ``failed`` count the audio transcribed and the inputs that failed so far.
    """

    def __init__(
        self,
        ctc: CTCModel,
        batch_size: int = 8,
        chunk_length_s: Optional[float] = 20.0,
        stride_length_s: Optional[float] = None,
        decoder: Optional[Decoder] = None,
        progress: Optional[bool] = False,
    ):
        self.ctc = ctc
        self.batch_size = check_batch_size(batch_size)
        self.plan = ChunkPlan.from_seconds(ctc, chunk_length_s, stride_length_s)
        self.decoder = decoder or Decoder(ctc)
        self.progress = progress
        self.audio_seconds = 0.0
        self.failed = 0

    # ---------------------------------------------------------------- entry points
    def __call__(self, inputs: Iterable) -> Iterator[dict]:
        """Records of paths, waveforms at the model's rate or (waveform, rate) pairs."""
        rate = self.ctc.sampling_rate
        sources: Iterable[Source] = (probe(index, item, rate) for index, item in enumerate(inputs))
        total = None
        if self.progress is not False:  # the bar's total needs every header up front
            sources = list(sources)
            total = sum(source.seconds or 0.0 for source in sources)
        with _progress_bar(self.progress, total) as bar:
            window: List[_Pending] = []
            window_seconds = 0.0
            for source in sources:
                if should_stream(source, self.plan, rate):
                    yield from self._run_window(window, bar)  # keep the output in input order
                    window, window_seconds = [], 0.0
                    yield self._run_streamed(source, bar)
                    continue
                entry = self._read(source)
                window.append(entry)
                window_seconds += entry.num_samples / rate
                if window_seconds >= _WINDOW_SECONDS or len(window) >= _WINDOW_FILES:
                    yield from self._run_window(window, bar)
                    window, window_seconds = [], 0.0
            yield from self._run_window(window, bar)

    def transcribe_normalised(self, inputs: Sequence) -> Iterator[dict]:
        """Records of inputs already read and normalised (``inputs.read_normalised``), as
        (name, values (samples,)) pairs: for workers that are handed their audio."""
        window = [
            _Pending(index, name).set_chunks(self.plan.cut(index, values), values.size)
            for index, (name, values) in enumerate(inputs)
        ]
        yield from self._run_window(window, _NoBar())

    # ---------------------------------------------------------------- one input
    def _read(self, source: Source) -> _Pending:
        entry = _Pending(source.index, source.name)
        try:
            values = normalise_whole(self.ctc, source.name, read_waveform(source, self.ctc.sampling_rate))
        except AudioError as e:
            entry.error = str(e)
            return entry
        return entry.set_chunks(self.plan.cut(source.index, values), values.size)

    def _error(self, name: str, message: str) -> dict:
        self.failed += 1
        return {"file": name, "error": message}

    def _record(self, name: str, logits: np.ndarray, num_samples: int) -> dict:
        self.audio_seconds += num_samples / self.ctc.sampling_rate
        return self.decoder.record(name, logits, num_samples)

    def _run_streamed(self, source: Source, bar) -> dict:
        """Transcribe one long file chunk by chunk; only its frames (frames, vocab) are kept whole."""
        frames = []
        try:
            stats = streamed_statistics(source.path, self.ctc.sampling_rate)
            chunks = streamed_chunks(self.ctc, self.plan, source, stats)
            for batch in batches(chunks, self.batch_size, not self.ctc.takes_attention_mask):
                for kept in run_batch(self.ctc, batch):
                    frames.append(kept)  # chunks come in order
                    bar.update(kept.shape[0] * self.ctc.seconds_per_frame)
        except AudioError as e:
            return self._error(source.name, str(e))
        return self._record(source.name, np.concatenate(frames, axis=0), stats.count)

    # ---------------------------------------------------------------- a window of inputs
    def _run_window(self, window: List[_Pending], bar) -> Iterator[dict]:
        """Run every chunk of a window, yielding each input's record in order once it is done."""
        done = {entry.index: self._error(entry.name, entry.error) for entry in window if entry.error}
        by_index = {entry.index: entry for entry in window}
        order = [entry.index for entry in window]
        next_out = 0
        chunks = [chunk for entry in window for chunk in entry.chunks]
        # Longest first, so that each batch pads as little as possible.
        ordered = sorted(chunks, key=lambda chunk: chunk.values.size, reverse=True)
        for batch in batches(ordered, self.batch_size, not self.ctc.takes_attention_mask):
            for chunk, frames in zip(batch, run_batch(self.ctc, batch)):
                entry = by_index[chunk.item]
                entry.frames[chunk.index] = frames
                entry.remaining -= 1
                bar.update(frames.shape[0] * self.ctc.seconds_per_frame)
                if entry.remaining == 0:
                    logits = np.concatenate(entry.frames, axis=0)  # (frames, vocab) of the whole input
                    done[entry.index] = self._record(entry.name, logits, entry.num_samples)
                    entry.frames = entry.chunks = []  # free its audio and frames now
            while next_out < len(order) and order[next_out] in done:
                yield done.pop(order[next_out])
                next_out += 1
        for index in order[next_out:]:
            yield done.pop(index)


# ---------------------------------------------------------------------------------------- progress
class _NoBar:
    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]"


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


# ---------------------------------------------------------------------------------------- API
def make_transcriber(
    model,
    backend: str = "torch",
    device: Optional[str] = None,
    precision: str = "fp32",
    dictionary: Optional[str] = None,
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
) -> Transcriber:
    """A Transcriber from ``transcribe``'s options; the options are checked before the model loads."""
    check_batch_size(batch_size)
    if not isinstance(model, CTCModel):
        model = load_ctc_model(model, backend, device, precision, dictionary)
    decoder = Decoder.from_options(model, lm, beam_width, alpha, beta, hotwords, hotword_weight)
    return Transcriber(model, batch_size, chunk_length_s, stride_length_s, decoder, progress)


def transcribe_iter(audio: Iterable, model, **options) -> Iterator[dict]:
    """Like ``transcribe``, but yields each record once it is ready; bad inputs come out as
    ``{"file": name, "error": message}`` records instead of raising."""
    if isinstance(audio, (str, os.PathLike, np.ndarray)):
        audio = [audio]
    return make_transcriber(model, **options)(audio)


def transcribe(audio: Iterable, model, errors: str = "raise", **options) -> List[dict]:
    """Transcribe audio files or waveforms; one record per input, in order.

    audio: paths, or float waveforms (samples,) at the model's sampling rate, or (waveform, rate)
        pairs (any rate; (samples, channels) is averaged to mono). A single path or array is
        accepted too.
    model: a checkpoint directory or hub id, or a CTCModel from ``load_ctc_model``.
    backend, device: "torch", "tensorflow" or "flax", and that framework's device string.
    precision: "fp32" (default), "bf16" or "int8" (see ``load_ctc_model``).
    batch_size: chunks run per forward pass.
    chunk_length_s / stride_length_s: inputs longer than ``chunk_length_s`` run in chunks of that
        length with ``stride_length_s`` of context each side (default chunk_length_s / 6);
        0 or None runs every input whole.
    lm: a KenLM model file (.arpa or binary) for pyctcdecode's beam search instead of greedy
        decoding; beam_width, alpha, beta, hotwords and hotword_weight tune it.
    progress: show a tqdm bar on stderr (None: only when stderr is a terminal).
    errors: "raise" raises the first bad input's AudioError (a ValueError naming it) once the
        inputs before it are done; "return" keeps it as a record {"file": name, "error": message}.

    Returns records {"file", "text", "words": [{"word", "start", "end"}]}, times in seconds.
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    records = []
    for record in transcribe_iter(audio, model, **options):
        if "error" in record and errors == "raise":
            raise AudioError(record["error"])
        records.append(record)
    return records
