"""Oracles (and readers that call into C libraries) for the fuzz tests, served by ``support.Worker``
in a subprocess: ``python -m fuzz.oracles`` reads (function, args) pickles on stdin and answers
(status, value) pickles on stdout. Our own trusted pickles between our own processes."""
from __future__ import annotations

import pickle
import struct
import sys
import traceback
import warnings

from fuzz.support import summarize


def torch_load(path):
    """What torch.load(weights_only=True) makes of a file, summarised."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return summarize(torch.load(path, weights_only=True, map_location="cpu"))


def h5_raw(path):
    """The oracle for tf_model.h5: h5py's own reads of the layout, following whatever links it finds."""
    import h5py
    import numpy as np

    def names(node, attribute):
        if attribute in node.attrs:
            values = list(node.attrs[attribute])
        else:
            values, chunk = [], 0
            while f"{attribute}{chunk}" in node.attrs:
                values.extend(node.attrs[f"{attribute}{chunk}"])
                chunk += 1
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]

    weights = {}
    with h5py.File(path, "r") as f:
        for layer in names(f, "layer_names"):
            node = f[layer]
            if isinstance(node, h5py.Dataset):
                weights[layer] = summarize(np.asarray(node[()]))
                continue
            for weight in names(node, "weight_names"):
                weights[weight.partition("/")[2]] = summarize(np.asarray(node[weight][()]))
    return weights


def h5_ours(path):
    """Our reader, run here because libhdf5 parses the mutated file."""
    from wav2vec2.io.keras_h5 import read_tf_weights

    try:
        weights = read_tf_weights(path)
    except (ValueError, FileNotFoundError) as e:
        return ("refused", str(e))
    return ("ok", {name: summarize(array) for name, array in weights.items()})


FUNCTIONS = {"torch_load": torch_load, "h5_raw": h5_raw, "h5_ours": h5_ours}


def serve():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(8)
        if len(header) < 8:
            return
        function, args = pickle.loads(stdin.read(struct.unpack("<Q", header)[0]))
        try:
            reply = ("ok", FUNCTIONS[function](*args))
        except Exception as e:
            reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
        message = pickle.dumps(reply)
        stdout.write(struct.pack("<Q", len(message)) + message)
        stdout.flush()


if __name__ == "__main__":
    serve()
