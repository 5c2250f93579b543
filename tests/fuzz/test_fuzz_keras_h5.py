"""Differential fuzzing of the tf_model.h5 reader against h5py's own reads of the Keras layout.

Keras-layout files written with h5py (groups and scoped weight names, or the shard layout; datasets of
every numeric dtype, either byte order, scalars and empty arrays), then changed the ways a stranger
could: soft and external links, data kept in other files, attributes of other types, names twice,
text datasets, huge unwritten datasets, and raw bit flips and truncations. The reader returns what
h5py reads, bit for bit, or a ValueError naming the file; it never returns the bytes of another file.

libhdf5 is C parsing the file, so both readers run in a worker process: a crash there would be
reported as a crash of our reader, not take the test run with it.
"""
import h5py
import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz.support import Worker, fuzz_settings

SECRET = 1234.5  # the value in the file outside the checkpoint
DTYPES = ["<f4", ">f4", "<f2", "<f8", ">i8", "<i4", "|i1", "|u1", "|b1"]


@pytest.fixture(scope="module")
def worker():
    process = Worker()
    yield process
    process.close()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz_h5")
    secret = directory / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.full(4, SECRET, np.float32)
    (directory / "secret.raw").write_bytes(np.full(4, SECRET, np.float32).tobytes())
    return directory / "tf_model.h5", secret, directory / "secret.raw"


@st.composite
def layouts(draw):
    """{layer: [(scoped weight name, array)]} or, for the shard layout, {variable name: array}."""
    def array():
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        values = np.asarray(np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape) * 10)
        return values.astype(draw(st.sampled_from(DTYPES)))

    if draw(st.booleans()):
        return "shard", {f"wav2vec2/layer_{i}/kernel:0": array() for i in range(draw(st.integers(1, 3)))}
    layers = {}
    for i in range(draw(st.integers(1, 3))):
        count = draw(st.integers(0, 3))
        layers[f"layer_{i}"] = [(f"model/layer_{i}/sub/w{j}:0", array()) for j in range(count)]
    return "keras", layers


def write(path, kind, layout):
    with h5py.File(path, "w") as f:
        if kind == "shard":
            for name, array in layout.items():
                f.create_dataset(name, data=array)
            f.attrs["layer_names"] = np.array([n.encode() for n in layout])
            return
        f.attrs["layer_names"] = np.array([n.encode() for n in layout])
        for layer, weights in layout.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in weights])
            for name, array in weights:
                group.create_dataset(name, data=array)


@st.composite
def changes(draw, paths):
    """A function that changes a written file as a stranger could."""
    _, secret, raw = paths
    kind = draw(st.sampled_from(["soft", "external", "external_data", "attribute", "twice", "text", "huge",
                                 "compressed", "missing", "flip", "truncate", "none"]))
    flip_at, bit, cut = draw(st.integers(0, 10**6)), draw(st.integers(0, 7)), draw(st.integers(0, 10**6))
    pick, target = draw(st.integers(0, 99)), draw(st.integers(0, 99))
    attribute = draw(st.sampled_from([7, np.array([[b"a"]]), np.array([1.5]), b"layer_0", np.array([b"\xff\xfe"])]))

    def datasets(f):
        found = []
        f.visititems(lambda name, node: found.append(name) if isinstance(node, h5py.Dataset) else None)
        return found

    def change(path):
        if kind in ("flip", "truncate"):
            data = bytearray(path.read_bytes())
            if kind == "flip":
                data[flip_at % len(data)] ^= 1 << bit
            else:
                del data[cut % len(data):]
            path.write_bytes(bytes(data))
            return
        if kind == "none":
            return
        with h5py.File(path, "a") as f:
            names = datasets(f)
            if kind == "attribute":
                f.attrs["layer_names"] = attribute
                return
            if not names:
                return
            name = names[pick % len(names)]
            dataset = f[name]
            shape, dtype = dataset.shape, dataset.dtype
            if kind == "twice":
                parent = dataset.parent
                if "weight_names" in parent.attrs:
                    listed = list(parent.attrs["weight_names"])
                    parent.attrs["weight_names"] = np.array(listed + listed[:1])
                return
            if kind == "missing":
                del f[name]
                return
            del f[name]
            if kind == "soft":
                f[name] = h5py.SoftLink("/" + names[target % len(names)])
            elif kind == "external":
                f[name] = h5py.ExternalLink(str(secret), "/data")
            elif kind == "external_data":
                f.create_dataset(name, shape=(4,), dtype="<f4", external=[(str(raw), 0, 16)])
            elif kind == "text":
                f[name] = np.array([b"abc", b"de"])
            elif kind == "huge":
                f.create_dataset(name, shape=(2**28,), dtype="<f4")
            elif kind == "compressed":
                f.create_dataset(name, data=np.zeros((64, 64), np.float32), compression="gzip")
        return

    return change


def check(worker, path):
    ours = worker.call("h5_ours", str(path))
    assert ours[0] == "ok", f"our reader failed outside its contract: {ours}"
    status, value = ours[1]
    if status == "refused":
        assert str(path) in value
        return status
    theirs = worker.call("h5_raw", str(path))
    assert theirs[0] == "ok", f"we read a file h5py cannot: {theirs}"
    assert value == theirs[1]
    flat = b"".join(summary[3] for summary in value.values())
    assert np.float32(SECRET).tobytes() not in flat, "weights came from another file"
    return status


@fuzz_settings(max_examples=40)
@given(layout=layouts())
def test_keras_layout_files_read_bit_exact(worker, paths, layout):
    write(paths[0], *layout)
    assert check(worker, paths[0]) == "ok"


@fuzz_settings(max_examples=100)
@given(layout=layouts(), data=st.data())
def test_changed_h5_files_are_read_as_h5py_reads_them_or_refused(worker, paths, layout, data):
    write(paths[0], *layout)
    data.draw(changes(paths))(paths[0])
    check(worker, paths[0])
