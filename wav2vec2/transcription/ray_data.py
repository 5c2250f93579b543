"""Corpus transcription on Ray Data: the only module that imports ``ray`` (``pip install wav2vec2[ray]``).

The driver lists the files and owns the results file; the cluster does the rest:

    files -> Ray Data blocks -> read (hash, skip if done, read + resample + normalise)
          -> an actor pool (each actor loads the model once; chunks, batches, decodes)
          -> records streamed back to the driver, appended to the results file one whole line each

Each file is read whole in a worker with ``inputs.read_normalised``, which for a file the
single-machine path would stream gives the very samples and statistics streaming gives, and each
actor cuts it with the same chunk plan: the records are those of single-machine transcription.
A file is held whole in one worker's memory (about 230 MB per hour of 16 kHz audio).
Ray Data fuses the read into the actor stage when it can. Paths must mean the same file on every
node (a shared filesystem); the driver hands workers absolute paths.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys

import numpy as np

from ..audio import AudioError
from .inputs import ChunkPlan, probe, read_normalised
from .model import BACKENDS, PRECISIONS, CTCModel, load_processor
from .pipeline import check_batch_size, make_transcriber
from .results import file_sha256, result_key

# Blocks are about batch_size files each, up to this many blocks (bigger corpora get bigger blocks).
_MAX_BLOCKS = 10_000
# How long every actor of the pool may take to start and load the model (a hub download included).
_ACTOR_START_TIMEOUT_S = 600


def _read_row(row: dict, processor: CTCModel, plan: ChunkPlan, done: frozenset) -> dict:
    """A file's row: its digest, and either its normalised samples, an error, or 'skipped'.

    Columns hold no None ("" for no digest, no error): a column of nulls reaches the actor as NaN.
    """
    digest = file_sha256(row["path"])
    out = {"file": row["file"], "sha256": digest or "", "error": "", "skipped": False, "values": np.zeros(0, np.float32)}
    if result_key(row["path"], digest) in done:
        out["skipped"] = True
        return out
    source = probe(0, row["path"], processor.sampling_rate)
    source.name = row["file"]  # records name files as they were given
    try:
        out["values"] = read_normalised(processor, plan, source)
    except AudioError as e:
        out["error"] = str(e).replace(row["path"], row["file"])
    return out


class ModelLoadError(ValueError):
    """The Ray actors could not load the model (its weights, the backend, the device on the workers)."""


class _TranscribeActor:
    """One actor of the pool: loads the model once, then transcribes batches of rows.

    A model it cannot load is reported in its rows (status "model error"), for the driver to stop
    with that one message rather than with Ray's remote traceback.
    """

    def __init__(self, model: str, options: dict):
        import ray

        self.actor_id = ray.get_runtime_context().get_actor_id()
        self.transcriber, self.load_error = None, None
        try:
            self.transcriber = make_transcriber(model, **options)
        except (ValueError, OSError, ImportError) as e:
            self.load_error = str(e)

    def __call__(self, batch: dict) -> dict:
        if self.load_error is not None:
            size = len(batch["file"])
            return {"file": batch["file"], "status": np.asarray(["model error"] * size),
                    "record": np.asarray([self.load_error] * size), "seconds": np.zeros(size),
                    "actor": np.asarray([self.actor_id] * size)}
        rate = self.transcriber.ctc.sampling_rate
        files, digests = [str(f) for f in batch["file"]], [str(d) or None for d in batch["sha256"]]
        todo = [i for i in range(len(files)) if not batch["skipped"][i] and not batch["error"][i]]
        records = dict(zip(todo, self.transcriber.transcribe_normalised([(files[i], batch["values"][i]) for i in todo])))
        rows = []  # (status, record as JSON, seconds of audio)
        for i, name in enumerate(files):
            if batch["skipped"][i]:
                rows.append(("skipped", "", 0.0))
                continue
            record = records.get(i) or {"file": name, "error": str(batch["error"][i])}
            line = json.dumps({**record, "sha256": digests[i]}, ensure_ascii=False)
            rows.append(("failed" if "error" in record else "done", line, batch["values"][i].size / rate))
        status, lines, seconds = zip(*rows)
        return {"file": np.asarray(files), "status": np.asarray(status), "record": np.asarray(lines),
                "seconds": np.asarray(seconds), "actor": np.asarray([self.actor_id] * len(files))}


def _check_pool(actors, gpus_per_actor, cpus_per_actor) -> None:
    if not isinstance(actors, numbers.Integral) or isinstance(actors, bool) or actors < 1:
        raise ValueError(f"actors must be a positive integer, got {actors!r}")
    for name, value, smallest in (("gpus_per_actor", gpus_per_actor, 0), ("cpus_per_actor", cpus_per_actor, 1e-9)):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < smallest:
            raise ValueError(f"{name} must be a finite number {'>= 0' if smallest == 0 else '> 0'}, got {value!r}")


def _root_cause(error: Exception) -> str:
    """The worker's own exception behind a Ray error, in one line, not the whole remote traceback."""
    cause = getattr(error, "cause", None)  # RayTaskError: what the task raised, itself wrapping the UDF's error
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is not None and not type(cause).__module__.startswith("ray"):
        return f"{type(cause).__name__}: {cause}"
    # The remote traceback as text: its first "SomeError: message" line that is not Ray's own.
    for line in str(error).splitlines():
        match = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)", line)
        if match and not match.group(1).startswith("ray."):
            return f"{match.group(1)}: {match.group(2)}"
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class RayTranscription:
    """A corpus run on Ray: checked and ready on construction, ``run(files, results, summary)`` runs it.

    address: a cluster ("auto", "ray://host:10001"), or None for RAY_ADDRESS or a local Ray started
    for the run (and shut down after it). A Ray already initialised in this process is used as it is.
    """

    def __init__(self, model: str, address, actors=1, gpus_per_actor=0, cpus_per_actor=1, progress=False, options=None):
        _check_pool(actors, gpus_per_actor, cpus_per_actor)
        options = dict(options or {})
        if options.get("backend", "torch") not in BACKENDS:
            raise ValueError(f"unknown backend {options['backend']!r}; expected one of {BACKENDS}")
        if options.get("precision", "fp32") not in PRECISIONS:
            raise ValueError(f"unknown precision {options['precision']!r}; expected one of {PRECISIONS}")
        self.batch_size = check_batch_size(options.get("batch_size", 8))
        # The driver reads the model's processor only (no weights), to read files as the actors cut them.
        self.processor = CTCModel(*load_processor(model, options.get("dictionary")), forward=None)
        self.plan = ChunkPlan.from_seconds(self.processor, options.get("chunk_length_s", 20.0), options.get("stride_length_s"))
        if os.path.isdir(model):  # actors start elsewhere: local files go to them as absolute paths
            model = os.path.abspath(model)
        if options.get("lm") is not None:
            options["lm"] = os.path.abspath(options["lm"])
        self.model, self.address, self.options, self.progress = model, address, options, progress
        self.actors, self.gpus_per_actor, self.cpus_per_actor = actors, gpus_per_actor, cpus_per_actor

    def run(self, files, results, summary) -> None:
        """Append a record to ``results`` for each file not in it yet; count them in ``summary``."""
        import ray

        if not files:
            return
        started_here = not ray.is_initialized()
        if started_here:  # workers' logs stay in Ray's session logs: errors reach the driver as records
            ray.init(address=self.address, log_to_driver=False)
        try:
            for row in self._dataset(ray, files, results.done_keys()).iter_rows():
                if row["status"] == "model error":
                    raise ModelLoadError(f"the Ray actors cannot load the model: {row['record']}")
                if row["status"] == "skipped":
                    summary.skipped += 1
                    continue
                record = json.loads(row["record"])
                results.append(record)
                summary.count(record, float(row["seconds"]))
                summary.actors.add(row["actor"])
        except ray.exceptions.RayError as e:
            raise RuntimeError(f"the Ray job failed: {_root_cause(e)}") from None
        finally:
            if started_here:
                ray.shutdown()

    def _dataset(self, ray, files, done: frozenset):
        rows = [{"file": f, "path": os.path.abspath(f)} for f in files]
        blocks = max(1, min(_MAX_BLOCKS, math.ceil(len(rows) / self.batch_size)))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        dataset = dataset.map(_read_row, fn_kwargs=dict(processor=self.processor, plan=self.plan, done=done))
        dataset = dataset.map_batches(
            _TranscribeActor, fn_constructor_kwargs=dict(model=self.model, options=self.options),
            batch_size=self.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor,
        )
        # This dataset's own copy of Ray Data's settings (the process-wide one is left alone).
        dataset.context.enable_progress_bars = sys.stderr.isatty() if self.progress is None else bool(self.progress)
        # The whole pool loads the model before work is handed out (so it is shared from the start),
        # and a cluster that cannot place the pool says so instead of waiting for ever.
        dataset.context.wait_for_min_actors_s = _ACTOR_START_TIMEOUT_S
        return dataset
