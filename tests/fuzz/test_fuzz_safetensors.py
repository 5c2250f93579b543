"""Differential fuzzing of the safetensors reader against safetensors' own torch loader.

Files safetensors writes, then mutated: header fields (dtypes, shapes, offsets, metadata, the length
prefix) edited as JSON, and raw bit flips and truncations. The reader returns what
``safetensors.torch.load_file`` returns, bit for bit, or a ValueError naming the file; nothing else.
(safetensors parses in Rust: no crash to isolate.)
"""
import json
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz.support import fuzz_settings, refusal_or_result, summarize
from wav2vec2.io.safetensors_file import read_safetensors

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.complex64]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_safetensors") / "model.safetensors"


@st.composite
def saved(draw):
    tensors = {}
    for i in range(draw(st.integers(1, 4))):
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = draw(st.sampled_from(DTYPES + [torch.float8_e4m3fn]))
        values = torch.from_numpy(np.asarray(np.random.default_rng(i).standard_normal(shape) * 10))
        tensors[draw(st.sampled_from(["w", "b", f"layers.{i}.weight", "é"])) + str(i)] = values.to(dtype)
    return safetensors_torch.save(tensors, metadata=draw(st.sampled_from([None, {"format": "pt"}])))


def header_of(data: bytes):
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def with_header(header, body: bytes, pad: int = 0) -> bytes:
    text = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + body


@st.composite
def mutated(draw):
    data = draw(saved())
    header, body = header_of(data)
    names = [k for k in header if k != "__metadata__"]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["dtype", "shape", "offsets", "metadata", "entry", "length", "flip", "truncate"]))
        name = draw(st.sampled_from(names))
        entry = header[name]
        if kind in ("dtype", "shape", "offsets") and not isinstance(entry, dict):
            continue
        if kind == "dtype":
            entry["dtype"] = draw(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F4", "XX", 3]))
        elif kind == "shape":
            entry["shape"] = draw(st.sampled_from([[], [0], [-1], [2**62, 2**62], [1.5], "x", entry["shape"] + [1],
                                                   entry["shape"][:-1], [n + 1 for n in entry["shape"]]]))
        elif kind == "offsets":
            start, end = entry["data_offsets"]
            entry["data_offsets"] = draw(st.sampled_from([[end, start], [start, end + 1], [start - 1, end], [0, end - start],
                                                          [start, 2**64 - 1], [-1, end], [start], "x"]))
        elif kind == "metadata":
            header["__metadata__"] = draw(st.sampled_from([{"a": 1}, {"a": None}, [], "x", {"format": "pt"}]))
        elif kind == "entry":
            header[draw(st.sampled_from(["new", name]))] = draw(st.sampled_from([1, None, [], {"dtype": "F32"}, entry]))
        data = with_header(header, body, pad=draw(st.integers(0, 3)))
        if kind == "length":
            data = struct.pack("<Q", struct.unpack("<Q", data[:8])[0] + draw(st.sampled_from([-1, 1, 2**40]))) + data[8:]
        elif kind == "flip" and len(data) > 8:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
        elif kind == "truncate":
            data = data[:draw(st.integers(0, len(data)))]
        if kind in ("length", "flip", "truncate"):
            break
    return data


def check(path, data):
    path.write_bytes(data)
    status, ours = refusal_or_result(read_safetensors, path)
    if status == "ok":
        theirs = safetensors_torch.load_file(path)  # it must read what we read
        assert summarize(dict(sorted(ours.items()))) == summarize(dict(sorted(theirs.items())))  # order is the file's
    return status


@fuzz_settings(max_examples=40)
@given(data=saved())
def test_safetensors_files_read_bit_exact(path, data):
    status = check(path, data)
    assert status == "ok" or "F8_E4M3" in data[:2000].decode("latin1")


@fuzz_settings(max_examples=150)
@given(data=mutated())
def test_mutated_safetensors_are_read_as_safetensors_reads_them_or_refused(path, data):
    check(path, data)
