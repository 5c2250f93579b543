"""match_state_dict: prefixes, weight-norm spellings, missing head keys, discarded keys, errors."""
import numpy as np
import pytest

from conftest import small_config
from wav2vec2.io import match_state_dict
from wav2vec2.spec import names


def state_for(config, head, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in names.canonical_shapes(config, head).items()}


@pytest.fixture
def config():
    return small_config("stable")


def test_same_head_loads_everything(config):
    state = state_for(config, "ctc")
    report = match_state_dict(state, names.canonical_shapes(config, "ctc"))
    assert report.loaded == list(state) and report.missing == [] and report.discarded == []
    assert report.prefix == "kept"
    assert all(report.state[k] is state[k] for k in state)


def test_pretraining_checkpoint_into_ctc_discards_quantizer_and_initialises_lm_head(config):
    report = match_state_dict(state_for(config, "pretraining"), names.canonical_shapes(config, "ctc"))
    assert report.missing == ["lm_head.weight", "lm_head.bias"]
    assert set(report.discarded) == names.head_keys(config, "pretraining")
    assert set(report.state) == set(names.canonical_shapes(config, "ctc")) - {"lm_head.weight", "lm_head.bias"}


def test_bare_checkpoint_into_head_gets_prefix(config):
    bare = state_for(config, "model")
    report = match_state_dict(bare, names.canonical_shapes(config, "xvector"))
    assert report.prefix == "added"
    assert set(report.missing) == names.head_keys(config, "xvector")
    np.testing.assert_array_equal(report.state["wav2vec2.encoder.layer_norm.weight"], bare["encoder.layer_norm.weight"])


def test_head_checkpoint_into_bare_model_strips_prefix(config):
    # x-vector's own "feature_extractor.weight" must not be mistaken for the body's feature extractor
    head = state_for(config, "xvector")
    report = match_state_dict(head, names.canonical_shapes(config, "model"))
    assert report.prefix == "stripped"
    assert report.missing == []
    assert set(report.discarded) == names.head_keys(config, "xvector")
    assert list(report.state) == list(names.canonical_shapes(config, "model"))


def test_parametrization_spelling_is_mapped(config):
    state = state_for(config, "ctc")
    prefix = "wav2vec2.encoder.pos_conv_embed.conv."
    state[prefix + "parametrizations.weight.original0"] = state.pop(prefix + "weight_g")
    state[prefix + "parametrizations.weight.original1"] = state.pop(prefix + "weight_v")
    report = match_state_dict(state, names.canonical_shapes(config, "ctc"))
    assert prefix + "weight_g" in report.state and report.missing == []


def test_masked_spec_embed_is_optional_both_ways(config):
    no_masking = config.replace(mask_time_prob=0.0)
    report = match_state_dict(state_for(config, "ctc"), names.canonical_shapes(no_masking, "ctc"))
    assert report.discarded == ["wav2vec2.masked_spec_embed"]
    report = match_state_dict(state_for(no_masking, "ctc"), names.canonical_shapes(config, "ctc"))
    assert report.missing == ["wav2vec2.masked_spec_embed"]


def test_shape_mismatch_names_key_and_shapes(config):
    state = state_for(config.replace(vocab_size=30), "ctc")
    with pytest.raises(ValueError, match=r"lm_head\.weight: expected \(12, 16\), got \(30, 16\)"):
        match_state_dict(state, names.canonical_shapes(config, "ctc"))


def test_unknown_keys_are_listed(config):
    state = state_for(config, "ctc")
    state["wav2vec2.encoder.extra.weight"] = np.zeros(2)
    state["decoder.weight"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"\['decoder\.weight', 'wav2vec2\.encoder\.extra\.weight'\]"):
        match_state_dict(state, names.canonical_shapes(config, "ctc"))


def test_mms_adapter_weights_without_adapter_config_are_unknown(config):
    state = state_for(config.replace(adapter_attn_dim=4), "ctc")
    with pytest.raises(ValueError, match="adapter_layer"):
        match_state_dict(state, names.canonical_shapes(config, "ctc"))


def test_missing_body_keys_are_an_error(config):
    state = state_for(config, "ctc")
    del state["wav2vec2.encoder.layers.1.final_layer_norm.bias"]
    with pytest.raises(ValueError, match=r"body.*encoder\.layers\.1\.final_layer_norm\.bias"):
        match_state_dict(state, names.canonical_shapes(config, "ctc"))
