"""Transcribe audio with a CTC checkpoint: ``transcribe()`` for scripts and ``wav2vec2 transcribe``.

One module per job, each step done once:

- ``model``: the checkpoint (config.json read once) with one backend and precision -> ``CTCModel``
- ``inputs``: naming and probing inputs (each header read once), reading, normalising with the
  feature extractor, the chunk plan on the model's frame grid, streaming long files
- ``batching``: chunks padded by the feature extractor, through the model, cut to their frames
- ``decoding``: greedy CTC (``spec.ctc``) or KenLM beam search -> records with word times
- ``pipeline``: the loop in bounded memory (``Transcriber``, ``transcribe``, ``transcribe_iter``)
- ``formats``: txt, json, srt, vtt
- ``results``, ``corpus``, ``ray_data``: corpus runs into a resumable JSON-lines file, here or on Ray
- ``cli``: ``wav2vec2 transcribe``

A record is ``{"file": name, "text": str, "words": [{"word": str, "start": s, "end": s}, ...]}``;
an input that cannot be used gives ``{"file": name, "error": message}`` instead.
"""
from .corpus import list_audio_files, read_manifest, transcribe_to_file
from .formats import FORMATS, format_record, format_srt, format_vtt, subtitle_cues
from .inputs import Chunk, ChunkPlan, chunk_bounds
from .model import BACKENDS, PRECISIONS, CTCModel, load_ctc_model
from .pipeline import Transcriber, transcribe, transcribe_iter
from .results import ResultsFile, ResultsFileError, Summary

__all__ = [
    "BACKENDS", "FORMATS", "PRECISIONS", "CTCModel", "Chunk", "ChunkPlan", "ResultsFile", "ResultsFileError",
    "Summary", "Transcriber", "chunk_bounds", "format_record", "format_srt", "format_vtt", "list_audio_files",
    "load_ctc_model", "read_manifest", "subtitle_cues", "transcribe", "transcribe_iter", "transcribe_to_file",
]
