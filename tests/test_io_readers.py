"""safetensors, tf_model.h5, flax_model.msgpack and shard indices from strangers: every reader checks
the file against its bytes and fails with a ValueError naming the file (and the key)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import wav2vec2
from wav2vec2.io import read_state_dict, write_state_dict
from wav2vec2.io import flax_msgpack, keras_h5, safetensors_file

STATE = {"masked_spec_embed": np.arange(8, dtype=np.float32), "encoder.layer_norm.weight": np.ones(8, np.float32),
         "encoder.layer_norm.bias": np.zeros(8, np.float32)}


# ------------------------------------------------------------------------------------- safetensors
def test_bfloat16_safetensors_read_in_a_fresh_process(tmp_path):
    """safetensors asks NumPy for "bfloat16" by name, which only ml_dtypes teaches it: the reader
    must not depend on someone else having imported it first."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    tensor = torch.randn(4, 3).bfloat16()
    save_file({"w": tensor}, tmp_path / "model.safetensors")
    code = ("import sys, numpy as np; from wav2vec2.io.safetensors_file import read_safetensors; "
            "w = read_safetensors(sys.argv[1])['w']; sys.stdout.write(w.dtype.name + ' ' + w.view(np.int16).tobytes().hex())")
    root = os.path.dirname(os.path.dirname(wav2vec2.__file__))  # this tree, wherever the test runs from
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.safetensors")], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": root}, check=True).stdout
    assert out == "bfloat16 " + tensor.view(torch.int16).numpy().tobytes().hex()


def test_safetensors_dtype_numpy_cannot_hold_names_file_and_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3).to(torch.float8_e4m3fn)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'w' has dtype F8_E4M3"):
        safetensors_file.read_safetensors(tmp_path / "model.safetensors")


# ------------------------------------------------------------------------------------------ HDF5
@pytest.fixture
def h5(tmp_path):
    (path,) = write_state_dict(STATE, tmp_path, format="tensorflow")
    return path


def first_weight(f):
    group = f[keras_h5._read_attribute(f, "layer_names")[0]]
    return group, keras_h5._read_attribute(group, "weight_names")[0]


def test_h5_links_out_of_the_file_are_refused(tmp_path, h5):
    h5py = pytest.importorskip("h5py")
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.full(8, 42.0, np.float32)
    with h5py.File(h5, "a") as f:
        group, name = first_weight(f)
        del group[name]
        group[name] = h5py.ExternalLink(str(secret), "/data")
    with pytest.raises(ValueError, match=r"tf_model\.h5: .* is a soft or external link"):
        read_state_dict(h5)


def test_h5_data_in_other_files_is_refused(tmp_path, h5):
    h5py = pytest.importorskip("h5py")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.full(8, 42.0, np.float32).tobytes())
    with h5py.File(h5, "a") as f:
        group, name = first_weight(f)
        del group[name]
        group.create_dataset(name, shape=(8,), dtype=np.float32, external=[(str(raw), 0, 32)])
    with pytest.raises(ValueError, match=r"tf_model\.h5: weight .* keeps its data in other files"):
        read_state_dict(h5)


@pytest.mark.parametrize("change, message", [
    ("strings", "expected numbers"),
    ("twice", "lists a name twice"),
    ("attribute", "is not a list of names"),
    ("huge", "more than 64 times the file's size"),
])
def test_h5_contents_are_checked(h5, change, message):
    h5py = pytest.importorskip("h5py")
    with h5py.File(h5, "a") as f:
        group, name = first_weight(f)
        if change == "strings":
            del group[name]
            group[name] = np.array([b"a", b"b"])
        elif change == "twice":
            names = keras_h5._read_attribute(group, "weight_names")
            keras_h5._write_attribute(group, "weight_names", names + names[:1])
        elif change == "attribute":
            f.attrs["layer_names"] = 7
        else:  # declared, never written: reading it would make 4 GB of fill values
            del group[name]
            group.create_dataset(name, shape=(2**30,), dtype=np.float32)
    with pytest.raises(ValueError, match=rf"tf_model\.h5: .*{message}"):
        read_state_dict(h5)


# ---------------------------------------------------------------------------------------- msgpack
def packed(tree):
    import msgpack

    return msgpack.packb(tree, default=flax_msgpack._pack_array, strict_types=True)


@pytest.mark.parametrize("tree, message", [
    ({"a": {"b": "text"}}, r"a/b is a str, not an array"),
    ({"a": {"b/c": np.ones(2)}}, r"key 'b/c' in a is not a plain name"),
    ({"a": {"__msgpack_chunked_array__": True, "shape": {"0": 4}}}, r"array a: a chunked array record needs"),
    ({"a": {"__msgpack_chunked_array__": True, "shape": {"0": 5}, "chunks": {"0": np.ones(4)}}}, r"array a: chunks of 4 elements"),
], ids=["leaf", "slash", "chunk-keys", "chunk-size"])
def test_msgpack_trees_are_checked_naming_the_leaf(tmp_path, tree, message):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(packed(tree))
    with pytest.raises(ValueError, match=rf"flax_model\.msgpack: {message}"):
        flax_msgpack.read_flax_tree(path)


@pytest.mark.parametrize("record, message", [
    ([[-1], b"float32", b"\0" * 8], "is not a list of sizes"),
    ([[3], b"float32", b"\0" * 8], "8 bytes do not hold a float32 array of shape"),
    ([[1], b"object", b"\0" * 8], "is not a number type"),
    ([[2**63, 0], b"float32", b""], "is not a list of sizes"),
])
def test_msgpack_array_records_are_checked(tmp_path, record, message):
    import msgpack

    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(msgpack.packb({"lm_head": {"kernel": msgpack.ExtType(1, msgpack.packb(record))}}))
    with pytest.raises(ValueError, match=rf"flax_model\.msgpack: array lm_head/kernel: .*{message}"):
        flax_msgpack.read_flax_tree(path)


def test_deep_msgpack_is_a_value_error(tmp_path):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(b"\x81\xa1a" * 900 + b"\xc0")  # {"a": {"a": ... None}} 900 deep
    with pytest.raises(ValueError, match=r"flax_model\.msgpack: the tree is nested deeper than 100 levels"):
        read_state_dict(path)


# ----------------------------------------------------------------------------------- shard indices
@pytest.fixture
def sharded(tmp_path):
    write_state_dict(STATE, tmp_path / "ckpt", max_shard_size=40)
    return tmp_path / "ckpt", tmp_path / "ckpt" / "model.safetensors.index.json"


def rewrite_index(index, **changes):
    data = json.loads(index.read_text())
    data.update(changes)
    index.write_text(json.dumps(data))


@pytest.mark.parametrize("weight_map, message", [
    ([["masked_spec_embed", "model-00001-of-00002.safetensors"]], "weight_map is a list"),
    ({"masked_spec_embed": 1}, "maps to 1, not a .safetensors file"),
    ({}, "weight_map is empty"),
    ("model.safetensors", "weight_map is a str"),
], ids=["list", "int-shard", "empty", "str"])
def test_malformed_weight_maps_are_value_errors(sharded, weight_map, message):
    directory, index = sharded
    rewrite_index(index, weight_map=weight_map)
    with pytest.raises(ValueError, match=rf"model\.safetensors\.index\.json: .*{message}"):
        read_state_dict(directory)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/abs/outside.safetensors", "sub/../../outside.safetensors",
                                   "..\\outside.safetensors", "C:outside.safetensors", "model.bin", "./x.safetensors"])
def test_shards_outside_the_checkpoint_or_of_another_format_are_refused(sharded, shard):
    directory, index = sharded
    write_state_dict(STATE, directory.parent / "decoy")
    os.replace(directory.parent / "decoy" / "model.safetensors", directory.parent / "outside.safetensors")
    data = json.loads(index.read_text())
    rewrite_index(index, weight_map={**data["weight_map"], "masked_spec_embed": shard})
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: weight 'masked_spec_embed' maps to .*not a "
                                         r"\.safetensors file inside the checkpoint"):
        read_state_dict(directory)


def test_shards_in_subdirectories_load_as_the_reference_joins_them(sharded):
    directory, index = sharded
    data = json.loads(index.read_text())
    (directory / "shards").mkdir()
    for shard in set(data["weight_map"].values()):
        os.replace(directory / shard, directory / "shards" / shard)
    rewrite_index(index, weight_map={k: f"shards/{v}" for k, v in data["weight_map"].items()})
    state = read_state_dict(directory)
    assert set(state) == set(STATE) and all(np.array_equal(state[k], STATE[k]) for k in STATE)


def test_a_weight_in_two_shards_and_a_missing_shard_are_errors(sharded):
    directory, index = sharded
    data = json.loads(index.read_text())
    second = sorted(set(data["weight_map"].values()))[1]
    write_state_dict({"masked_spec_embed": np.zeros(8, np.float32)}, directory / "extra")
    os.replace(directory / "extra" / "model.safetensors", directory / second)  # overwrite with a duplicate weight
    with pytest.raises(ValueError, match=r"index\.json: weights in more than one shard"):
        read_state_dict(directory)
    os.remove(directory / second)
    with pytest.raises(FileNotFoundError, match=second):
        read_state_dict(index)


def test_chunked_arrays_are_written_and_read_as_flax_does(tmp_path, monkeypatch):
    """flax writes arrays over 1 GiB as chunks with the shape as {"0": n, ...}; the old writer wrote a
    list, which flax cannot read (shown here with a 16-byte chunk limit)."""
    serialization = pytest.importorskip("flax.serialization")
    monkeypatch.setattr(flax_msgpack, "_CHUNK_BYTES", 16)
    state = {"masked_spec_embed": np.arange(10, dtype=np.float32)}
    (path,) = write_state_dict(state, tmp_path, format="flax")
    restored = serialization.msgpack_restore(path.read_bytes())
    np.testing.assert_array_equal(restored["masked_spec_embed"], state["masked_spec_embed"])
    np.testing.assert_array_equal(read_state_dict(tmp_path)["masked_spec_embed"], state["masked_spec_embed"])
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 16)  # and what flax chunks, we read
    path.write_bytes(serialization.msgpack_serialize(dict(state)))
    np.testing.assert_array_equal(read_state_dict(tmp_path)["masked_spec_embed"], state["masked_spec_embed"])


def test_shard_names_no_file_system_holds_are_value_errors(sharded):
    """Found by fuzzing: a 300-character shard name was an OSError (file name too long)."""
    directory, index = sharded
    data = json.loads(index.read_text())
    rewrite_index(index, weight_map={**data["weight_map"], "masked_spec_embed": "x" * 300 + ".safetensors"})
    with pytest.raises(ValueError, match=r"index\.json: weight 'masked_spec_embed' maps to"):
        read_state_dict(directory)
