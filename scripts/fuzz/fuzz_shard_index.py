"""Coverage-guided fuzzing of the shard index reader (wav2vec2.io.checkpoint) with atheris.

    python scripts/fuzz/fuzz_shard_index.py -max_total_time=600

Inputs are the text of ``model.safetensors.index.json`` in a checkpoint directory that holds two
real shards; a decoy shard beside the directory holds a weight that must never be returned.
"""
import json

import atheris
import numpy as np

import harness

with atheris.instrument_imports(include=["wav2vec2"]):
    from wav2vec2.io import checkpoint

DECOY = 1234.5


def make_checkpoint():
    directory = harness.scratch("checkpoint")
    shards = {"model-00001-of-00002.safetensors": {"encoder.layer_norm.weight": np.ones(4, np.float32)},
              "model-00002-of-00002.safetensors": {"encoder.layer_norm.bias": np.zeros(4, np.float32)},
              "../decoy.safetensors": {"masked_spec_embed": np.full(4, DECOY, np.float32)}}
    for name, state in shards.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        checkpoint.safetensors_file.write_safetensors(state, directory / name)
    return directory, {k: v for k, v in shards.items() if not k.startswith("..")}


def seeds():
    _, shards = make_checkpoint()
    weight_map = {name: shard for shard, state in shards.items() for name in state}
    yield json.dumps({"metadata": {"total_size": 32}, "weight_map": weight_map}).encode()
    yield json.dumps({"weight_map": {**weight_map, "masked_spec_embed": "../decoy.safetensors"}}).encode()


def main():
    directory, _ = make_checkpoint()
    index = directory / "model.safetensors.index.json"

    def check(state):
        assert not any(np.any(np.asarray(v) == DECOY) for v in state.values()), "read a shard outside the checkpoint"

    def test_one_input(data: bytes):
        index.write_bytes(data)
        try:
            checkpoint.read_state_dict(directory)
        except (ValueError, FileNotFoundError) as e:
            assert str(index) in str(e), f"the error does not name the index: {e}"
            return
        check(checkpoint.read_state_dict(directory))

    harness.run(test_one_input, seeds)


if __name__ == "__main__":
    main()
