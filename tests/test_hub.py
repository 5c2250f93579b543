"""Hub resolution from a cache directory built by hand: nothing is downloaded."""
import hashlib
import json
import os

import numpy as np
import pytest

from wav2vec2 import Wav2Vec2Config
from wav2vec2.io import read_state_dict, resolve_file, write_state_dict

pytest.importorskip("huggingface_hub")

REPO = "org/tiny-wav2vec2"
MAIN_COMMIT = "a" * 40
TAGGED_COMMIT = "b" * 40


def add_snapshot(cache, commit, files, ref=None):
    """Lay out files the way huggingface_hub caches them: blobs by hash, snapshot symlinks, refs."""
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snapshot / name).parent), snapshot / name)
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)


def weight_files(tmp_path, state, name):
    directory = tmp_path / name
    write_state_dict(state, directory)
    return {"model.safetensors": (directory / "model.safetensors").read_bytes()}


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def cache(tmp_path):
    main_state = {"encoder.layer_norm.weight": np.arange(4, dtype=np.float32)}
    tagged_state = {"encoder.layer_norm.weight": -np.arange(4, dtype=np.float32)}
    config = json.dumps(Wav2Vec2Config(hidden_size=8, num_attention_heads=2, num_conv_pos_embedding_groups=2).to_dict())
    cache = tmp_path / "cache"
    add_snapshot(cache, MAIN_COMMIT, {**weight_files(tmp_path, main_state, "main"), "config.json": config.encode()}, "main")
    add_snapshot(cache, TAGGED_COMMIT, weight_files(tmp_path, tagged_state, "tagged"), "v1")
    return cache


def test_reads_main_and_named_revision_offline(cache, offline):
    main = read_state_dict(REPO, cache_dir=cache)
    np.testing.assert_array_equal(main["encoder.layer_norm.weight"], np.arange(4, dtype=np.float32))
    tagged = read_state_dict(REPO, cache_dir=cache, revision="v1")
    np.testing.assert_array_equal(tagged["encoder.layer_norm.weight"], -np.arange(4, dtype=np.float32))
    by_commit = read_state_dict(REPO, cache_dir=cache, revision=TAGGED_COMMIT)
    np.testing.assert_array_equal(by_commit["encoder.layer_norm.weight"], tagged["encoder.layer_norm.weight"])


def test_local_files_only_without_offline_env(cache):
    state = read_state_dict(REPO, cache_dir=cache, local_files_only=True)
    assert list(state) == ["encoder.layer_norm.weight"]
    path = resolve_file(REPO, "config.json", cache_dir=cache, local_files_only=True)
    assert Wav2Vec2Config.from_json_file(path).hidden_size == 8


def test_missing_file_in_cache(cache, offline):
    assert resolve_file(REPO, "vocab.json", cache_dir=cache, required=False) is None
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        resolve_file(REPO, "vocab.json", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_state_dict("org/not-cached", cache_dir=cache)


def test_local_directory_and_bad_path(tmp_path):
    write_state_dict({"a.weight": np.ones(2, np.float32)}, tmp_path)
    assert resolve_file(tmp_path, "model.safetensors") == tmp_path / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_file(str(tmp_path / "nope" / "deeper"), "model.safetensors")


@pytest.mark.parametrize("path", ["./missing-dir", "/no/such/dir", "a/b/c"])
def test_a_missing_path_is_not_taken_for_a_repo_id(path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_file(path, "config.json")
