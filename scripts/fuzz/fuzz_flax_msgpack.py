"""Coverage-guided fuzzing of wav2vec2.io.flax_msgpack with atheris.

    python scripts/fuzz/fuzz_flax_msgpack.py -max_total_time=600
    FUZZ_DIFFERENTIAL=1 python scripts/fuzz/fuzz_flax_msgpack.py ...  # compare with flax.serialization

Inputs are whole files; seeds are params trees as flax writes them (with arrays, scalars and a chunked
array record).
"""
import atheris
import numpy as np

import harness
from fuzz.support import summarize

with atheris.instrument_imports(include=["wav2vec2"]):
    from wav2vec2.io import flax_msgpack


def seeds():
    import msgpack

    tree = {"wav2vec2": {"encoder": {"layers": {"0": {"kernel": np.ones((2, 3), np.float32), "bias": np.zeros(3)}}},
                         "masked_spec_embed": np.arange(4, dtype=np.float16)},
            "lm_head": {"kernel": np.ones((3, 5), np.int8), "scale": np.float32(2.0)}}
    yield msgpack.packb(tree, default=flax_msgpack._pack_array, strict_types=True)
    chunked = {"__msgpack_chunked_array__": True, "shape": {"0": 6},
               "chunks": {"0": np.arange(4.0), "1": np.arange(2.0)}}
    yield msgpack.packb({"a": {"b": chunked}}, default=flax_msgpack._pack_array, strict_types=True)


def main():
    path = harness.scratch("flax_model.msgpack")
    differential = harness.env_flag("FUZZ_DIFFERENTIAL")

    def test_one_input(data: bytes):
        path.write_bytes(data)
        result = harness.judge(flax_msgpack.read_flax_tree, path)
        if result is not None:
            harness.judge(flax_msgpack.read_msgpack, path)  # and on to canonical names
            if differential:
                from flax.serialization import msgpack_restore

                assert summarize(result) == summarize(msgpack_restore(data))

    harness.run(test_one_input, seeds)


if __name__ == "__main__":
    main()
