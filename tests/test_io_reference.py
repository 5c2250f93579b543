"""Checkpoint files against the reference: what it writes we read bit-exactly, what we write it loads."""
import json
import os

import numpy as np
import pytest

from conftest import reference_config, small_config
from wav2vec2.io import read_state_dict, write_state_dict
from wav2vec2.spec import names

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def torch_state(model):
    return {names.normalize_key(k): v.detach().numpy() for k, v in model.state_dict().items()}


def assert_states_equal(got, expected):
    assert list(got) == list(expected) or set(got) == set(expected), sorted(set(got) ^ set(expected))
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def waveform():
    return np.random.default_rng(1).standard_normal((1, 400)).astype(np.float32)


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory):
    """A reference Wav2Vec2ForCTC (stable arch, so Flax can load it too) saved as safetensors."""
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(reference_config(small_config("stable"))).eval()
    directory = tmp_path_factory.mktemp("ref_ctc")
    model.save_pretrained(directory)
    return directory, model


@pytest.fixture(scope="module")
def base_pretraining_model():
    torch.manual_seed(1)
    return transformers.Wav2Vec2ForPreTraining(reference_config(small_config("base"))).eval()


# ------------------------------------------------------------------------------- reading theirs
def test_reads_reference_safetensors_bit_exact(ctc_dir):
    directory, model = ctc_dir
    assert (directory / "model.safetensors").exists()
    assert_states_equal(read_state_dict(directory), torch_state(model))


@pytest.mark.parametrize("safe", [False, True])
def test_reads_reference_bin_and_sharded_bit_exact(tmp_path, base_pretraining_model, safe):
    expected = torch_state(base_pretraining_model)
    base_pretraining_model.save_pretrained(tmp_path / "single", safe_serialization=safe)
    assert_states_equal(read_state_dict(tmp_path / "single"), expected)
    base_pretraining_model.save_pretrained(tmp_path / "sharded", safe_serialization=safe, max_shard_size="2KB")
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    assert (tmp_path / "sharded" / index).exists()
    assert_states_equal(read_state_dict(tmp_path / "sharded"), expected)


@pytest.mark.parametrize("head", ["model", "ctc", "sequence_classification"])
def test_reads_reference_tf_h5_bit_exact(tmp_path, head):
    pytest.importorskip("tf_keras")
    cls_name = {"model": "Wav2Vec2Model", "ctc": "Wav2Vec2ForCTC",
                "sequence_classification": "Wav2Vec2ForSequenceClassification"}[head]
    torch.manual_seed(2)
    model = getattr(transformers, cls_name)(reference_config(small_config("base"))).eval()
    model.save_pretrained(tmp_path / "pt")
    tf_model = getattr(transformers, "TF" + cls_name).from_pretrained(tmp_path / "pt", from_pt=True)
    tf_model.save_pretrained(tmp_path / "tf")
    assert (tmp_path / "tf" / "tf_model.h5").exists()
    assert_states_equal(read_state_dict(tmp_path / "tf"), torch_state(model))


def test_reads_reference_flax_msgpack_bit_exact(tmp_path, ctc_dir):
    pytest.importorskip("flax")
    directory, model = ctc_dir
    flax_model = transformers.FlaxWav2Vec2ForCTC.from_pretrained(directory, from_pt=True)
    flax_model.save_pretrained(tmp_path / "single")
    assert (tmp_path / "single" / "flax_model.msgpack").exists()
    assert_states_equal(read_state_dict(tmp_path / "single"), torch_state(model))
    flax_model.save_pretrained(tmp_path / "sharded", max_shard_size="2KB")
    assert (tmp_path / "sharded" / "flax_model.msgpack.index.json").exists()
    assert_states_equal(read_state_dict(tmp_path / "sharded"), torch_state(model))


def test_reads_old_weight_norm_spelling(tmp_path, ctc_dir):
    from safetensors.numpy import save_file

    _, model = ctc_dir
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v.numpy()
           for k, v in model.state_dict().items()}
    assert any(k.endswith("weight_g") for k in old)
    save_file(old, str(tmp_path / "model.safetensors"))
    assert_states_equal(read_state_dict(tmp_path), torch_state(model))


# ------------------------------------------------------------------------------- theirs read ours
@pytest.mark.parametrize("format", ["safetensors", "pytorch"])
@pytest.mark.parametrize("sharded", [False, True])
def test_reference_torch_loads_ours(tmp_path, ctc_dir, format, sharded):
    directory, model = ctc_dir
    state = read_state_dict(directory)
    write_state_dict(state, tmp_path, format=format, max_shard_size="3KB" if sharded else None)
    if sharded:
        assert len([p for p in os.listdir(tmp_path) if "-of-" in p]) > 1
    model.config.save_pretrained(tmp_path)
    loaded = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path).eval()
    assert_states_equal(torch_state(loaded), torch_state(model))
    with torch.no_grad():
        x = torch.from_numpy(waveform())
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


@pytest.mark.parametrize("sharded", [False, True])
def test_reference_tf_loads_ours(tmp_path, ctc_dir, sharded):
    pytest.importorskip("tf_keras")
    directory, model = ctc_dir
    write_state_dict(read_state_dict(directory), tmp_path, format="tensorflow",
                     max_shard_size="3KB" if sharded else None)
    model.config.save_pretrained(tmp_path)
    tf_model = transformers.TFWav2Vec2ForCTC.from_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(torch.from_numpy(waveform())).logits.numpy()
    np.testing.assert_allclose(tf_model(waveform(), training=False).logits.numpy(), expected, atol=1e-4)
    ours = {"/".join(w.name.split("/")[1:]): w.numpy() for w in tf_model.weights}
    for name, value in names.to_tf_weights(torch_state(model)).items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


@pytest.mark.parametrize("sharded", [False, True])
def test_reference_flax_loads_ours(tmp_path, ctc_dir, sharded):
    pytest.importorskip("flax")
    directory, model = ctc_dir
    write_state_dict(read_state_dict(directory), tmp_path, format="flax", max_shard_size="3KB" if sharded else None)
    model.config.save_pretrained(tmp_path)
    flax_model = transformers.FlaxWav2Vec2ForCTC.from_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(torch.from_numpy(waveform())).logits.numpy()
    np.testing.assert_allclose(np.asarray(flax_model(waveform()).logits), expected, atol=1e-4)


def test_reference_flax_serialization_reads_our_msgpack(tmp_path, ctc_dir):
    serialization = pytest.importorskip("flax.serialization")
    from flax.traverse_util import flatten_dict

    directory, model = ctc_dir
    state = read_state_dict(directory)
    write_state_dict(state, tmp_path, format="flax")
    tree = serialization.msgpack_restore((tmp_path / "flax_model.msgpack").read_bytes())
    expected = names.to_flax_tree(torch_state(model))
    flat = flatten_dict(tree)
    assert set(flat) == set(flatten_dict(expected))
    for key, value in flatten_dict(expected).items():
        np.testing.assert_array_equal(flat[key], value)
    # and the bytes flax itself would write are the bytes we write
    assert serialization.to_bytes(names.to_flax_tree(state)) == (tmp_path / "flax_model.msgpack").read_bytes()


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("format", ["safetensors", "pytorch", "tensorflow", "flax"])
@pytest.mark.parametrize("head", ["model", "xvector", "pretraining"])
def test_round_trip_bit_exact(tmp_path, format, head):
    config = small_config("base", use_weighted_layer_sum=True)
    rng = np.random.default_rng(3)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in names.canonical_shapes(config, head).items()}
    write_state_dict(state, tmp_path, format=format)
    assert_states_equal(read_state_dict(tmp_path), state)


@pytest.mark.parametrize("format", ["safetensors", "pytorch", "tensorflow", "flax"])
def test_sharded_round_trip_and_index(tmp_path, format):
    config = small_config("stable")
    rng = np.random.default_rng(4)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in names.canonical_shapes(config, "ctc").items()}
    paths = write_state_dict(state, tmp_path, format=format, max_shard_size=2000)
    index_path = [p for p in paths if p.name.endswith(".index.json")][0]
    index = json.loads(index_path.read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and all((tmp_path / s).exists() for s in shards)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in state.values())
    assert_states_equal(read_state_dict(tmp_path), state)
    assert_states_equal(read_state_dict(index_path), state)


def test_half_precision_dtypes_survive(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    state = {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.ones(3, dtype=ml_dtypes.bfloat16)}
    for format in ("safetensors", "pytorch"):
        write_state_dict(state, tmp_path / format, format=format)
        back = read_state_dict(tmp_path / format)
        assert back["b"].dtype == state["b"].dtype and back["a"].dtype == np.float16
        np.testing.assert_array_equal(back["a"], state["a"])


def test_long_h5_attributes_are_chunked_as_keras_does(tmp_path):
    """Deep models list more weight names than one HDF5 attribute holds (64 KiB)."""
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("tf_keras")
    from transformers.modeling_tf_utils import load_attributes_from_hdf5_group

    config = small_config("stable", num_hidden_layers=60, hidden_size=4, num_attention_heads=1,
                          intermediate_size=4, num_conv_pos_embedding_groups=1, conv_dim=(4, 4, 4))
    state = {k: np.zeros(s, np.float32) for k, s in names.canonical_shapes(config, "ctc").items()}
    write_state_dict(state, tmp_path, format="tensorflow")
    with h5py.File(tmp_path / "tf_model.h5") as f:
        group = f["wav2vec2"]
        assert "weight_names" not in group.attrs and "weight_names1" in group.attrs
        # the reference's own attribute reader sees every name, in order
        expected = [n for n in names.to_tf_weights(state) if n.startswith("wav2vec2/")]
        assert [n.split("/", 1)[1] for n in load_attributes_from_hdf5_group(group, "weight_names")] == expected
    assert_states_equal(read_state_dict(tmp_path), state)


def test_mms_adapter_files_both_ways(tmp_path):
    from safetensors.torch import save_file

    from wav2vec2.io import read_adapter, write_adapter

    config = small_config("stable", adapter_attn_dim=3)
    torch.manual_seed(6)
    model = transformers.Wav2Vec2ForCTC(reference_config(config)).eval()
    model.save_pretrained(tmp_path)
    # theirs -> ours
    save_file({k: v.detach().contiguous() for k, v in model._get_adapters().items()}, str(tmp_path / "adapter.abc.safetensors"))
    adapter = read_adapter(tmp_path, "abc")
    assert {k: v.shape for k, v in adapter.items()} == names.adapter_shapes(config)
    expected = torch_state(model)
    for key, value in adapter.items():
        np.testing.assert_array_equal(value, expected[key])
    # ours -> theirs: a new language with other adapter weights and a bigger vocabulary
    rng = np.random.default_rng(7)
    other = {k: rng.standard_normal(s).astype(np.float32)
             for k, s in names.adapter_shapes(config.replace(vocab_size=20)).items()}
    write_adapter({**expected, **other}, tmp_path, "xyz")
    loaded = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    loaded.load_adapter("xyz")
    got = torch_state(loaded)
    for key, value in other.items():
        np.testing.assert_array_equal(got[key], value)
    with pytest.raises(FileNotFoundError, match=r"adapter\.fra\.safetensors"):
        read_adapter(tmp_path, "fra")
