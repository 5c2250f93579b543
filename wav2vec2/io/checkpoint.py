"""Read whichever weight file a checkpoint holds into the canonical layout, and write any of them back."""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Union

import numpy as np

from ..spec import names
from . import fairseq, flax_msgpack, keras_h5, safetensors_file, torch_pickle
from .hub import resolve_file

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
TF_NAME = "tf_model.h5"
FLAX_NAME = "flax_model.msgpack"
INDEX_SUFFIX = ".index.json"

# Looked for in this order; an index stands for its shards.
WEIGHT_FILES = (
    SAFETENSORS_NAME,
    SAFETENSORS_NAME + INDEX_SUFFIX,
    PYTORCH_NAME,
    PYTORCH_NAME + INDEX_SUFFIX,
    TF_NAME,
    TF_NAME + INDEX_SUFFIX,
    FLAX_NAME,
    FLAX_NAME + INDEX_SUFFIX,
)

logger = logging.getLogger(__name__)

FORMATS = {"safetensors": SAFETENSORS_NAME, "pytorch": PYTORCH_NAME, "tensorflow": TF_NAME, "flax": FLAX_NAME}


# ------------------------------------------------------------------------------------------ reading
def _read_single(path: Path) -> Dict[str, np.ndarray]:
    """One weight file, chosen by its name, as a canonical state dict."""
    name = path.name
    if name.endswith(".safetensors"):
        state = safetensors_file.read_safetensors(path)
    elif name.endswith((".bin", ".pt", ".pth")):
        # Only .pt/.pth may be fairseq checkpoints, whose config objects the strict reader refuses.
        obj = torch_pickle.load(path, allow_config_objects=not name.endswith(".bin"))
        if fairseq.is_fairseq_checkpoint(obj):
            return fairseq.from_checkpoint(obj, path)[1]
        state = torch_pickle.as_state_dict(obj, path)
    elif name.endswith(".h5"):
        return keras_h5.read_h5(path)
    elif name.endswith(".msgpack"):
        return flax_msgpack.read_msgpack(path)
    else:
        raise ValueError(f"{path}: unknown weight file type (expected .safetensors, .bin, .pt, .h5 or .msgpack)")
    return {names.normalize_key(k): v for k, v in state.items()}


# Shards of these formats hold framework names (TF variables, Flax tree paths), which only become
# canonical once every shard is in: a bare model is told by its whole key set.
_FOREIGN_SHARDS = {
    TF_NAME: (keras_h5.read_tf_weights, names.from_tf_weights),
    FLAX_NAME: (flax_msgpack.read_flat_weights, flax_msgpack.from_flat_weights),
}


_INDEX_LIMIT = 64 << 20  # bytes; real indices are a few hundred KB


def _inside(relative: str) -> bool:
    """Whether a "/"-separated relative path names a file below its directory, and nothing else."""
    parts = relative.split("/")
    return ":" not in parts[0] and all(
        part not in ("", ".", "..") and "\\" not in part and "\0" not in part and len(part.encode("utf-8", "replace")) <= 255
        for part in parts)  # 255: the longest file name file systems hold


def _weight_map(index_path: Path) -> Dict[str, str]:
    """The ``weight_map`` of a shard index: {weight name: shard file}, each shard a file of the index's
    own format named relative to the index's directory (subdirectories allowed, as the reference
    joins them to it; absolute paths and ".." are not)."""
    if os.path.getsize(index_path) > _INDEX_LIMIT:
        raise ValueError(f"{index_path}: a shard index of more than {_INDEX_LIMIT >> 20} MiB")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{index_path}: not a valid shard index ({type(e).__name__}: {e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        found = ("missing" if not isinstance(index, dict) or "weight_map" not in index
                 else "empty" if weight_map == {} else f"a {type(weight_map).__name__}")
        raise ValueError(f"{index_path}: the shard index's weight_map is {found}, not a mapping of weight "
                         f"names to shard files")
    extension = os.path.splitext(index_path.name.removesuffix(INDEX_SUFFIX))[1]
    if extension not in (".safetensors", ".bin", ".h5", ".msgpack"):
        raise ValueError(f"{index_path}: cannot tell the shards' format from the index's name")
    for name, shard in weight_map.items():
        if not (isinstance(shard, str) and shard.endswith(extension) and _inside(shard)):
            raise ValueError(f"{index_path}: weight {name!r} maps to {shard!r:.100}, not a {extension} file "
                             f"inside the checkpoint")
    return weight_map


def _read_index(index_path: Path, shard_path) -> Dict[str, np.ndarray]:
    """Read the shards listed in a ``*.index.json``; ``shard_path(filename)`` locates each shard."""
    weight_map = _weight_map(index_path)
    shards = list(dict.fromkeys(weight_map.values()))
    foreign = _FOREIGN_SHARDS.get(index_path.name.removesuffix(INDEX_SUFFIX))
    read_shard = foreign[0] if foreign else lambda shard_file: _read_single(Path(shard_file))
    weights = {}
    for shard in shards:
        found = read_shard(shard_path(shard))
        twice = sorted(set(found) & set(weights))
        if twice:
            raise ValueError(f"{index_path}: weights in more than one shard ({shard!r} and another): {twice[:5]}")
        weights.update(found)
    if foreign:
        missing = sorted(set(weight_map) - set(weights))
        state = foreign[1](weights)
    else:
        state = weights
        missing = sorted({names.normalize_key(k) for k in weight_map} - set(state))
    if missing:
        raise ValueError(f"{index_path}: the shards lack weights the index lists: {missing}")
    return state


def _shards_of(index_path: Path, locate):
    """``locate(shard)`` -> the shard's path, with a missing shard named by the index that lists it."""
    def shard_path(shard: str):
        try:
            path = locate(shard)
            found = Path(path).is_file()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{index_path}: shard {shard!r} listed in the index is missing ({e})") from None
        except OSError as e:  # a name the file system refuses
            raise ValueError(f"{index_path}: cannot look up shard {shard!r:.100} ({e.strerror})") from None
        if not found:
            raise FileNotFoundError(f"{index_path}: shard {shard!r} listed in the index is missing")
        return path

    return shard_path


def read_state_dict(path_or_repo_id, **hub_kwargs) -> Dict[str, np.ndarray]:
    """Canonical state dict of a checkpoint: a weight file, a directory, or a hub repo id.

    A directory or repo is searched for ``WEIGHT_FILES`` in order. ``hub_kwargs`` go to
    ``resolve_file`` (revision, cache_dir, local_files_only, token, subfolder).
    """
    path_or_repo_id = os.fspath(path_or_repo_id)
    if os.path.isfile(path_or_repo_id):
        path = Path(path_or_repo_id)
        if path.name.endswith(INDEX_SUFFIX):
            return _read_index(path, _shards_of(path, lambda shard: path.parent / shard))
        return _read_single(path)

    for filename in WEIGHT_FILES:
        found = resolve_file(path_or_repo_id, filename, required=False, **hub_kwargs)
        if found is None:
            continue
        if filename.endswith(INDEX_SUFFIX):
            locate = functools.partial(resolve_file, path_or_repo_id, **hub_kwargs)
            return _read_index(Path(found), _shards_of(Path(found), locate))
        return _read_single(Path(found))
    raise FileNotFoundError(f"{path_or_repo_id}: no weight file found; looked for {', '.join(WEIGHT_FILES)}")


# ------------------------------------------------------------------------------------------ writing
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: Union[int, str]) -> int:
    """Bytes in ``size``: an int, or a string such as "200MB" or "1GiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)\s*", str(size), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size: cannot read {size!r}; use bytes or a string like '200MB'")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def plan_shards(sizes: Dict[str, int], max_bytes: int):
    """Split names into consecutive groups of at most ``max_bytes`` (a bigger weight gets its own)."""
    shards, current, current_bytes = [], [], 0
    for name, size in sizes.items():
        if current and current_bytes + size > max_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def _shard_name(filename: str, index: int, count: int) -> str:
    stem, ext = os.path.splitext(filename)
    return f"{stem}-{index:05d}-of-{count:05d}{ext}"


def _write_files(state, tmp: Path, format: str, max_shard_size) -> list:
    """Write the weight files into ``tmp``; returns their names."""
    filename = FORMATS[format]
    writers = {
        "safetensors": safetensors_file.write_safetensors,
        "pytorch": torch_pickle.write_bin,
        "tensorflow": keras_h5.write_h5,
        "flax": flax_msgpack.write_msgpack,
    }
    if max_shard_size is None:
        writers[format](state, tmp / filename)
        return [filename]
    # The index maps each weight's name in the format's own naming to its shard file.
    if format == "tensorflow":
        entries = names.to_tf_weights(state)
        write_shard = keras_h5.write_h5_shard
    elif format == "flax":
        entries = flax_msgpack.to_flat_weights(state)
        write_shard = flax_msgpack.write_flat_shard
    else:
        entries = state
        write_shard = writers[format]
    sizes = {name: np.asarray(array).nbytes for name, array in entries.items()}
    groups = plan_shards(sizes, parse_size(max_shard_size))
    weight_map, written = {}, []
    for i, group in enumerate(groups, start=1):
        shard = _shard_name(filename, i, len(groups))
        write_shard({name: entries[name] for name in group}, tmp / shard)
        weight_map.update(dict.fromkeys(group, shard))
        written.append(shard)
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
    with open(tmp / (filename + INDEX_SUFFIX), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    return written + [filename + INDEX_SUFFIX]


def _stale_files(directory: Path, filename: str):
    """This format's weight files from an earlier save: the single file, its index and its shards."""
    stem, ext = os.path.splitext(filename)
    shard = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(ext))
    for path in directory.iterdir():
        if path.name in (filename, filename + INDEX_SUFFIX) or shard.fullmatch(path.name):
            yield path


def write_state_dict(state, directory, format: str = "safetensors", max_shard_size=None, *, files=None,
                     replace_other_formats: bool = False) -> list:
    """Write a canonical state dict into ``directory`` as one format's weight file(s).

    ``format``: "safetensors" (``model.safetensors``), "pytorch" (``pytorch_model.bin``), "tensorflow"
    (``tf_model.h5``) or "flax" (``flax_model.msgpack``). With ``max_shard_size`` (bytes or "200MB")
    the weights are split into shards plus an index json. ``files`` ({name: text}) are written with
    them (``config.json``). Everything is written to a temporary folder in ``directory`` and moved in
    at the end, so a failure leaves no half-written file behind; this format's files from an earlier
    save are replaced. With ``replace_other_formats`` the weight files of every other format (and
    their shards and indices) are removed afterwards, with a warning naming them, so that the
    directory holds exactly the weights just written. Returns the paths written.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {sorted(FORMATS)}")
    state = {names.normalize_key(k): np.asarray(v) for k, v in state.items()}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-weights-", dir=directory))
    try:
        written = _write_files(state, tmp, format, max_shard_size)
        for name, text in (files or {}).items():
            with open(tmp / name, "w", encoding="utf-8") as f:
                f.write(text)
        for name in written:
            _fsync(tmp / name)
        # Weights first, then the files that describe them (config.json), then the stale weights.
        for name in written + list(files or {}):
            os.replace(tmp / name, directory / name)
        stale_formats = FORMATS.values() if replace_other_formats else (FORMATS[format],)
        others = []
        for filename in stale_formats:
            for stale in _stale_files(directory, filename):
                if stale.name not in written:
                    stale.unlink()
                    if filename != FORMATS[format]:
                        others.append(stale.name)
        if others:
            logger.warning("%s: removed weight files of other formats so that only the %s weights just saved "
                           "remain: %s", directory, format, ", ".join(sorted(others)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [directory / name for name in written]


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------ MMS adapter files
# One file per language, in the format of the checkpoint beside it; looked for in this order. The
# reference only has the first two; the h5 and msgpack forms are what conversion to TF or Flax writes.
ADAPTER_FILES = ("adapter.{}.safetensors", "adapter.{}.bin", "adapter.{}.h5", "adapter.{}.msgpack")
ADAPTER_FORMATS = dict(zip(FORMATS, ADAPTER_FILES))


def read_adapter(path_or_repo_id, target_lang: str, **hub_kwargs) -> Dict[str, np.ndarray]:
    """The per-language adapter weights of an MMS checkpoint (``adapter.{target_lang}.safetensors``,
    ``.bin``, ``.h5`` or ``.msgpack``), canonical: ``wav2vec2.encoder.layers.N.adapter_layer.*`` and
    ``lm_head.*``."""
    for pattern in ADAPTER_FILES:
        found = resolve_file(path_or_repo_id, pattern.format(target_lang), required=False, **hub_kwargs)
        if found is not None:
            return _read_single(Path(found))
    looked_for = ", ".join(p.format(target_lang) for p in ADAPTER_FILES)
    raise FileNotFoundError(f"{path_or_repo_id}: no adapter for language {target_lang!r}; looked for {looked_for}")


def write_adapter(state, directory, target_lang: str, format: str = "safetensors") -> Path:
    """Write the adapter part of a canonical ``ctc`` state (attention adapters and ``lm_head``) as
    ``adapter.{target_lang}.<ext>`` in ``format`` (see ``FORMATS``), atomically."""
    if format not in ADAPTER_FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {sorted(ADAPTER_FORMATS)}")
    adapter = {k: np.asarray(v) for k, v in state.items() if ".adapter_layer." in k or k.startswith("lm_head.")}
    if not any(".adapter_layer." in k for k in adapter):
        raise ValueError("the state has no attention adapter weights (keys with '.adapter_layer.')")
    if "lm_head.weight" not in adapter:
        raise ValueError("an adapter brings its language's lm_head; the state has no lm_head.weight")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    filename = ADAPTER_FORMATS[format].format(target_lang)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-adapter-", dir=directory))
    try:
        (written,) = _write_files(adapter, tmp, format, max_shard_size=None)  # the format's one weight file
        os.replace(tmp / written, directory / filename)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory / filename
