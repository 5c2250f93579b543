"""Convert any checkpoint to any framework's file: X -> canonical -> Y.

``wav2vec2 convert SRC DST --to {safetensors,pytorch,tensorflow,flax}``. SRC is a directory or hub
repo id holding one of the four weight files, or a fairseq ``.pt`` checkpoint. Nothing here imports a
framework: every format is read and written with NumPy-level libraries.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .config import Wav2Vec2Config
from .io import match_state_dict, read_fairseq, read_state_dict, write_state_dict
from .spec.names import OPTIONAL_BODY_KEYS, canonical_shapes

FORMATS = ("safetensors", "pytorch", "tensorflow", "flax")

# Files beside the weights that describe preprocessing and the vocabulary; copied as they are.
SIDE_FILES = (
    "preprocessor_config.json",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def convert(src, dst, to: str = "safetensors", *, overwrite: bool = False, max_shard_size=None, **hub_kwargs) -> Path:
    """Write SRC's config, weights (in format ``to``) and preprocessing files to the directory DST.

    DST is filled in a temporary sibling directory and moved into place at the end, so a failure
    leaves no half-written DST behind. Returns DST.
    """
    if to not in FORMATS:
        raise ValueError(f"--to must be one of {FORMATS}, got {to!r}")
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise FileExistsError(f"{dst} exists and is not empty (pass overwrite=True / --overwrite to replace it)")

    src_str = os.fspath(src)
    if os.path.isfile(src_str) and src_str.endswith((".pt", ".pth")):
        config, state = read_fairseq(src_str)
        side_dir = None
    else:
        config = Wav2Vec2Config.from_pretrained(src_str, **hub_kwargs)
        state = read_state_dict(src_str, **hub_kwargs)
        side_dir = src_str

    # Refuse weights that do not fit the config before writing anything.
    head = infer_head(state)
    report = match_state_dict(state, canonical_shapes(config, head))
    if report.missing:
        raise ValueError(f"{src_str}: weights missing for a {head!r} checkpoint: {sorted(report.missing)}")
    strays = [k for k in report.discarded if k.removeprefix("wav2vec2.") not in OPTIONAL_BODY_KEYS]
    if strays:
        raise ValueError(f"{src_str}: keys that do not belong to a {head!r} checkpoint: {sorted(strays)}")

    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        config.save_pretrained(staging)
        write_state_dict(state, staging, format=to, max_shard_size=max_shard_size)
        if side_dir is not None:
            _copy_side_files(side_dir, staging, hub_kwargs)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dst


def infer_head(state) -> str:
    """Which head a canonical state dict belongs to, from the head-only keys it holds."""
    keys = set(state)
    if "quantizer.codevectors" in keys or "project_q.weight" in keys:
        return "pretraining"
    if "lm_head.weight" in keys:
        return "ctc"
    if "objective.weight" in keys or any(k.startswith("tdnn.") for k in keys):
        return "xvector"
    if "classifier.weight" in keys:
        return "sequence_classification" if "projector.weight" in keys else "audio_frame_classification"
    return "model"


def _copy_side_files(src, staging: Path, hub_kwargs) -> None:
    from .io.hub import resolve_file

    for name in SIDE_FILES:
        path = resolve_file(src, name, required=False, **hub_kwargs)
        if path is not None:
            shutil.copyfile(path, staging / name)


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("src", help="directory or hub repo id with a checkpoint, or a fairseq .pt file")
    parser.add_argument("dst", help="output directory (must be empty or absent unless --overwrite)")
    parser.add_argument("--to", choices=FORMATS, default="safetensors", help="target format")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.add_argument("--max-shard-size", default=None, help='split the weights, e.g. "2GB"')
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def run(args) -> int:
    import sys

    try:
        out = convert(
            args.src, args.dst, args.to, overwrite=args.overwrite, max_shard_size=args.max_shard_size,
            revision=args.revision,
        )
    except (OSError, ValueError) as e:
        print(f"wav2vec2 convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({args.to})")
    return 0
