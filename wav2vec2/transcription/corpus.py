"""Corpus runs: files listed from a directory or a manifest, transcribed into a resumable results file.

``transcribe_to_file`` writes every record through one ``ResultsFile`` whether the work runs in
this process or on a Ray cluster (``ray=``, see ``ray_data.py``; Ray is imported only then).
"""
from __future__ import annotations

import collections
import functools
import json
import os
from typing import Callable, Iterable, List, Optional, Union

from .model import CTCModel
from .pipeline import Transcriber, make_transcriber
from .results import ResultsFile, Summary, file_sha256

# What libsndfile reads (mp3 from libsndfile 1.1); --input-dir picks files by these endings.
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64",
    ".rf64", ".sph", ".nist", ".voc",
)


def list_audio_files(directory) -> List[str]:
    """Audio files under ``directory`` (recursively, symlinked directories not followed), sorted."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory")
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        found += [os.path.join(root, name) for name in sorted(files) if name.lower().endswith(AUDIO_EXTENSIONS)]
    return found


def read_manifest(path) -> List[str]:
    """The audio paths a manifest lists: one path a line, or JSON lines with "audio_filepath" (NeMo
    manifests) or "file" (a results file). Blank lines and lines starting with # are skipped;
    relative paths are relative to the manifest's directory."""
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the manifest ({e})") from None
    files = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON ({e})") from None
            line = entry.get("audio_filepath", entry.get("file"))
            if not isinstance(line, str) or not line:
                raise ValueError(f"{path}: line {number} has no \"audio_filepath\" or \"file\" string")
        files.append(os.path.join(base, os.path.expanduser(line)))
    return files


def unique_files(files: Iterable) -> List[str]:
    """Paths in order, each file once (two spellings of one path count as one)."""
    seen, unique = set(), []
    for path in map(os.fspath, files):
        if os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            unique.append(path)
    return unique


def write_results(transcriber: Transcriber, files: List[str], results: ResultsFile, summary: Summary) -> None:
    """Transcribe in this process the files not yet in ``results``, appending a line for each."""
    digests = collections.deque()  # of the files handed to the transcriber, whose records come in order

    def remaining():
        for path in files:
            digest = file_sha256(path)
            if results.is_done(path, digest):
                summary.skipped += 1
                continue
            digests.append(digest)
            yield path

    start = transcriber.audio_seconds
    for record in transcriber(remaining()):
        results.append({**record, "sha256": digests.popleft()})
        summary.count(record)
    summary.audio_seconds += transcriber.audio_seconds - start


def make_runner(
    model: Union[str, CTCModel],
    ray: Union[bool, str] = False,
    actors: Optional[int] = None,
    gpus_per_actor: Optional[float] = None,
    cpus_per_actor: Optional[float] = None,
    progress: Optional[bool] = False,
    **options,
) -> Callable[[List[str], ResultsFile, Summary], None]:
    """``run(files, results, summary)`` for ``transcribe_to_file``'s arguments, with the model (or,
    for Ray, its processor) loaded and every option checked: errors here are the options' or the model's."""
    pool = dict(actors=actors, gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor)
    if ray is False:
        given = [name for name, value in pool.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: for Ray runs only (ray=True or a cluster address)")
        return functools.partial(write_results, make_transcriber(model, progress=progress, **options))
    from .ray_data import RayTranscription

    if isinstance(model, CTCModel):
        raise ValueError("Ray actors load the model themselves: pass a checkpoint directory or hub id, not a CTCModel")
    defaults = dict(actors=1, gpus_per_actor=0, cpus_per_actor=1)
    pool = {name: defaults[name] if value is None else value for name, value in pool.items()}
    return RayTranscription(model, None if ray is True else ray, progress=progress, options=options, **pool).run


def transcribe_to_file(files: Iterable, output, model: Union[str, CTCModel], ray: Union[bool, str] = False, **options) -> Summary:
    """Transcribe audio files into the JSON-lines results file ``output``, resuming a previous run.

    Files already in ``output`` with the same content are skipped; the others get one line each
    (a bad file an error record), so a rerun after a crash or a kill completes the rest.
    ray: False runs in this process; True on Ray (the cluster of ``RAY_ADDRESS``, or a local one
    started for the run); a string is a cluster address ("auto", "ray://host:10001").
    actors, gpus_per_actor, cpus_per_actor: the Ray actor pool (default 1 actor, 0 GPUs and 1 CPU
        each); each actor loads the model once.
    Other options are ``transcribe``'s (backend, device, precision, batch_size, chunk_length_s, ...).
    Returns the run's Summary.
    """
    run = make_runner(model, ray, **options)
    with ResultsFile(output) as results:
        summary = Summary()
        run(unique_files(files), results, summary)
        return summary.finish()
