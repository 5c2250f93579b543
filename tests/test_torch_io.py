"""PyTorch backend weight files: save/load round trips, and checkpoints exchanged with the reference."""
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import small_config  # noqa: E402
from test_torch_parity import batch_inputs, paired_models  # noqa: E402
from wav2vec2.backends import torch as ours  # noqa: E402
from wav2vec2.pretrained import adapter_names  # noqa: E402


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("arch", ["base", "stable"])
def test_save_and_load_round_trip_is_bit_exact(tmp_path, arch, safe_serialization):
    model, _ = paired_models("ctc", small_config(arch))
    model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    expected_file = "model.safetensors" if safe_serialization else "pytorch_model.bin"
    assert (tmp_path / expected_file).is_file() and (tmp_path / "config.json").is_file()

    loaded = ours.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    before, after = model.canonical_state_dict(), loaded.canonical_state_dict()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    x, mask = batch_inputs(padded=True)
    with torch.no_grad():
        assert torch.equal(loaded(x, attention_mask=mask).logits, model(x, attention_mask=mask).logits)


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_reference_loads_what_we_save(tmp_path, safe_serialization):
    config = small_config("stable")
    model, _ = paired_models("ctc", config, seed=11)
    model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    reference = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path).eval()
    x, mask = batch_inputs(padded=True)
    with torch.no_grad():
        expected = reference(x, attention_mask=mask).logits
        actual = model(x, attention_mask=mask).logits
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_we_load_what_the_reference_saves(tmp_path, safe_serialization):
    config = small_config("base")
    _, reference = paired_models("ctc", config, seed=12)
    reference.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    model = ours.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    assert not model.training
    x, mask = batch_inputs(padded=True)
    with torch.no_grad():
        expected = reference(x, attention_mask=mask).logits
        actual = model(x, attention_mask=mask).logits
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=0)


def test_head_weights_missing_from_a_bare_checkpoint_are_initialised_with_a_warning(tmp_path, caplog):
    config = small_config("base")
    body, _ = paired_models("model", config, seed=13)
    body.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        model = ours.Wav2Vec2ForSequenceClassification.from_pretrained(tmp_path)
    assert "classifier.weight" in caplog.text and "projector.weight" in caplog.text
    # the body came from the file
    np.testing.assert_array_equal(
        model.canonical_state_dict()["wav2vec2.encoder.layers.0.attention.q_proj.weight"],
        body.canonical_state_dict()["encoder.layers.0.attention.q_proj.weight"],
    )


def test_head_checkpoint_into_bare_model_drops_the_head(tmp_path):
    model, _ = paired_models("ctc", small_config("stable"), seed=14)
    model.save_pretrained(tmp_path)
    body = ours.Wav2Vec2Model.from_pretrained(tmp_path)
    x, _ = batch_inputs(padded=False)
    with torch.no_grad():
        assert torch.equal(body(x).last_hidden_state, model.wav2vec2(x).last_hidden_state)


def test_from_pretrained_with_target_lang_matches_reference(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    config = small_config("stable", adapter_attn_dim=4)
    model, _ = paired_models("ctc", config, seed=15)
    model.save_pretrained(tmp_path)
    generator = torch.Generator().manual_seed(16)
    own = model.state_dict()
    adapter = {name: torch.randn(own[name].shape, generator=generator) for name in adapter_names(config)
               if not name.startswith("lm_head.")}
    new_vocab_size = config.vocab_size + 5
    adapter["lm_head.weight"] = torch.randn(new_vocab_size, config.hidden_size, generator=generator)
    adapter["lm_head.bias"] = torch.randn(new_vocab_size, generator=generator)
    safetensors_torch.save_file(adapter, str(tmp_path / "adapter.spa.safetensors"))

    loaded = ours.Wav2Vec2ForCTC.from_pretrained(tmp_path, target_lang="spa")
    # The reference needs ignore_mismatched_sizes when the adapter changes the vocabulary size.
    reference = transformers.Wav2Vec2ForCTC.from_pretrained(
        tmp_path, target_lang="spa", ignore_mismatched_sizes=True
    ).eval()
    assert loaded.config.vocab_size == new_vocab_size == reference.config.vocab_size
    x, mask = batch_inputs(padded=True)
    with torch.no_grad():
        expected = reference(x, attention_mask=mask).logits
        actual = loaded(x, attention_mask=mask).logits
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=0)


def test_load_canonical_state_dict_rejects_wrong_keys_and_shapes():
    model = ours.Wav2Vec2Model(small_config("base"))
    state = model.canonical_state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        model.load_canonical_state_dict({k: v for k, v in state.items() if "lm_head" not in k and "q_proj" not in k})
    bad = dict(state)
    bad["encoder.layers.0.attention.q_proj.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="q_proj.weight"):
        model.load_canonical_state_dict(bad)


def test_bfloat16_model_exports_float32_canonical_weights():
    model = ours.Wav2Vec2Model(small_config("base")).to(torch.bfloat16)
    state = model.canonical_state_dict()
    assert all(v.dtype == np.float32 for v in state.values())


@pytest.mark.parametrize("flag", [True, False])
def test_an_old_config_with_gradient_checkpointing_turns_it_on_as_the_reference_does(tmp_path, flag):
    import json

    ours.Wav2Vec2ForCTC(small_config("base")).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["gradient_checkpointing"] = flag
    (tmp_path / "config.json").write_text(json.dumps(config))
    theirs = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    model = ours.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    assert model.wav2vec2.encoder.gradient_checkpointing == theirs.wav2vec2.encoder.gradient_checkpointing == flag
    assert model.wav2vec2.feature_extractor.gradient_checkpointing == flag
    assert "gradient_checkpointing" not in model.config.to_dict()  # consumed, as the reference consumes it
