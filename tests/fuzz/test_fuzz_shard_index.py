"""Fuzzing the shard index reader: whatever JSON ``model.safetensors.index.json`` holds, reading the
checkpoint gives exactly the weights of the shards the index names, as the reference joins them to the
checkpoint directory, or a ValueError (FileNotFoundError for a missing shard) naming the index. No file
outside the checkpoint is ever read (a decoy beside it holds a weight that must never appear)."""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz.support import fuzz_settings, refusal_or_result, summarize
from wav2vec2.io import read_state_dict, write_state_dict
from wav2vec2.io.checkpoint import SAFETENSORS_NAME

SHARDS = {
    "model-00001-of-00002.safetensors": {"encoder.layer_norm.weight": np.ones(4, np.float32)},
    "model-00002-of-00002.safetensors": {"encoder.layer_norm.bias": np.full(4, 2.0, np.float32)},
    "sub/model-00003.safetensors": {"masked_spec_embed": np.arange(4, dtype=np.float32)},
}
DECOY = {"decoy.weight": np.full(4, 1234.5, np.float32), "masked_spec_embed": np.full(4, 1234.5, np.float32)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_index")
    directory = root / "checkpoint"
    for name, state in [*SHARDS.items(), ("../decoy.safetensors", DECOY), ("model.bin", DECOY)]:
        target = (directory / name).resolve()
        write_state_dict(state, target.parent / "tmp")
        (target.parent / "tmp" / SAFETENSORS_NAME).rename(target)
        (target.parent / "tmp").rmdir()
    return directory


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
                           max_leaves=8)
shard_names = st.sampled_from([*SHARDS, "../decoy.safetensors", "/etc/passwd", "model.bin", "sub/../model-00001-of-00002.safetensors",
                               "missing.safetensors", "./model-00001-of-00002.safetensors", "sub//model-00003.safetensors",
                               "sub\\model-00003.safetensors", "", "x" * 300 + ".safetensors"]) | json_values
weight_names = st.sampled_from(["encoder.layer_norm.weight", "encoder.layer_norm.bias", "masked_spec_embed", "decoy.weight",
                                "absent"]) | st.text(max_size=6)
PAIRS = [(weight, shard) for shard, state in SHARDS.items() for weight in state]


@st.composite
def near_valid_maps(draw):
    """The weights of some shards, as an index lists them, with at most one entry changed."""
    weight_map = dict(draw(st.lists(st.sampled_from(PAIRS), min_size=1, unique=True)))
    if draw(st.booleans()):
        weight_map[draw(weight_names)] = draw(shard_names)
    return weight_map


indices = st.one_of(
    st.fixed_dictionaries({"weight_map": near_valid_maps()}, optional={"metadata": json_values}),
    st.fixed_dictionaries({"weight_map": near_valid_maps()}),
    st.fixed_dictionaries({"weight_map": st.dictionaries(weight_names, shard_names, max_size=4)},
                          optional={"metadata": json_values}),
    st.fixed_dictionaries({"weight_map": json_values}),
    json_values,
)


def expected(index):
    """The reference's reading of a well-formed index: the union of the shards it names."""
    state = {}
    for shard in dict.fromkeys(index["weight_map"].values()):
        state.update(SHARDS[shard])
    assert set(index["weight_map"]) <= set(state)
    return state


@fuzz_settings(max_examples=150)
@given(index=indices)
def test_any_index_reads_its_shards_or_is_refused(checkpoint, index):
    path = checkpoint / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    status, state = refusal_or_result(read_state_dict, checkpoint)
    if status == "ok":
        assert "decoy.weight" not in state and not np.any(state.get("masked_spec_embed", 0) == 1234.5)
        assert summarize(state) == summarize(expected(index))
    else:
        assert str(path) in state
