"""pytorch_model.bin without torch: the restricted unpickler refuses code, reads every tensor layout."""
import collections
import contextlib
import os
import pickle
import re
import struct
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


# ------------------------------------------------------------------- hostile files (issue 10 findings)
from fuzz.archives import Global, Raw, Tensor, Zip, dumps, legacy  # noqa: E402


def torch_load(path):
    """The oracle: what torch.load(weights_only=True) makes of a file (None when it refuses it)."""
    torch = pytest.importorskip("torch")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return None


FLOATS = np.arange(16, dtype=np.float32).tobytes()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("offset, size, stride", [
    (15, (4,), (-1,)),  # negative stride: reads before the storage
    (0, (2, 2), (8, -4)),  # mixed signs that cancel in a sum-of-extents bounds check
    (4, (3, 3), (-1, 4)),
], ids=["negative", "mixed-cancelling", "mixed"])
def test_negative_strides_are_refused_naming_file_and_tensor(tmp_path, zip_format, offset, size, stride):
    tensor = Tensor(numel=16, offset=offset, size=size, stride=stride)
    path = tmp_path / "pytorch_model.bin"
    if zip_format:
        path.write_bytes(Zip(dumps({"encoder.weight": tensor}), {"0": FLOATS}).dumps())
    else:
        path.write_bytes(legacy(dumps({"encoder.weight": tensor}, legacy=True), {"0": (FLOATS, 4)}))
    assert torch_load(path) is None  # torch refuses these too
    with pytest.raises(ValueError, match=rf"pytorch_model\.bin: tensor encoder\.weight: negative stride"):
        torch_pickle.read_bin(path)


@pytest.mark.parametrize("offset, size, stride", [(13, (4,), (1,)), (0, (3, 6), (6, 1)), (-1, (2,), (1,)), (16, (), ())])
def test_views_past_the_storage_are_refused(tmp_path, offset, size, stride):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(Zip(dumps({"w": Tensor(numel=16, offset=offset, size=size, stride=stride)}), {"0": FLOATS}).dumps())
    assert torch_load(path) is None
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: tensor w: .*(past the end|negative storage offset)"):
        torch_pickle.read_bin(path)


def test_record_size_must_match_the_storage_reference(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    # the pickle claims 32 elements; the record holds 16 (the old reader checked against the record)
    path.write_bytes(Zip(dumps({"w": Tensor(numel=32, size=(16,))}), {"0": FLOATS}).dumps())
    assert torch_load(path) is None
    with pytest.raises(ValueError, match=r"record 'data/0' holds 64 bytes, not the 32 x 4"):
        torch_pickle.read_bin(path)


def test_build_on_a_storage_stand_in_is_refused_and_changes_no_later_load(tmp_path):
    torch = pytest.importorskip("torch")
    crafted = tmp_path / "crafted.bin"
    renamed = Raw(b"ctorch\nFloatStorage\n}(X\x04\x00\x00\x00nameX\x0b\x00\x00\x00HalfStorageub")  # BUILD on the stand-in
    crafted.write_bytes(Zip(dumps({"w": renamed})).dumps())
    with pytest.raises(ValueError, match=r"crafted\.bin: refusing BUILD"):
        torch_pickle.read_bin(crafted)
    trusted = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, trusted)
    got = torch_pickle.read_bin(trusted)
    expected = torch.load(trusted, weights_only=True)
    assert got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["w"], expected["w"].numpy())


@pytest.mark.parametrize("target", [Global("torch", "FloatStorage"), Global("collections", "OrderedDict"),
                                    Global("torch._utils", "_rebuild_tensor_v2"), Global("omegaconf.dictconfig", "DictConfig")])
def test_no_pickle_gives_state_to_a_global(tmp_path, target):
    path = tmp_path / "model.pt"
    body = dumps({"w": Raw(b"c" + f"{target.module}\n{target.name}\n".encode() + b"}(X\x01\x00\x00\x00aK\x01ub")})
    path.write_bytes(Zip(body).dumps())
    with pytest.raises(ValueError, match=r"model\.pt: refusing BUILD"):
        torch_pickle.load(path, allow_config_objects=True)


def test_stride_0_views_stay_views(tmp_path):
    """A few hundred bytes claiming a broadcast 4000 x 4000 tensor: kept as a read-only view, as torch
    keeps it, not materialised (the old reader made a 64 MB copy; 20000 x 20000 made 1.6 GB)."""
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(Zip(dumps({"w": Tensor(numel=16, offset=3, size=(4000, 4000), stride=(0, 0))}), {"0": FLOATS}).dumps())
    assert path.stat().st_size < 1000
    expected = torch_load(path)["w"]
    got = torch_pickle.read_bin(path)["w"]
    assert got.shape == tuple(expected.shape) == (4000, 4000) and got.strides == (0, 0)
    low, high = np.lib.array_utils.byte_bounds(got)
    assert high - low == 4 and not got.flags.writeable
    assert got[1234, 567] == expected[1234, 567].item() == 3.0


def test_shared_storages_are_shared_views_as_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(12.0).reshape(3, 4)
    path = tmp_path / "pytorch_model.bin"
    torch.save({"base": base, "row": base[1], "column": base[:, 2]}, path)
    got = torch_pickle.read_bin(path)
    assert all(v.flags.writeable for v in got.values())
    assert np.shares_memory(got["base"], got["row"]) and np.shares_memory(got["base"], got["column"])
    np.testing.assert_array_equal(got["column"], [2.0, 6.0, 10.0])


def duplicated_zip(path, first: bytes, second: bytes, second_name="archive/data/0"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", dumps({"w": Tensor(numel=4, size=(4,))}))
        archive.writestr("archive/data/0", first)
        archive.writestr("archive/version", "3\n")
        archive.writestr(second_name, second)


@pytest.mark.parametrize("second_name", ["archive/data/0", "archive/DATA/0"], ids=["same", "other-case"])
def test_duplicate_zip_records_are_refused(tmp_path, second_name):
    """torch reads the first of two records with one name (compared ignoring case); Python's zipfile
    the last: the old reader returned other weights than torch."""
    path = tmp_path / "pytorch_model.bin"
    with pytest.warns(UserWarning, match="Duplicate name") if second_name == "archive/data/0" else contextlib.nullcontext():
        duplicated_zip(path, np.ones(4, np.float32).tobytes(), np.full(4, 2, np.float32).tobytes(), second_name)
    np.testing.assert_array_equal(torch_load(path)["w"].numpy(), np.ones(4))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: zip records named .* more than once"):
        torch_pickle.read_bin(path)


def test_deep_nesting_is_a_value_error_not_a_recursion_error(tmp_path):
    deep = Raw(b"]" * 200_000 + b"a" * 199_999)  # 200,000 nested lists
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(Zip(dumps({"w": deep})).dumps())
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: objects nested deeper than 100 levels"):
        torch_pickle.read_bin(path)


def test_bfloat16_bin_reads_bit_exact_and_writes(tmp_path):
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    tensor = torch.randn(3, 5).bfloat16()
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": tensor, "t": tensor.T}, path)
    got = torch_pickle.read_bin(path)
    assert got["w"].dtype == ml_dtypes.bfloat16 and got["t"].shape == (5, 3)
    np.testing.assert_array_equal(got["w"].view(np.int16), tensor.view(torch.int16).numpy())
    np.testing.assert_array_equal(got["t"].view(np.int16), tensor.T.view(torch.int16).numpy())
    torch_pickle.write_bin(got, tmp_path / "out.bin")
    back = torch.load(tmp_path / "out.bin", weights_only=True)
    assert back["w"].dtype == torch.bfloat16 and torch.equal(back["t"], tensor.T)


def test_checkpoints_saved_without_crc_load(tmp_path):
    """torch never checks CRCs and writes 0s with compute_crc32=False."""
    torch = pytest.importorskip("torch")
    from torch.utils.serialization import config

    path = tmp_path / "pytorch_model.bin"
    saved, config.save.compute_crc32 = config.save.compute_crc32, False
    try:
        torch.save({"w": torch.arange(5.0)}, path)
    finally:
        config.save.compute_crc32 = saved
    np.testing.assert_array_equal(torch_pickle.read_bin(path)["w"], np.arange(5.0))


@pytest.mark.parametrize("change, message", [
    (dict(version=None), "no readable version record"),
    (dict(version=b"11\n"), "no readable version record"),
    (dict(byteorder=b"LITTLE"), "unknown byte order"),
    (dict(compression=zipfile.ZIP_DEFLATED), "compressed or encrypted"),
    (dict(extra=[("constants.pkl", b"")]), "TorchScript"),
], ids=["no-version", "future-version", "byteorder", "deflated", "torchscript"])
def test_archives_torch_reads_differently_or_refuses_are_refused(tmp_path, change, message):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(Zip(dumps({"w": Tensor(numel=16, size=(16,))}), {"0": FLOATS}, **change).dumps())
    with pytest.raises(ValueError, match=rf"pytorch_model\.bin: .*{message}"):
        torch_pickle.read_bin(path)


def test_big_endian_archives_are_swapped_as_torch_does(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(Zip(dumps({"w": Tensor(numel=16, size=(16,))}), {"0": np.arange(16, dtype=">f4").tobytes()},
                         byteorder=b"big").dumps())
    got = torch_pickle.read_bin(path)["w"]
    np.testing.assert_array_equal(got, np.arange(16, dtype=np.float32))
    np.testing.assert_array_equal(got, torch_load(path)["w"].numpy())


def test_legacy_storages_must_fit_in_the_file_and_be_written(tmp_path):
    huge = tmp_path / "huge.bin"  # claims 2**40 elements: refused before any allocation
    huge.write_bytes(legacy(dumps({"w": Tensor(numel=2**40, size=(4,))}, legacy=True), {}, keys=[]))
    with pytest.raises(ValueError, match=r"huge\.bin: storage '0' of 4398046511104 bytes does not fit in the file"):
        torch_pickle.read_bin(huge)
    unwritten = tmp_path / "unwritten.bin"  # torch would return uninitialised memory here
    unwritten.write_bytes(legacy(dumps({"w": Tensor(numel=4, size=(4,))}, legacy=True), {}, keys=[]))
    with pytest.raises(ValueError, match=r"unwritten\.bin: the list of storages does not match"):
        torch_pickle.read_bin(unwritten)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_pickle_opcodes_torch_does_not_read_are_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch_like_zip(path, pickle.dumps({"a": 1}, protocol=4))  # FRAME and friends
    assert torch_load(path) is None
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: unsupported pickle opcode"):
        torch_pickle.read_bin(path)


def test_memo_and_work_are_bounded(tmp_path):
    # a 1 MB string encoded to bytes 300,000 times would claim 300 GB
    text = "x" * (1 << 20)
    body = b"\x80\x02c_codecs\nencode\nq\x00X" + struct.pack("<I", len(text)) + text.encode() + b"q\x01X\x06\x00\x00\x00latin1q\x02"
    body += b"(" + b"h\x00h\x01h\x02\x86R" * 300_000 + b"l."
    path = tmp_path / "pytorch_model.bin"
    torch_like_zip(path, body)
    with pytest.raises(ValueError, match=r"more work than its size allows|unsupported pickle opcode"):
        torch_pickle.read_bin(path)


# ------------------------------------------------------------------------- found by the fuzz suites
def unreachable_invalid_tensor() -> bytes:
    from fuzz.archives import Call, Pickle

    p = Pickle()
    p.emit(Call(Global("collections", "OrderedDict")))
    p.out.write(b"(")
    for tensor in (Tensor(numel=16, offset=4, size=(36,)), Tensor(numel=16, size=(4,))):
        p.emit("w")  # the second "w" replaces the first: the invalid tensor is not in the result
        p.emit(tensor)
    p.out.write(b"u.")
    return p.out.getvalue()


def misdeclared_name_length(data: bytes) -> bytes:
    at = data.rfind(b"PK\x01\x02")  # the last central directory entry: its name length grows to 7680
    return data[:at + 28] + struct.pack("<H", struct.unpack("<H", data[at + 28:at + 30])[0] * 256) + data[at + 30:]


def directory_bit(data: bytes, name: bytes) -> bytes:
    """Mark a record as a DOS directory in the central directory: miniz then extracts nothing and
    torch hands back whatever its buffer held."""
    at = data.rindex(name) - 46 + 38  # the entry's external attributes
    return data[:at] + bytes([data[at] | 0x10]) + data[at + 1:]


def broken_local_header(data: bytes, name: bytes) -> bytes:
    at = data.index(name) - 30  # the record's local header, which only torch reads for this record
    return data[:at] + b"PK\x00\x00" + data[at + 4:]


@pytest.mark.parametrize("make, config", [
    (lambda: Zip(b"0.").dumps(), True),  # POP on an empty stack (was an IndexError)
    (lambda: Zip(dumps({"w": Tensor(numel=16, size=(0,), stride=(2**63,))}), {"0": FLOATS}).dumps(), False),
    (lambda: Zip(unreachable_invalid_tensor(), {"0": FLOATS}).dumps(), False),
    (lambda: Zip(dumps({"w": Tensor(numel=16, size=(16,))}), {"0": FLOATS}, extra=[(".data/serialization_id", b"\xff")]).dumps(), False),
    (lambda: misdeclared_name_length(Zip(dumps({"w": Tensor(numel=16, size=(16,))}), {"0": FLOATS}).dumps()), False),
    (lambda: broken_local_header(Zip(dumps({"w": Tensor(numel=16, size=(16,))}), {"0": FLOATS},
                                     extra=[(".format_version", b"1")]).dumps(), b"archive/.format_version"), False),
], ids=["pop-empty", "empty-tensor-int64-stride", "invalid-tensor-outside-result", "serialization-id", "cd-name-length",
        "format-version-header"])
def test_fuzz_findings_are_refused_as_torch_refuses_them(tmp_path, make, config):
    path = tmp_path / ("model.pt" if config else "pytorch_model.bin")
    path.write_bytes(make())
    if not config:
        assert torch_load(path) is None
    with pytest.raises(ValueError, match=re.escape(str(path))):
        torch_pickle.load(path, allow_config_objects=config)


def test_records_marked_as_directories_are_refused(tmp_path):
    """Found by fuzzing: for a record whose central directory entry has the DOS directory bit, miniz
    extracts nothing and torch.load returns whatever its buffer held (heap bytes, not the file's)."""
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(directory_bit(Zip(dumps({"w": Tensor(numel=16, size=(16,))}), {"0": FLOATS}).dumps(), b"archive/data/0"))
    theirs = torch_load(path)
    assert theirs is None or not np.array_equal(theirs["w"].numpy(), np.arange(16))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: record 'data/0' is marked as a directory"):
        torch_pickle.read_bin(path)
