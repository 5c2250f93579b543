"""``wav2vec2 transcribe``: audio files, a manifest or a directory -> text, JSON, subtitles or a results file.

Exit status (``wav2vec2.cli``): 2 for a bad option or model, before anything runs; 1 when a file
could not be transcribed (reported by name; the others are still transcribed) or the output cannot
be written; 0 otherwise. A summary line (files done / failed / skipped, audio per second) ends
every run on stderr.
"""
from __future__ import annotations

import os
import sys

from ..cli import InputError, UsageError, finite_float, non_negative_float, positive_float, positive_int
from .corpus import list_audio_files, make_runner, read_manifest, unique_files
from .formats import FORMATS, format_record
from .model import BACKENDS, PRECISIONS
from .pipeline import make_transcriber
from .ray_data import ModelLoadError
from .results import ResultsFile, ResultsFileError, Summary

PROG = "wav2vec2 transcribe"


def add_arguments(parser) -> None:
    parser.add_argument("audio", nargs="*", help="audio files (wav, flac, ogg, mp3; any rate and channel count)")
    parser.add_argument("--manifest", help="a file listing audio paths, one a line (or JSON lines with \"audio_filepath\")")
    parser.add_argument("--input-dir", help="transcribe every audio file under this directory")
    parser.add_argument("--model", required=True, help="CTC checkpoint directory or hub id, or a fairseq .pt (with --dict)")
    parser.add_argument("--dict", dest="dictionary", default=None,
                        help="the fairseq fine-tuning dictionary (dict.ltr.txt) of a --model .pt file")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (torch); /GPU:0 (tensorflow); gpu (flax)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): bf16 with the torch backend on a CPU with AMX, else fp32; bf16: bfloat16 "
                             "weights and compute; int8: dynamic int8 linear layers (torch, tensorflow)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="chunks per forward pass")
    parser.add_argument("--chunk-length-s", type=non_negative_float, default=20.0,
                        help="longer inputs run in chunks of this many seconds (0: never chunk)")
    parser.add_argument("--stride-length-s", type=non_negative_float, default=None,
                        help="context on each side of a chunk, dropped after inference (default: chunk / 6)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="what is printed (default txt)")
    parser.add_argument("--output", default=None,
                        help="append records as JSON lines to this results file instead of printing them; a rerun "
                             "skips the files already in it")
    ray = parser.add_argument_group("Ray (with --output)")
    ray.add_argument("--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
                     help="run on Ray: a cluster address (auto, ray://host:10001), else RAY_ADDRESS or a local Ray")
    ray.add_argument("--actors", type=positive_int, default=None, help="actors, each with the model loaded (default 1)")
    ray.add_argument("--gpus-per-actor", type=non_negative_float, default=None, help="default 0")
    ray.add_argument("--cpus-per-actor", type=positive_float, default=None, help="default 1")
    lm = parser.add_argument_group("beam search with a language model")
    lm.add_argument("--lm", default=None, help="KenLM model (.arpa or binary) for beam search decoding")
    lm.add_argument("--beam-width", type=positive_int, default=None)
    lm.add_argument("--alpha", type=finite_float, default=None, help="language model weight")
    lm.add_argument("--beta", type=finite_float, default=None, help="word insertion bonus")
    lm.add_argument("--hotwords", nargs="+", default=None, help="words to favour in beam search")
    lm.add_argument("--hotword-weight", type=finite_float, default=None)
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def _inputs(args) -> list:
    files = list(args.audio)
    try:
        for listed, lister in ((args.manifest, read_manifest), (args.input_dir, list_audio_files)):
            if listed is not None:
                found = lister(listed)
                if not found:
                    raise ValueError(f"{listed}: no audio files in it")
                files += found
    except ValueError as e:
        raise InputError(str(e)) from None
    if not files:
        raise UsageError("no audio: give audio files, --manifest FILE or --input-dir DIR")
    return files


def _checked_format(args) -> str:
    if args.output is None:
        if args.ray is not False:
            raise UsageError("--ray writes its records to a results file: give --output RESULTS.jsonl")
        return args.format or "txt"
    if args.format not in (None, "json"):
        raise UsageError(f"--output writes JSON lines; --format {args.format} is for the standard output only")
    return "json"


def _options_or_model(build, *args, **kwargs):
    """``build(...)``, with a bad option or model (the only errors before any input is read) as UsageError."""
    try:
        return build(*args, **kwargs)
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(str(e)) from None


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as e:  # a full disk, a closed pipe
        try:  # nothing more can go there: let the interpreter's final flush go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise InputError(f"cannot write to the standard output: {e.strerror or e}") from None


def _print_records(transcriber, files, fmt: str, summary: Summary) -> None:
    several_subtitles = fmt in ("srt", "vtt") and len(files) > 1
    start = transcriber.audio_seconds
    for record in transcriber(files):
        summary.count(record)
        if "error" in record:
            print(f"{PROG}: error: {record['error']}", file=sys.stderr)
            continue
        header = f"==> {record['file']} <==\n" if several_subtitles else ""  # say which cues are whose
        _write_stdout(header + format_record(record, fmt))
    summary.audio_seconds += transcriber.audio_seconds - start


def run(args) -> int:
    """Transcribe; print records (or append them to --output); end with a summary on stderr."""
    fmt = _checked_format(args)
    pool = dict(actors=args.actors, gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor)
    if args.ray is False and any(value is not None for value in pool.values()):
        raise UsageError("--actors, --gpus-per-actor and --cpus-per-actor need --ray")
    files = _inputs(args)
    options = dict(
        backend=args.backend, device=args.device, precision=args.precision, dictionary=args.dictionary,
        batch_size=args.batch_size,
        chunk_length_s=args.chunk_length_s, stride_length_s=args.stride_length_s,
        lm=args.lm, beam_width=args.beam_width, alpha=args.alpha, beta=args.beta,
        hotwords=args.hotwords, hotword_weight=args.hotword_weight,
    )
    progress = False if args.no_progress else None  # None: a bar only on a terminal
    if args.output is None:
        transcriber = _options_or_model(make_transcriber, args.model, progress=progress, **options)
        summary = Summary()  # the clock starts once the model is loaded
        _print_records(transcriber, files, fmt, summary)
    else:
        run_corpus = _options_or_model(make_runner, args.model, args.ray, progress=progress, **pool, **options)
        summary = Summary()
        try:
            with ResultsFile(args.output) as results:
                run_corpus(unique_files(files), results, summary)
        except ResultsFileError as e:
            raise InputError(str(e)) from None
        except ModelLoadError as e:  # found only once the Ray actors try it
            raise UsageError(str(e)) from None
    print(f"{PROG}: {summary.finish().line()}", file=sys.stderr)
    return 1 if summary.failed else 0
