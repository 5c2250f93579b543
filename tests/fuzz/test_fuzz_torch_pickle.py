"""Differential fuzzing of the torch checkpoint reader against torch.load(weights_only=True).

For generated archives (zip and legacy; random storages, shapes, strides, offsets, dtypes, nesting
and sharing), archives torch.save writes, and mutations of both (truncations, bit flips, pickle
opcodes changed and re-zipped past the CRC, duplicate records), the reader either returns exactly what
torch returns (keys, containers, dtypes, shapes, bytes) or raises a ValueError naming the file. It
never raises anything else, never hangs, keeps every array inside the bytes it read, and leaves no
trace on later loads.

torch runs in a worker process (support.Worker), so a crash there is reported rather than fatal. Our
reader runs in this process: it is Python and NumPy, and its one unchecked NumPy call, ``as_strided``,
only ever sees views ``_check_view`` proved inside their storage; a crash would fail the run loudly.
"""
import io
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz.archives import STORAGE_ITEMSIZE, Tensor, Zip, dumps, legacy, rezip
from fuzz.support import Worker, assert_inside_buffers, fuzz_settings, refusal_or_result, summarize
from wav2vec2.io import torch_pickle

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def oracle():
    worker = Worker()
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A scratch file for the examples, and a trusted checkpoint read after each of them."""
    directory = tmp_path_factory.mktemp("fuzz_torch")
    trusted = directory / "trusted.bin"
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "h": torch.ones(3).half(),
                "b": torch.tensor([True, False])}, trusted)
    expected = summarize(torch.load(trusted, weights_only=True))
    return directory / "pytorch_model.bin", trusted, expected


def check(oracle, files, data: bytes):
    path, trusted, expected = files
    path.write_bytes(data)
    status, ours = refusal_or_result(torch_pickle.load, path)
    status_bin, state = refusal_or_result(torch_pickle.read_bin, path)
    if status == "ok":
        theirs = oracle.call("torch_load", str(path))
        assert theirs[0] == "ok", f"we read a file torch.load refuses ({theirs})"
        assert summarize(ours) == theirs[1]
        assert_inside_buffers(ours, len(data))
    if status_bin == "ok":
        assert status == "ok" and summarize(state) == summarize(dict(ours))
    assert summarize(torch_pickle.read_bin(trusted)) == expected, "a load changed how later files decode"
    return status_bin


# ----------------------------------------------------------------------------------- generation
def contiguous(size):
    stride, step = [], 1
    for n in reversed(size):
        stride.append(step)
        step *= max(n, 1)
    return tuple(reversed(stride))


@st.composite
def layouts(draw):
    """(size, stride): mostly the layouts torch makes (contiguous, transposed, broadcast, stepped)."""
    size = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    kind = draw(st.sampled_from(["contiguous", "contiguous", "transposed", "broadcast", "stepped", "any"]))
    if kind == "transposed":
        order = draw(st.permutations(range(len(size))))
        inner = contiguous([size[i] for i in order])
        stride = [0] * len(size)
        for position, dim in enumerate(order):
            stride[dim] = inner[position]
        return size, tuple(stride)
    if kind == "broadcast":
        return size, tuple(0 if draw(st.booleans()) else s for s in contiguous(size))
    if kind == "stepped":
        return size, tuple(s * draw(st.integers(1, 3)) for s in contiguous(size))
    if kind == "any":
        return size, tuple(draw(st.integers(-3, 9)) for _ in size)
    return size, contiguous(size)


def extent(size, stride) -> int:
    """Elements a view of this layout spans from its offset (0 when empty)."""
    if 0 in size:
        return 0
    return 1 + sum(max(s, 0) * (n - 1) for n, s in zip(size, stride))


@st.composite
def tensors(draw, storages, legacy_format):
    """A tensor on a storage of ``storages`` (key -> [type, numel]; a new key sizes its storage to fit)."""
    size, stride = draw(layouts())
    key = draw(st.sampled_from([*sorted(storages), str(len(storages))]))
    if key not in storages:
        offset = draw(st.integers(0, 3))
        storages[key] = [draw(st.sampled_from(list(STORAGE_ITEMSIZE))), offset + extent(size, stride) + draw(st.integers(0, 2))]
    else:
        offset = draw(st.integers(0, storages[key][1]))
    storage, numel = storages[key]
    tensor = Tensor(storage=storage, key=key, numel=numel, size=size, stride=stride, offset=offset,
                    requires_grad=draw(st.booleans()) and storage in ("FloatStorage", "HalfStorage", "DoubleStorage"),
                    parameter=draw(st.booleans()))
    oddity = draw(st.sampled_from([None] * 16 + ["numel", "storage", "size", "stride", "offset", "grad", "view", "view"]))
    if oddity == "numel":  # the same storage referenced with another size
        tensor.numel = draw(st.integers(0, 30) | st.sampled_from([-1, 2**40, True, 1.0]))
    elif oddity == "storage":  # ... or another type
        tensor.storage = draw(st.sampled_from([*STORAGE_ITEMSIZE, "QInt8Storage", "UntypedStorage"]))
    elif oddity == "size":
        tensor.size = draw(st.sampled_from([(-1,), [2, 2], (2**62, 4), (1.0,), "ab", (True,), (1,) * 65]))
    elif oddity == "stride":
        tensor.stride = draw(st.sampled_from([(1,) * (len(size) + 1), (2**63,) * len(size), (-(2**62),) * len(size)]))
    elif oddity == "offset":
        tensor.offset = draw(st.sampled_from([2**64, -(2**63), -1, 1.5, None, numel]))
    elif oddity == "grad":
        tensor.requires_grad = True
    elif oddity == "view" and legacy_format:
        tensor.view = (f"v{key}", draw(st.integers(-1, numel + 1)), draw(st.integers(-1, numel + 1)))
    return tensor


@st.composite
def generated_archives(draw):
    legacy_format = draw(st.booleans())
    storages = {}
    made = draw(st.lists(tensors(storages, legacy_format), min_size=1, max_size=5))
    leaves = made + draw(st.lists(st.sampled_from(made), max_size=2))  # shared references
    if draw(st.integers(0, 3)) == 0:  # nested containers
        value = {"nested": [leaves[0], tuple(leaves[1:2]), {"x": leaves[-1]}], "n": 3, "s": "text"}
    else:
        value = {f"layer.{i}.weight": t for i, t in enumerate(leaves)}
    pickled = dumps(value, legacy=legacy_format)
    records = {}
    for key, (storage, numel) in storages.items():
        itemsize = STORAGE_ITEMSIZE[storage]
        size = numel * itemsize + draw(st.sampled_from([0] * 20 + [-1, 1, itemsize]))
        records[key] = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(max(size, 0))
    if legacy_format:
        keys = draw(st.sampled_from([None] * 10 + [sorted(records)[:1], sorted(records) * 2, [*records, "x"]]))
        return legacy(pickled, {k: (v, STORAGE_ITEMSIZE[storages[k][0]]) for k, v in records.items()}, keys=keys)
    return Zip(pickled, records, byteorder=draw(st.sampled_from([b"little"] * 4 + [None, b"big"])),
               prefix=draw(st.sampled_from(["archive", "archive", "model-v2", "x"]))).dumps()


@st.composite
def torch_saved(draw):
    """What torch.save writes for real tensors and views of them."""
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                  torch.int8, torch.uint8, torch.bool]))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    base = torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape).to(dtype)
    views = {"base": base, "flat": base.reshape(-1)[1:], "expanded": base.reshape(-1)[:1].expand(3, 4)}
    if base.dim() >= 2:
        views["transposed"] = base.transpose(0, 1)
        views["stepped"] = base[::2, 1:]
    if dtype.is_floating_point:
        views["parameter"] = torch.nn.Parameter(base.clone())
    chosen = {k: views[k] for k in draw(st.lists(st.sampled_from(sorted(views)), min_size=1, unique=True))}
    buffer = io.BytesIO()
    torch.save(chosen, buffer, _use_new_zipfile_serialization=draw(st.booleans()))
    return buffer.getvalue()


@st.composite
def mutated(draw, archives):
    data = bytearray(draw(archives))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "byte", "pickle", "pickle", "duplicate"]))
        is_zip = data[:4] == b"PK\x03\x04"
        if kind == "truncate":
            del data[draw(st.integers(0, max(len(data) - 1, 0))):]
        elif kind in ("flip", "byte") and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = data[at] ^ (1 << draw(st.integers(0, 7))) if kind == "flip" else draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "pickle" and is_zip:
            try:
                archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                pickled = bytearray(archive.read(name))
            except (zipfile.BadZipFile, StopIteration, KeyError, ValueError, OSError, EOFError, NotImplementedError):
                continue
            at = draw(st.integers(0, max(len(pickled) - 1, 0)))
            edit = draw(st.sampled_from(["flip", "insert", "delete", "repeat"]))
            if edit == "flip" and pickled:
                pickled[at] ^= 1 << draw(st.integers(0, 7))
            elif edit == "insert":
                pickled[at:at] = draw(st.sampled_from([b"(", b")", b"N", b"0", b"b", b"s", b"a", b"e", b"u", b"R",
                                                       b"\x81", b"t", b"h\x00", b"q\x00", b"]", b"}", b"Q", b"\x88"]))
            elif edit == "delete":
                del pickled[at:at + draw(st.integers(1, 8))]
            else:
                pickled[at:at] = pickled[at:at + draw(st.integers(1, 40))]
            data = bytearray(rezip(bytes(data), {name: bytes(pickled)}))
        elif kind == "duplicate" and is_zip:
            try:
                archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
                name = draw(st.sampled_from(archive.namelist()))
                content = archive.read(name)
            except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, NotImplementedError):
                continue
            buffer = io.BytesIO(bytes(data))
            with warnings.catch_warnings(), zipfile.ZipFile(buffer, "a") as out:
                warnings.simplefilter("ignore")  # zipfile warns of the duplicate name this makes
                out.writestr(name if draw(st.booleans()) else name.upper(), content[::-1])
            data = bytearray(buffer.getvalue())
    return bytes(data)


# ----------------------------------------------------------------------------------------- tests
@fuzz_settings(max_examples=150)
@given(data=generated_archives())
def test_generated_archives_read_as_torch_reads_them(oracle, files, data):
    check(oracle, files, data)


@fuzz_settings(max_examples=50)
@given(data=torch_saved())
def test_torch_saved_archives_read_bit_exact(oracle, files, data):
    assert check(oracle, files, data) == "ok"


@fuzz_settings(max_examples=200)
@given(data=mutated(st.one_of(generated_archives(), torch_saved())))
def test_mutated_archives_are_read_as_torch_reads_them_or_refused(oracle, files, data):
    check(oracle, files, data)
