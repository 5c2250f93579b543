"""Flax backend checkpoints: save_pretrained / from_pretrained round trips, the reference classes
loading what we write (and the reverse), MMS adapters, and load errors."""
import logging

import numpy as np
import pytest

from conftest import reference_config, small_config

jax = pytest.importorskip("jax")
pytest.importorskip("flax")

from wav2vec2 import io  # noqa: E402
from wav2vec2.backends import flax as wf  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  final_dropout=0.0, layerdrop=0.0)


def audio(samples=480, seed=0):
    return np.random.default_rng(seed).standard_normal((2, samples)).astype(np.float32)


def perturb(model, seed=0):
    """Replace every parameter with noise around its value, so that no tensor is trivial."""
    rng = np.random.default_rng(seed)
    model.load_canonical_state_dict(
        {k: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32) for k, v in model.canonical_state_dict().items()}
    )
    return model


@pytest.fixture(scope="module")
def stable_ctc():
    return perturb(wf.Wav2Vec2ForCTC(small_config("stable", **NO_DROPOUT)))


@pytest.mark.parametrize("format", ["flax", "safetensors"])
def test_save_load_round_trip_is_bit_exact(stable_ctc, tmp_path, format):
    stable_ctc.save_pretrained(tmp_path, format=format)
    loaded = wf.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    for key, value in stable_ctc.canonical_state_dict().items():
        np.testing.assert_array_equal(loaded.canonical_state_dict()[key], value, err_msg=key)
    x = audio()
    np.testing.assert_array_equal(loaded(x).logits, stable_ctc(x).logits)


def test_reference_flax_loads_our_msgpack(stable_ctc, tmp_path):
    transformers = pytest.importorskip("transformers")
    stable_ctc.save_pretrained(tmp_path, format="flax")
    assert (tmp_path / "flax_model.msgpack").is_file() and (tmp_path / "config.json").is_file()
    ref = transformers.FlaxWav2Vec2ForCTC.from_pretrained(tmp_path)
    x = audio()
    np.testing.assert_allclose(ref(x).logits, stable_ctc(x).logits, atol=1e-5)


def test_reference_torch_checkpoint_loads(tmp_path):
    """A base-architecture checkpoint saved by the reference PyTorch class (PyTorch-2 weight-norm
    names), which the reference Flax cannot run at all."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = small_config("base", **NO_DROPOUT)
    torch.manual_seed(0)
    ref = transformers.Wav2Vec2ForCTC(reference_config(config)).eval()
    ref.save_pretrained(tmp_path)
    ours = wf.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    x = audio()
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).logits.numpy()
    # the conformance table's float32 tolerance: 1e-5 + 1e-5 * max|expected| (adapter logits reach ~5)
    np.testing.assert_allclose(ours(x).logits, expected, rtol=0, atol=1e-5 * (1 + np.abs(expected).max()))


def test_head_from_bare_checkpoint_initialises_and_warns(tmp_path, caplog):
    bare = perturb(wf.Wav2Vec2Model(small_config("base", **NO_DROPOUT)))
    bare.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        head = wf.Wav2Vec2ForCTC.from_pretrained(tmp_path)
    assert "lm_head.weight" in caplog.text
    x = audio()
    np.testing.assert_array_equal(head(x, output_hidden_states=True).hidden_states[-1], bare(x).last_hidden_state)


def test_load_errors_name_the_key(stable_ctc):
    state = stable_ctc.canonical_state_dict()
    model = wf.Wav2Vec2ForCTC(stable_ctc.config)
    wrong = dict(state, **{"lm_head.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="lm_head.weight"):
        model.load_canonical_state_dict(wrong)
    with pytest.raises(ValueError, match="unknown weight names.*bogus"):
        model.load_canonical_state_dict(dict(state, bogus=np.zeros(1)))
    missing = {k: v for k, v in state.items() if k != "wav2vec2.encoder.layer_norm.bias"}
    with pytest.raises(ValueError, match="missing weights.*encoder.layer_norm.bias"):
        model.load_canonical_state_dict(missing)


def test_mms_adapter_loading_resizes_the_vocabulary(tmp_path):
    """target_lang loads adapter.<lang>.safetensors after the main weights, as the reference does."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = small_config("stable", **NO_DROPOUT, adapter_attn_dim=4)
    model = perturb(wf.Wav2Vec2ForCTC(config))
    model.save_pretrained(tmp_path, format="safetensors")

    # A French adapter with its own 9-symbol alphabet.
    rng = np.random.default_rng(1)
    adapter = {k: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32)
               for k, v in model.canonical_state_dict().items() if ".adapter_layer." in k}
    adapter["lm_head.weight"] = rng.standard_normal((9, config.hidden_size)).astype(np.float32)
    adapter["lm_head.bias"] = rng.standard_normal(9).astype(np.float32)
    io.write_adapter(adapter, tmp_path, "fra")

    ours = wf.Wav2Vec2ForCTC.from_pretrained(tmp_path, target_lang="fra")
    assert ours.config.vocab_size == 9 and ours.target_lang == "fra"
    ref = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path, target_lang="fra", ignore_mismatched_sizes=True).eval()
    x = audio()
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).logits.numpy()
    assert expected.shape[-1] == 9
    # the conformance table's float32 tolerance: 1e-5 + 1e-5 * max|expected| (adapter logits reach ~5)
    np.testing.assert_allclose(ours(x).logits, expected, rtol=0, atol=1e-5 * (1 + np.abs(expected).max()))

    with pytest.raises(ValueError, match="adapter_attn_dim"):
        wf.Wav2Vec2ForCTC(small_config("stable")).load_adapter("fra", tmp_path)
