"""pytorch_model.bin without torch: the restricted unpickler refuses code, reads every tensor layout."""
import collections
import os
import pickle
import zipfile

import numpy as np
import pytest

from wav2vec2.io import read_state_dict, write_state_dict
from wav2vec2.io import torch_pickle


def torch_like_zip(path, pickled: bytes):
    """A zip with torch's layout around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/version", "3\n")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    torch_like_zip(path, pickle.dumps({"weight": RunsCode(marker)}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load global (posix|os|nt)\.system") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_config_globals_are_refused_outside_fairseq_mode(tmp_path):
    import argparse

    path = tmp_path / "pytorch_model.bin"
    torch_like_zip(path, pickle.dumps({"args": argparse.Namespace(a=1)}, protocol=2))
    with pytest.raises(ValueError, match="argparse.Namespace"):
        torch_pickle.read_bin(path)


def test_whole_module_pickles_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.bin"
    torch.save(torch.nn.Linear(2, 3), path)
    with pytest.raises(ValueError, match="torch.nn.modules.linear.Linear"):
        torch_pickle.read_bin(path)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_every_tensor_layout_torch_writes(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    base = torch.arange(24.0).reshape(4, 6)
    tensors = collections.OrderedDict(
        float32=torch.randn(3, 4),
        float64=torch.randn(2, dtype=torch.float64),
        float16=torch.randn(5).half(),
        bfloat16=torch.randn(5).bfloat16(),
        int64=torch.arange(7),
        boolean=torch.tensor([True, False]),
        transposed=base.T,  # non-contiguous strides
        sliced=base[1:3, 2:5],  # storage offset
        shared=base,  # same storage as the two above
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
        parameter=torch.nn.Parameter(torch.ones(2)),
    )
    path = tmp_path / "pytorch_model.bin"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    got = torch_pickle.read_bin(path)
    assert list(got) == list(tensors)
    for key, tensor in tensors.items():
        expected = tensor.detach()
        assert got[key].shape == tuple(expected.shape), key
        assert str(got[key].dtype) == str(expected.dtype).removeprefix("torch."), key
        np.testing.assert_array_equal(got[key].astype(np.float64), expected.double().numpy(), err_msg=key)


def test_torch_loads_what_we_write_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    state = {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": np.asfortranarray(rng.standard_normal((2, 5))),  # written contiguous
        "c": np.arange(4, dtype=np.int64),
        "d": rng.standard_normal(3).astype(ml_dtypes.bfloat16),
        "e": np.float32(1.5) * np.ones((), np.float32),
    }
    path = tmp_path / "pytorch_model.bin"
    torch_pickle.write_bin(state, path)
    loaded = torch.load(path, weights_only=True)
    assert isinstance(loaded, collections.OrderedDict) and list(loaded) == list(state)
    for key, value in state.items():
        assert tuple(loaded[key].shape) == value.shape, key
        np.testing.assert_array_equal(loaded[key].float().numpy(), value.astype(np.float32), err_msg=key)
    with zipfile.ZipFile(path) as archive:  # data records are 64-byte aligned, as torch writes them
        for info in archive.infolist():
            archive.fp.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(archive.fp.read(4), dtype="<u2")
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0


@pytest.mark.parametrize("format", ["safetensors", "pytorch", "tensorflow", "flax"])
def test_truncated_files_name_the_file(tmp_path, format):
    state = {"masked_spec_embed": np.ones(8, np.float32), "encoder.layer_norm.weight": np.ones(8, np.float32)}
    (path,) = write_state_dict(state, tmp_path, format=format)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=path.name):
        read_state_dict(tmp_path)


def test_truncated_legacy_file_names_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "old.bin"
    torch.save({"a": torch.ones(100)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"old\.bin.*truncated"):
        torch_pickle.read_bin(path)


def test_garbage_bin_names_the_file(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        read_state_dict(tmp_path)


def test_missing_weights_list_the_files_looked_for(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin.*tf_model\.h5.*flax_model\.msgpack"):
        read_state_dict(tmp_path)


def test_unknown_format_and_bad_shard_size(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        write_state_dict({}, tmp_path, format="onnx")
    with pytest.raises(ValueError, match="max_shard_size"):
        write_state_dict({"a": np.ones(2)}, tmp_path, max_shard_size="lots")


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    good = {"encoder.layer_norm.weight": np.ones(4, np.float32)}
    write_state_dict(good, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(Exception):
        write_state_dict({"encoder.layer_norm.weight": np.array([object()])}, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_resharding_removes_stale_files(tmp_path):
    state = {f"encoder.layers.{i}.layer_norm.weight": np.ones(100, np.float32) for i in range(4)}
    write_state_dict(state, tmp_path, max_shard_size=500)
    assert "model.safetensors.index.json" in os.listdir(tmp_path)
    write_state_dict(state, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
