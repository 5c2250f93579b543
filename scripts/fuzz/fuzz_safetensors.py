"""Coverage-guided fuzzing of wav2vec2.io.safetensors_file with atheris.

    python scripts/fuzz/fuzz_safetensors.py -max_total_time=600
    FUZZ_DIFFERENTIAL=1 python scripts/fuzz/fuzz_safetensors.py ...  # compare with safetensors.torch

The first input byte picks what the rest is: 0 a whole file; 1 a header (JSON text) followed by the
tensor bytes, with the 8-byte length prefix made for it, so mutations reach the header's fields.
"""
import struct

import atheris
import numpy as np

import harness
from fuzz.support import summarize

with atheris.instrument_imports(include=["wav2vec2"]):
    from wav2vec2.io.safetensors_file import read_safetensors


def as_file(data: bytes) -> bytes:
    mode, body = (data[0] % 2, data[1:]) if data else (0, b"")
    if mode == 1:
        header, _, tensors = body.partition(b"\n")
        return struct.pack("<Q", len(header)) + header + tensors
    return body


def seeds():
    import ml_dtypes
    from safetensors.numpy import save

    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "h": np.ones(3, np.float16),
             "b": np.ones(2, ml_dtypes.bfloat16), "i": np.arange(3), "e": np.zeros((0, 2), np.uint8)}
    data = save(state, metadata={"format": "pt"})
    yield b"\x00" + data
    (length,) = struct.unpack("<Q", data[:8])
    yield b"\x01" + data[8:8 + length] + b"\n" + data[8 + length:]


def main():
    path = harness.scratch("model.safetensors")
    differential = harness.env_flag("FUZZ_DIFFERENTIAL")

    def test_one_input(data: bytes):
        path.write_bytes(as_file(data))
        result = harness.judge(read_safetensors, path)
        if result is not None and differential:
            from safetensors.torch import load_file

            theirs = load_file(path)
            assert summarize(dict(sorted(result.items()))) == summarize(dict(sorted(theirs.items())))

    harness.run(test_one_input, seeds)


if __name__ == "__main__":
    main()
