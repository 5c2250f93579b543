"""The Keras 3 backend against the reference TF classes (tf-keras), and checkpoint round trips.

The reference TF classes load the perturbed reference PyTorch weights with ``from_pt=True``; a
``tf_model.h5`` written by this backend must load into them and give the same logits.
"""
import logging

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tf_keras")

from conftest import reference_config, small_config  # noqa: E402
from test_tf_modeling import model_pair, padded_batch, perturbed_reference, reference_state  # noqa: E402
from wav2vec2.backends import tensorflow as W  # noqa: E402

REFERENCE_TF_HEADS = ("model", "ctc", "sequence_classification")


def reference_tf(reference, directory):
    """The reference TF class of a reference PyTorch model, with its weights."""
    reference.save_pretrained(directory)
    return getattr(transformers, "TF" + type(reference).__name__).from_pretrained(directory, from_pt=True)


def first_output(outputs):
    return np.asarray(outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs.logits)


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("head", REFERENCE_TF_HEADS)
def test_matches_reference_tf_classes(tmp_path, arch, head):
    config = small_config(arch)
    reference, model = model_pair(config, head)
    theirs = reference_tf(reference, tmp_path)
    waveforms, attention_mask = padded_batch()
    expected = first_output(theirs(waveforms, attention_mask=attention_mask, training=False))
    np.testing.assert_allclose(first_output(model(waveforms, attention_mask=attention_mask)), expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_h5_written_here_loads_into_reference_tf(tmp_path, arch):
    pytest.importorskip("wav2vec2.io")
    config = small_config(arch)
    _, model = model_pair(config, "ctc")
    model.save_pretrained(tmp_path)  # config.json + tf_model.h5
    assert (tmp_path / "tf_model.h5").is_file() and (tmp_path / "config.json").is_file()
    theirs = transformers.TFWav2Vec2ForCTC.from_pretrained(tmp_path)
    waveforms, attention_mask = padded_batch()
    np.testing.assert_allclose(
        model(waveforms, attention_mask=attention_mask).logits.numpy(),
        theirs(waveforms, attention_mask=attention_mask, training=False).logits.numpy(),
        atol=1e-5,
    )


def test_loads_h5_written_by_reference_tf(tmp_path):
    pytest.importorskip("wav2vec2.io")
    config = small_config("stable")
    reference, expected_model = model_pair(config, "ctc")
    reference_tf(reference, tmp_path / "pt").save_pretrained(tmp_path / "tf")
    model = W.Wav2Vec2ForCTC.from_pretrained(tmp_path / "tf")
    waveforms, _ = padded_batch()
    np.testing.assert_allclose(model(waveforms).logits.numpy(), expected_model(waveforms).logits.numpy(), atol=1e-6)


@pytest.mark.parametrize("format", ["tensorflow", "safetensors"])
def test_save_and_load_round_trip_is_bit_exact(tmp_path, format):
    pytest.importorskip("wav2vec2.io")
    config = small_config("base", use_weighted_layer_sum=True)
    _, model = model_pair(config, "sequence_classification")
    model.save_pretrained(tmp_path, format=format)
    loaded = W.Wav2Vec2ForSequenceClassification.from_pretrained(tmp_path)
    before, after = model.canonical_state_dict(), loaded.canonical_state_dict()
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    waveforms, attention_mask = padded_batch()
    np.testing.assert_array_equal(
        loaded(waveforms, attention_mask=attention_mask).logits.numpy(),
        model(waveforms, attention_mask=attention_mask).logits.numpy(),
    )


def test_head_weights_missing_from_checkpoint_are_initialised_with_a_warning(tmp_path, caplog):
    pytest.importorskip("wav2vec2.io")
    config = small_config("base")
    _, bare = model_pair(config, "model")
    bare.save_pretrained(tmp_path, format="safetensors")
    with caplog.at_level(logging.WARNING):
        model = W.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    assert "lm_head.weight" in caplog.text
    body = model.wav2vec2.canonical_state_dict()
    for name, value in bare.canonical_state_dict().items():
        np.testing.assert_array_equal(body[name], value, err_msg=name)


def test_mms_target_lang_loads_adapter_and_resizes_vocabulary(tmp_path):
    pytest.importorskip("wav2vec2.io")
    from safetensors.numpy import save_file

    config = small_config("stable", adapter_attn_dim=4)
    main = perturbed_reference(config, "ctc", seed=0)
    main.save_pretrained(tmp_path)
    # The French adapter comes from another model with a 7-token vocabulary.
    french = perturbed_reference(config.replace(vocab_size=7), "ctc", seed=5)
    french_state = reference_state(french)
    adapter = {k: v for k, v in french_state.items() if ".adapter_layer." in k or k.startswith("lm_head.")}
    save_file(adapter, str(tmp_path / "adapter.fra.safetensors"))

    model = W.Wav2Vec2ForCTC.from_pretrained(tmp_path, target_lang="fra")
    assert model.config.vocab_size == 7 and model.target_lang == "fra"
    # Expected: the main body with the French adapters and head, in the reference PyTorch class.
    expected = transformers.Wav2Vec2ForCTC(reference_config(config.replace(vocab_size=7))).eval()
    main_state = main.state_dict()
    merged = {
        k: v if (".adapter_layer." in k or k.startswith("lm_head.")) else main_state[k] for k, v in french.state_dict().items()
    }
    expected.load_state_dict(merged)
    waveforms, attention_mask = padded_batch()
    with torch.no_grad():
        logits = expected(torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask)).logits.numpy()
    np.testing.assert_allclose(model(waveforms, attention_mask=attention_mask).logits.numpy(), logits, atol=1e-5)

    with pytest.raises(FileNotFoundError, match="no adapter for language 'deu'"):  # as in every backend
        model.load_adapter("deu")
