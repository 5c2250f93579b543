"""Coverage-guided fuzzing of wav2vec2.io.keras_h5 with atheris.

    python scripts/fuzz/fuzz_keras_h5.py -max_total_time=600 -rss_limit_mb=4096
    FUZZ_DIFFERENTIAL=1 python scripts/fuzz/fuzz_keras_h5.py ...  # compare with h5py's own reads

Inputs are whole files (HDF5 parsed by libhdf5: a crash there is a finding too); seeds are Keras
``save_weights`` layouts, unsharded and sharded.
"""
import atheris
import numpy as np

import harness
from fuzz.support import summarize

with atheris.instrument_imports(include=["wav2vec2"]):
    from wav2vec2.io import keras_h5


def seeds():
    import h5py

    path = harness.scratch("seed.h5")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"wav2vec2", b"lm_head"])
        for layer, weights in {"wav2vec2": ["tf/wav2vec2/masked_spec_embed:0"], "lm_head": ["tf/lm_head/kernel:0", "tf/lm_head/bias:0"]}.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([w.encode() for w in weights])
            for i, weight in enumerate(weights):
                group.create_dataset(weight, data=np.arange(6, dtype=">f4" if i else "<f4").reshape(2, 3))
    yield path.read_bytes()
    with h5py.File(path, "w") as f:
        f.create_dataset("wav2vec2/lm_head/kernel:0", data=np.ones((2, 2), np.float16))
        f.attrs["layer_names"] = np.array([b"wav2vec2/lm_head/kernel:0"])
    yield path.read_bytes()


def main():
    from fuzz.oracles import h5_raw

    path = harness.scratch("tf_model.h5")
    differential = harness.env_flag("FUZZ_DIFFERENTIAL")

    def test_one_input(data: bytes):
        path.write_bytes(data)
        result = harness.judge(keras_h5.read_tf_weights, path)
        if result is not None and differential:
            assert {k: summarize(v) for k, v in result.items()} == h5_raw(path)

    harness.run(test_one_input, seeds)


if __name__ == "__main__":
    main()
