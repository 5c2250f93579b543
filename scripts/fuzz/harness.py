"""What the atheris harnesses share: how one input is run through a reader and judged.

A reader may return, or raise ValueError/FileNotFoundError naming the file; anything else (another
exception, a hang past ``--timeout``, a crash) is a finding that libFuzzer reports with the input.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # wav2vec2, and tests/fuzz's builders and checks

_SCRATCH = Path(tempfile.mkdtemp(prefix="wav2vec2-fuzz-"))


def scratch(name: str) -> Path:
    return _SCRATCH / name


def judge(read, path: Path, check=None):
    """Run ``read(path)``; refusals must name the file; ``check(result)`` runs on what it returns."""
    try:
        result = read(path)
    except (ValueError, FileNotFoundError) as e:
        if str(path) not in str(e):
            raise AssertionError(f"the error does not name the file: {e}") from None
        return None
    if check is not None:
        check(result)
    return result


def run(test_one_input, seeds):
    """Start libFuzzer on ``test_one_input``; the seeds go to a corpus directory unless the command
    line names one. (Import the reader under ``atheris.instrument_imports`` first, so its coverage
    guides the search.)"""
    import atheris

    args = list(sys.argv)
    corpora = [a for a in args[1:] if not a.startswith("-")]
    if not corpora:
        corpora = [str(_SCRATCH / "corpus")]
        args.append(corpora[0])
    corpus = Path(corpora[0])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):  # an empty corpus starts from the seeds
        for i, seed in enumerate(seeds()):
            (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
