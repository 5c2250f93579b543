"""Coverage-guided fuzzing of wav2vec2.io.torch_pickle (pytorch_model.bin, fairseq .pt) with atheris.

    pip install -e ".[fuzz,torch]"
    python scripts/fuzz/fuzz_torch_pickle.py -max_total_time=600            # 10 minutes
    python scripts/fuzz/fuzz_torch_pickle.py CORPUS_DIR -jobs=2 -workers=2  # keep a corpus
    FUZZ_DIFFERENTIAL=1 python scripts/fuzz/fuzz_torch_pickle.py ...        # compare with torch.load

The first input byte picks what the rest is: 0 a whole file; 1 a pickle wrapped into a torch zip
(records and CRCs made around it, so mutations reach the pickle machine); 2 the same as a legacy file;
3 a pickle read with fairseq's config objects allowed. Every result is checked to lie inside the bytes
read; with FUZZ_DIFFERENTIAL=1 it must also equal torch.load(weights_only=True)'s.
"""
import io

import atheris

import harness
from fuzz.archives import Tensor, Zip, dumps, legacy
from fuzz.support import assert_inside_buffers, summarize

with atheris.instrument_imports(include=["wav2vec2"]):
    from wav2vec2.io import torch_pickle

STORAGES = {"0": bytes(range(64)), "1": bytes(16)}


def as_file(data: bytes) -> bytes:
    mode, body = (data[0] % 4, data[1:]) if data else (0, b"")
    if mode == 1 or mode == 3:
        return Zip(body, STORAGES).dumps()
    if mode == 2:
        return legacy(body, {"0": (STORAGES["0"], 4)})
    return body


def seeds():
    import torch

    tensors = {"w": Tensor(numel=16, size=(4, 4), stride=(4, 1)), "b": Tensor(storage="ByteStorage", key="1", numel=16, size=(16,))}
    yield b"\x01" + dumps(tensors)
    yield b"\x02" + dumps({"w": Tensor(numel=16, size=(2, 2), stride=(1, 2))}, legacy=True)
    yield b"\x03" + dumps({"model": tensors, "cfg": {"model": {"encoder_layers": 2}}})
    for zip_format in (True, False):
        buffer = io.BytesIO()
        base = torch.arange(12.0).reshape(3, 4)
        torch.save({"base": base, "t": base.T, "e": base[:1].expand(5, 4), "p": torch.nn.Parameter(base[1])}, buffer,
                   _use_new_zipfile_serialization=zip_format)
        yield b"\x00" + buffer.getvalue()


def main():
    path = harness.scratch("pytorch_model.bin")
    differential = harness.env_flag("FUZZ_DIFFERENTIAL")

    def test_one_input(data: bytes):
        file = as_file(data)
        path.write_bytes(file)
        config = bool(data) and data[0] % 4 == 3
        result = harness.judge(lambda p: torch_pickle.load(p, allow_config_objects=config), path,
                               lambda obj: assert_inside_buffers(obj, len(file)))
        if result is not None and differential and not config:
            import torch

            try:
                theirs = torch.load(path, weights_only=True, map_location="cpu")
            except Exception as e:
                raise AssertionError(f"we read a file torch.load refuses: {e}") from None
            assert summarize(result) == summarize(theirs), "we read other values than torch"

    harness.run(test_one_input, seeds)


if __name__ == "__main__":
    main()
