"""Convert a whole checkpoint directory to any framework's files: X -> canonical -> Y.

``wav2vec2 convert SRC DST --to {safetensors,pytorch,tensorflow,flax}``. SRC is a directory or hub
repo id holding one of the four weight files, or a fairseq ``.pt`` checkpoint (with ``--dict`` for
its vocabulary). Besides config and weights, DST gets every other file SRC holds: MMS adapters
(converted to the same format), processor and tokenizer files, ``language_model/``, the README and
anything else; weight files of other formats are not copied, since the converted ones replace them.

DST is built in a staging directory beside it and swapped in with one rename
(``wav2vec2.io.staging``), so at every instant DST is the old directory or the new one, whole.
Nothing here imports a framework.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .config import CONFIG_NAME, Wav2Vec2Config
from .io import match_state_dict, read_state_dict, write_adapter, write_state_dict
from .io.checkpoint import ADAPTER_FILES, WEIGHT_FILES, parse_size
from .io.checkpoint import FORMATS as WEIGHT_FILE_OF_FORMAT
from .io.staging import check_destination, recover_interrupted, staged_directory
from .spec.names import OPTIONAL_BODY_KEYS, adapter_shapes, canonical_shapes

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "pytorch", "tensorflow", "flax")

# Files of SRC that conversion writes anew instead of copying: the config, every format's weights
# (single files, indices, shards) and the adapters. Glob patterns, for local files and hub snapshots.
_SHARD = "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"
_WEIGHT_GLOBS = (
    *WEIGHT_FILES,
    *(f"{stem}{_SHARD}{ext}" for stem, ext in map(os.path.splitext, WEIGHT_FILE_OF_FORMAT.values())),
)
_ADAPTER_GLOBS = tuple(pattern.format("*") for pattern in ADAPTER_FILES)
REWRITTEN_FILES = (CONFIG_NAME, *_WEIGHT_GLOBS, *_ADAPTER_GLOBS)
# Directories of a local SRC that are not part of the checkpoint: version control, download caches.
_NOT_CARRIED_DIRS = (".git", ".hg", ".svn", ".cache")
_ADAPTER_NAME = re.compile(r"adapter\.(.+)\.(safetensors|bin|h5|msgpack)")


@dataclass
class Source:
    """A checkpoint read and checked, ready to be written: nothing on disk has been touched yet."""

    name: str  # how errors and messages name it
    config: Wav2Vec2Config
    state: Dict[str, object]
    adapters: Dict[str, Dict[str, object]] = field(default_factory=dict)  # language -> adapter weights
    carried_dir: Optional[Path] = None  # directory whose other files are copied over
    savers: List[Callable[[Path], object]] = field(default_factory=list)  # write files built in memory


def convert(
    src, dst, to: str = "safetensors", *, overwrite: bool = False, max_shard_size=None, dict_path=None, **hub_kwargs
) -> Path:
    """Write SRC's config, weights (in format ``to``), adapters and other files to the directory DST.

    ``dict_path``: a fairseq ``dict.ltr.txt`` for a fine-tuned fairseq SRC, from which the tokenizer
    files are written. With ``overwrite``, an existing DST is replaced whole; SRC (or the dictionary)
    inside DST, or DST inside SRC, is refused before anything is read or written. ``hub_kwargs`` go
    to ``wav2vec2.io.hub.resolve_file``. Returns DST.
    """
    source = _prepare(src, dst, to, overwrite, max_shard_size, dict_path, hub_kwargs)
    return _write_converted(source, dst, to, max_shard_size=max_shard_size)


def _prepare(src, dst, to, overwrite, max_shard_size, dict_path, hub_kwargs) -> Source:
    """Everything before the first write: the options, the paths, and the whole source read and checked."""
    if to not in FORMATS:
        raise ValueError(f"--to must be one of {FORMATS}, got {to!r}")
    if max_shard_size is not None:
        parse_size(max_shard_size)
    recover_interrupted(dst)
    check_destination(dst, overwrite, inputs=[src] + ([dict_path] if dict_path is not None else []))
    return _read_source(src, dict_path=dict_path, **hub_kwargs)


# ------------------------------------------------------------------------------------ reading
def _read_source(src, dict_path=None, **hub_kwargs) -> Source:
    """Read and check everything a conversion of SRC writes: config, weights, adapters."""
    src_str = os.fspath(src)
    if os.path.isfile(src_str) and src_str.endswith((".pt", ".pth")):
        config, state, feature_extractor, tokenizer = from_fairseq(src_str, dict_path)
        savers = [feature_extractor.save_pretrained]
        if tokenizer is not None:
            savers.append(tokenizer.save_pretrained)
        elif "lm_head.weight" in state:
            logger.warning(
                "%s is a fine-tuned checkpoint but no dictionary was given, so no tokenizer files are "
                "written; pass --dict dict.ltr.txt (dict_path=) to make the directory transcribe", src_str,
            )
        source = Source(src_str, config, state, savers=savers)
    else:
        if dict_path is not None:
            raise ValueError(
                f"{src_str}: --dict is for fairseq .pt checkpoints; this checkpoint has its own vocabulary"
            )
        config = Wav2Vec2Config.from_pretrained(src_str, **hub_kwargs)
        state = read_state_dict(src_str, **hub_kwargs)
        carried_dir = _checkpoint_directory(src_str, hub_kwargs)
        source = Source(src_str, config, state, adapters=_read_adapters(carried_dir, config), carried_dir=carried_dir)
    _check_weights(source)
    return source


def _check_weights(source: Source) -> None:
    """Refuse weights that do not fit the config, naming the keys."""
    head = infer_head(source.state)
    report = match_state_dict(source.state, canonical_shapes(source.config, head))
    if report.missing:
        raise ValueError(f"{source.name}: weights missing for a {head!r} checkpoint: {sorted(report.missing)}")
    strays = [k for k in report.discarded if k.removeprefix("wav2vec2.") not in OPTIONAL_BODY_KEYS]
    if strays:
        raise ValueError(f"{source.name}: keys that do not belong to a {head!r} checkpoint: {sorted(strays)}")


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


def _checkpoint_directory(src: str, hub_kwargs) -> Path:
    """The local directory holding SRC's files: SRC itself, or a snapshot of the hub repo without its weights."""
    subfolder = hub_kwargs.get("subfolder") or ""
    if os.path.isdir(src):
        return Path(src, subfolder)
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    snapshot = snapshot_download(
        src,
        revision=hub_kwargs.get("revision"),
        cache_dir=hub_kwargs.get("cache_dir"),
        local_files_only=hub_kwargs.get("local_files_only", False),
        token=hub_kwargs.get("token"),
        allow_patterns=[f"{prefix}*"] if prefix else None,
        ignore_patterns=[prefix + p for p in _WEIGHT_GLOBS],  # read already; adapters are read from the snapshot
    )
    return Path(snapshot, subfolder)


def _read_adapters(directory: Path, config: Wav2Vec2Config) -> Dict[str, Dict[str, object]]:
    """Every MMS adapter file in ``directory``, one per language (the first format of ADAPTER_FILES wins)."""
    from .io import read_adapter

    languages = sorted({m.group(1) for p in directory.iterdir() if (m := _ADAPTER_NAME.fullmatch(p.name))})
    if languages and config.adapter_attn_dim is None:
        raise ValueError(
            f"{directory}: holds adapter files ({', '.join(languages)}) but config.adapter_attn_dim is not set"
        )
    expected = adapter_shapes(config) if languages else {}
    adapters = {}
    for lang in languages:
        state = read_adapter(directory, lang)
        where = f"{directory}: adapter {lang!r}"
        if set(state) != set(expected):
            raise ValueError(
                f"{where}: keys do not fit the config: missing {sorted(set(expected) - set(state))[:5]}, "
                f"unknown {sorted(set(state) - set(expected))[:5]}"
            )
        vocab_size = state["lm_head.weight"].shape[0]  # a language brings its own vocabulary
        for key, shape in expected.items():
            shape = (vocab_size, *shape[1:]) if key.startswith("lm_head.") else tuple(shape)
            if tuple(state[key].shape) != shape:
                raise ValueError(f"{where}: {key} has shape {tuple(state[key].shape)}, expected {shape}")
        adapters[lang] = state
    return adapters


# ------------------------------------------------------------------------------------ fairseq
def from_fairseq(pt_path, dict_path=None):
    """(config, canonical state, feature extractor, tokenizer or None) of a fairseq wav2vec2 ``.pt``.

    The feature extractor normalises waveforms when the checkpoint's cfg says fairseq did
    (``normalize``) and returns an attention mask for layer-norm models only. ``dict_path`` (the
    fine-tuning run's ``dict.ltr.txt``) gives the tokenizer: fairseq's ids, with its blank (id 0)
    named ``<pad>``, which is the blank here, and ``|`` the word delimiter.
    """
    from .feature_extraction import Wav2Vec2FeatureExtractor
    from .io import fairseq, torch_pickle
    from .tokenization import Wav2Vec2CTCTokenizer

    checkpoint = torch_pickle.load(pt_path, allow_config_objects=True)
    config, state = fairseq.from_checkpoint(checkpoint, pt_path)
    feature_extractor = Wav2Vec2FeatureExtractor(
        do_normalize=fairseq.read_normalize(checkpoint, pt_path),
        return_attention_mask=config.feat_extract_norm == "layer",
    )
    if dict_path is None:
        return config, state, feature_extractor, None
    if "lm_head.weight" not in state:
        raise ValueError(f"{pt_path}: a dictionary is for fine-tuned checkpoints; this one has no CTC head")
    symbols = fairseq.read_dictionary(dict_path)
    if len(symbols) != config.vocab_size:
        raise ValueError(
            f"{dict_path}: {len(symbols)} symbols (with fairseq's {', '.join(fairseq.DICTIONARY_SPECIALS)}) but "
            f"the CTC head of {pt_path} has {config.vocab_size} outputs"
        )
    vocab = fairseq.ctc_vocabulary(symbols)
    tokenizer = Wav2Vec2CTCTokenizer(
        vocab, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|",
    )
    config = config.replace(pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    return config, state, feature_extractor, tokenizer


# ------------------------------------------------------------------------------------ writing
def _write_converted(source: Source, dst, to: str, max_shard_size=None) -> Path:
    """Write ``source`` as format ``to`` into a staging directory beside DST, then swap it in."""
    with staged_directory(dst) as staging:
        if source.carried_dir is not None:
            _copy_carried_files(source.carried_dir, staging)
        source.config.save_pretrained(staging)
        write_state_dict(source.state, staging, format=to, max_shard_size=max_shard_size)
        for lang, adapter in source.adapters.items():
            write_adapter(adapter, staging, lang, format=to)
        for save in source.savers:
            save(staging)
    return Path(dst)


def _copy_carried_files(directory: Path, staging: Path) -> None:
    """Copy every file of ``directory`` that conversion does not write anew (links are followed)."""
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            if entry.name not in _NOT_CARRIED_DIRS:
                shutil.copytree(entry, staging / entry.name)
        elif not any(fnmatch.fnmatchcase(entry.name, p) for p in REWRITTEN_FILES):
            if not entry.exists():
                raise FileNotFoundError(f"{entry}: a broken link; the checkpoint directory is incomplete")
            shutil.copyfile(entry, staging / entry.name)


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("src", help="directory or hub repo id with a checkpoint, or a fairseq .pt file")
    parser.add_argument("dst", help="output directory (must be empty or absent unless --overwrite)")
    parser.add_argument("--to", choices=FORMATS, default="safetensors", help="target format")
    parser.add_argument("--dict", dest="dict_path", default=None,
                        help="fairseq dictionary (dict.ltr.txt) of a fine-tuned .pt: writes the tokenizer files")
    parser.add_argument("--overwrite", action="store_true", help="replace DST (whole, in one step) if it exists")
    parser.add_argument("--max-shard-size", default=None, help='split the weights, e.g. "2GB"')
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def run(args) -> int:
    from .cli import InputError, UsageError

    try:  # a bad option or a SRC that is not a usable checkpoint: nothing has been written
        source = _prepare(args.src, args.dst, args.to, args.overwrite, args.max_shard_size, args.dict_path,
                          dict(revision=args.revision))
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    try:
        _write_converted(source, args.dst, args.to, max_shard_size=args.max_shard_size)
    except OSError as e:  # the disk: full, read-only, permissions
        raise InputError(f"cannot write {args.dst}: {e}") from None
    except ValueError as e:  # weights the target format cannot hold
        raise UsageError(str(e)) from None
    print(f"wrote {args.dst} ({args.to})")
    return 0
