"""Training and evaluation data: manifests and local Hugging Face ``datasets`` directories.

DATA is one of
- a JSON-lines manifest (``.jsonl``/``.json``): one object a line, ``{"audio": "clips/a.flac", "text": "..."}``;
- a CSV or TSV manifest (``.csv``/``.tsv``) with a header row naming the columns;
- a directory written by ``datasets.Dataset.save_to_disk`` (``datasets`` is imported only for this),
  whose audio column is an ``Audio`` feature (bytes or a path) or a column of paths; a
  ``DatasetDict`` needs ``split=``.

Audio paths are relative to the manifest's directory (or the dataset directory); absolute paths are
used as they are. The columns are ``audio`` and ``text`` (CTC) or ``label`` (classification) unless
named otherwise; pretraining reads audio only. Other columns are ignored.

Every row is checked when the data is read, and a bad row is skipped and reported with its line
(manifests; the header is line 1 of a CSV) or row index (datasets): a missing column or value, a
missing or unreadable audio file, audio with NaN or infinite samples, empty text (after
normalisation), a label outside ``labels``, audio shorter than the conv stack's receptive field or
longer than ``max_seconds``. ``Dataset.summary()`` counts them. A file that cannot be read at all
(missing, not a manifest, no audio column) raises ``DataError`` naming it.

Audio of any rate and channel count is read with ``wav2vec2.audio`` (soundfile, soxr, averaging
channels to mono), as transcription reads it.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np

from ..audio import AudioError, load_audio, resample, to_mono
from .vocabulary import normalize_text

TASKS = ("ctc", "sequence-classification", "pretraining")
MANIFEST_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


class DataError(ValueError):
    """Data that cannot be used at all (a missing file, a missing column); the message names it."""


@dataclass(frozen=True)
class BadRow:
    """One skipped row: ``where`` is ``file:line N`` or ``dir:row N``."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class Example:
    """One usable row. ``seconds`` is the audio's length; ``text`` is as written (not normalised)."""

    where: str
    seconds: float
    text: Optional[str] = None
    label: Optional[str] = None
    path: Optional[str] = None  # the audio file, when the audio is a file
    _read: Optional[Callable[[], tuple]] = field(default=None, repr=False, compare=False)

    def load_audio(self, sampling_rate: int = 16000) -> np.ndarray:
        """The audio as mono float32 (samples,) at ``sampling_rate``; AudioError names the row."""
        try:
            if self.path is not None:
                return load_audio(self.path, sampling_rate)
            waveform, rate = self._read()
            return np.ascontiguousarray(resample(to_mono(waveform), rate, sampling_rate), dtype=np.float32)
        except AudioError as e:
            raise AudioError(f"{self.where}: {e}") from None


@dataclass
class Dataset:
    """The usable examples of one DATA source, in its order, and the rows that were skipped."""

    source: str
    examples: List[Example]
    bad_rows: List[BadRow]

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def seconds(self) -> float:
        return float(sum(e.seconds for e in self.examples))

    def summary(self) -> str:
        """One line: rows read, used and skipped, with the reasons counted."""
        total = len(self.examples) + len(self.bad_rows)
        line = f"{self.source}: {total} rows, {len(self.examples)} used ({self.seconds / 3600:.2f} h of audio)"
        if not self.bad_rows:
            return line + ", none skipped"
        reasons = Counter(row.reason.split(" (")[0].split(":")[0] for row in self.bad_rows)
        counted = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        return f"{line}, {len(self.bad_rows)} skipped: {counted}"


# ------------------------------------------------------------------------------------ audio checks
def _read_bytes(data: bytes, name: str):
    import soundfile

    try:
        waveform, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as e:
        raise AudioError(f"{name}: cannot read audio ({e})") from None
    if waveform.shape[0] == 0:
        raise AudioError(f"{name}: the audio holds no samples")
    return waveform, int(rate)


def _read_row_bytes(dataset, column: str, index: int, name: str):
    return _read_bytes(dataset[index][column]["bytes"], name)


def _read_path(path: str, sampling_rate: int):
    return load_audio(path, sampling_rate), sampling_rate


def _check_audio(read: Callable[[], tuple]) -> float:
    """Decode the audio once, as training will: its length in seconds, or AudioError (missing,
    unreadable, empty, NaN/Inf)."""
    waveform, rate = read()
    if not np.isfinite(waveform).all():
        raise AudioError("the audio has NaN or infinite samples")
    return waveform.shape[0] / rate


# ------------------------------------------------------------------------------------ rows
@dataclass
class _Columns:
    audio: str
    text: str
    label: str


def _rows_jsonl(path: str):
    """(line number, dict or an error string) per non-blank line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, f"not valid JSON ({e.msg})"
                continue
            yield number, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def _rows_delimited(path: str, delimiter: str, needed: Sequence[str]):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty (expected a header row naming the columns)")
        header = [name.strip() for name in header]
        missing = [name for name in needed if name not in header]
        if missing:
            raise DataError(f"{path}: no column named {', '.join(map(repr, missing))} (the header has {header})")
        line = reader.line_num + 1  # where the next record starts
        for values in reader:
            start, line = line, reader.line_num + 1
            if not values:
                continue
            if len(values) != len(header):
                yield start, f"has {len(values)} fields, the header names {len(header)}"
                continue
            yield start, dict(zip(header, values))


def _needed_columns(task: str, columns: _Columns) -> List[str]:
    if task == "ctc":
        return [columns.audio, columns.text]
    if task == "sequence-classification":
        return [columns.audio, columns.label]
    return [columns.audio]


def _manifest_examples(path, task, columns, check, sampling_rate):
    kind = MANIFEST_SUFFIXES[os.path.splitext(path)[1].lower()]
    if kind == "jsonl":
        rows = _rows_jsonl(path)
    else:
        rows = _rows_delimited(path, "," if kind == "csv" else "\t", _needed_columns(task, columns))
    base = os.path.dirname(os.path.abspath(path))
    for number, row in rows:
        where = f"{path}:line {number}"
        if isinstance(row, str):
            yield where, row
            continue
        audio = row.get(columns.audio)
        if audio is None or audio == "":
            yield where, f"missing column {columns.audio!r}"
            continue
        if not isinstance(audio, str):
            yield where, f"column {columns.audio!r} must be a path, got {type(audio).__name__}"
            continue
        audio_path = audio if os.path.isabs(audio) else os.path.join(base, audio)
        yield where, partial(check, where, row, audio_path, partial(_read_path, audio_path, sampling_rate))


def _dataset_examples(path, split, task, columns, check, sampling_rate):
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise DataError(f"{path}: holds the splits {sorted(loaded)}; choose one with split=")
        loaded = loaded[split]
    elif split is not None:
        raise DataError(f"{path}: holds one dataset, not splits; leave split unset")
    missing = [name for name in _needed_columns(task, columns) if name not in loaded.column_names]
    if missing:
        raise DataError(f"{path}: no column named {', '.join(map(repr, missing))} (it has {loaded.column_names})")
    if isinstance(loaded.features[columns.audio], datasets.Audio):
        # Undecoded: {"bytes": ..., "path": ...}, read here with soundfile like every other audio.
        loaded = loaded.cast_column(columns.audio, datasets.Audio(decode=False))
    base = os.path.abspath(path)
    for index in range(len(loaded)):
        row = loaded[index]
        where = f"{path}:row {index}"
        audio = row[columns.audio]
        if isinstance(audio, dict) and audio.get("bytes") is not None:
            # Fetched again from the (memory-mapped) dataset when needed, not kept in the Example.
            read = partial(_read_row_bytes, loaded, columns.audio, index, audio.get("path") or where)
            yield where, partial(check, where, row, None, read, reader=read)
            continue
        if isinstance(audio, dict):
            audio = audio.get("path")
        if not isinstance(audio, str) or not audio:
            yield where, f"missing value in column {columns.audio!r}"
            continue
        audio_path = audio if os.path.isabs(audio) else os.path.join(base, audio)
        yield where, partial(check, where, row, audio_path, partial(_read_path, audio_path, sampling_rate))


def read_dataset(
    source,
    task: str = "ctc",
    *,
    split: Optional[str] = None,
    labels: Optional[Iterable[str]] = None,
    min_samples: int = 1,
    max_seconds: Optional[float] = None,
    sampling_rate: int = 16000,
    audio_column: str = "audio",
    text_column: str = "text",
    label_column: str = "label",
    workers: Optional[int] = None,
) -> Dataset:
    """Read DATA (a manifest file or a ``datasets`` directory) for ``task``; see the module docstring.

    ``labels``: the known labels (classification); rows with another label are bad rows. ``min_samples``:
    the fewest samples at ``sampling_rate`` the model can take (``wav2vec2.spec.lengths.min_input_length``).
    Each audio file is decoded once to check it, by ``workers`` threads (default: one per CPU).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    source = os.fspath(source)
    columns = _Columns(audio_column, text_column, label_column)
    known_labels = None if labels is None else set(labels)
    examples, bad = [], []

    def check(where, row, audio_path, read, reader=None):
        """An Example, or the reason (a string) the row is bad."""
        text = label = None
        if task == "ctc":
            text = row.get(columns.text)
            if text is None:
                return f"missing column {columns.text!r}"
            if not isinstance(text, str):
                return f"column {columns.text!r} must be text, got {type(text).__name__}"
            if not normalize_text(text):
                return f"empty text ({text!r} after normalisation)" if text.strip() else "empty text"
        elif task == "sequence-classification":
            label = row.get(columns.label)
            if label is None or label == "":
                return f"missing column {columns.label!r}"
            label = str(label)
            if known_labels is not None and label not in known_labels:
                return f"unknown label {label!r} (known: {', '.join(sorted(known_labels))})"
        try:
            seconds = _check_audio(read)
        except AudioError as e:
            return f"unreadable audio: {e}"
        samples = math.floor(seconds * sampling_rate)
        if samples < min_samples:
            needed = f"{min_samples} samples ({min_samples / sampling_rate:.3f} s)"
            return f"too short: {seconds:.3f} s, the model needs at least {needed}"
        if max_seconds is not None and seconds > max_seconds:
            return f"too long: {seconds:.1f} s, more than max_seconds={max_seconds}"
        return Example(where=where, seconds=seconds, text=text, label=label, path=audio_path, _read=reader)

    if os.path.isdir(source):
        rows = _dataset_examples(source, split, task, columns, check, sampling_rate)
    elif os.path.isfile(source):
        if os.path.splitext(source)[1].lower() not in MANIFEST_SUFFIXES:
            raise DataError(
                f"{source}: unknown manifest type; use .jsonl, .csv or .tsv, or a directory saved with datasets"
            )
        if split is not None:
            raise DataError(f"{source}: split= applies to datasets directories only")
        rows = _manifest_examples(source, task, columns, check, sampling_rate)
    else:
        raise DataError(f"{source}: no such file or directory")
    def resolve(item):
        where, result = item
        return where, result() if callable(result) else result

    try:
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            # A few hundred rows at a time: rows holding audio bytes are not all kept in memory.
            for chunk in iter(lambda: list(itertools.islice(rows, 256)), []):
                for where, result in pool.map(resolve, chunk):
                    if isinstance(result, Example):
                        examples.append(result)
                    else:
                        bad.append(BadRow(where, result))
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return Dataset(source, examples, bad)
