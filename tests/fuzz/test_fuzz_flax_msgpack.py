"""Differential fuzzing of the flax_model.msgpack reader against flax.serialization.msgpack_restore.

Params trees flax writes (nested names, arrays of every dtype it writes, scalars, chunked arrays),
then mutated: leaves swapped for other values, array records rewritten (shapes, dtypes, byte
counts), keys renamed, trees nested deeper, raw bit flips and truncations. The reader returns the tree
flax restores, bit for bit, or a ValueError naming the file; nothing else. (msgpack's unpacker is C
with its own bounds; our code on top is Python: no crash to isolate.)
"""
import msgpack
import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz.support import fuzz_settings, refusal_or_result, summarize
from wav2vec2.io.flax_msgpack import read_flax_tree

serialization = pytest.importorskip("flax.serialization")
ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_,
          np.complex64]
NAMES = ["wav2vec2", "encoder", "layers", "0", "1", "kernel", "bias", "scale", "conv"]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_msgpack") / "flax_model.msgpack"


@st.composite
def arrays(draw):
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    values = np.asarray(np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape) * 10)
    array = values.astype(draw(st.sampled_from(DTYPES)))
    return array[()] if draw(st.integers(0, 9)) == 0 else array  # a NumPy scalar now and then


trees = st.recursive(arrays(), lambda children: st.dictionaries(st.sampled_from(NAMES), children, min_size=1, max_size=3),
                     max_leaves=6).filter(lambda tree: isinstance(tree, dict))


@st.composite
def saved(draw):
    return serialization.msgpack_serialize(draw(trees))


def chunked(array, pieces):
    flat = array.reshape(-1)
    parts = np.array_split(flat, pieces)
    return {"__msgpack_chunked_array__": True, "shape": {str(i): n for i, n in enumerate(array.shape)},
            "chunks": {str(i): p for i, p in enumerate(parts)}}


@st.composite
def mutated(draw):
    tree = draw(trees)
    raw = msgpack.unpackb(serialization.msgpack_serialize(tree), raw=False, strict_map_key=False)

    def nodes(node, path=()):
        yield path, node
        if isinstance(node, dict):
            for key, child in node.items():
                yield from nodes(child, (*path, key))

    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["leaf", "record", "key", "deeper", "chunk", "flip", "truncate"]))
        paths = [p for p, _ in nodes(raw) if p]
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent = raw
        for key in where[:-1]:
            parent = parent[key]
        leaf = where[-1]
        if kind == "leaf":
            parent[leaf] = draw(st.sampled_from(["text", 3, 1.5, None, [1, 2], b"bytes", True, {}]))
        elif kind == "record":
            shape = draw(st.sampled_from([[-1], [2**40, 0], [3], [], [1.5], "x", [True]]))
            dtype = draw(st.sampled_from([b"float32", b"object", b"<f4", b"bfloat16", b"V8", b"int64", 7]))
            buffer = draw(st.sampled_from([b"", b"\0" * 4, b"\0" * 12, b"\0" * 8]))
            record = draw(st.sampled_from([[shape, dtype, buffer], [shape, dtype], "x", [shape, dtype, buffer, 1]]))
            parent[leaf] = msgpack.ExtType(draw(st.sampled_from([1, 1, 1, 2, 3, 9])), msgpack.packb(record))
        elif kind == "key":
            parent[draw(st.sampled_from(["a/b", "a.b", "", 5, "kernel"]))] = parent.pop(leaf)
        elif kind == "deeper":
            node = parent[leaf]
            for _ in range(draw(st.sampled_from([1, 50, 150]))):
                node = {"x": node}
            parent[leaf] = node
        elif kind == "chunk":
            array = np.arange(6, dtype=np.float32)
            node = chunked(array, draw(st.integers(1, 3)))
            tweak = draw(st.sampled_from([None, "shape", "missing", "dtype", "extra"]))
            if tweak == "shape":
                node["shape"] = draw(st.sampled_from([{"0": 7}, [6], {"1": 6}]))
            elif tweak == "missing":
                node["chunks"].pop("0")
            elif tweak == "dtype":
                node["chunks"]["0"] = node["chunks"]["0"].astype(np.float64)
            elif tweak == "extra":
                node["more"] = 1
            parent[leaf] = {k: ({c: serialization._ndarray_to_bytes(v) for c, v in n.items()} if k == "chunks" else n)
                            for k, n in node.items()}
            parent[leaf]["chunks"] = {c: msgpack.ExtType(1, v) for c, v in parent[leaf]["chunks"].items()}
    data = msgpack.packb(raw, use_bin_type=True)
    if kind == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    return data


def check(path, data):
    path.write_bytes(data)
    status, ours = refusal_or_result(read_flax_tree, path)
    if status == "ok":
        theirs = serialization.msgpack_restore(data)
        assert summarize(ours) == summarize(theirs)
    return status


@fuzz_settings(max_examples=40)
@given(data=saved())
def test_flax_files_read_bit_exact(path, data):
    assert check(path, data) == "ok"


@fuzz_settings(max_examples=150)
@given(data=mutated())
def test_mutated_msgpack_is_read_as_flax_reads_it_or_refused(path, data):
    check(path, data)
