"""wav2vec2.training.schedule: the learning rate of every update, and which weights decay."""
import numpy as np
import pytest

from conftest import small_config
from wav2vec2.spec.names import canonical_shapes
from wav2vec2.training.schedule import OptimizerSettings, decays_weight, learning_rate


@pytest.mark.parametrize("warmup, total", [(10, 100), (0, 50), (7, 7), (1, 3)])
def test_linear_warmup_then_linear_decay(warmup, total):
    settings = OptimizerSettings(learning_rate=3e-4, warmup_steps=warmup, total_steps=total)
    steps = np.arange(1, total + 6)
    # oracle: piecewise-linear interpolation through (0, 0), (warmup, peak), (total + 1, 0), then 0
    points = ([0, warmup, total + 1], [0, 1, 0]) if warmup else ([0, total + 1], [1, 0])
    expected = 3e-4 * np.interp(steps, *points)
    actual = np.array([learning_rate(settings, int(k)) for k in steps])
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-18)
    assert learning_rate(settings, 1) > 0 and learning_rate(settings, total) > 0  # no update at rate 0
    assert learning_rate(settings, total + 1) == 0


def test_updates_are_counted_from_one():
    with pytest.raises(ValueError, match="counted from 1"):
        learning_rate(OptimizerSettings(), 0)


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", 0.0, "learning_rate must be positive"),
    ("total_steps", 5, "at least warmup_steps"),
    ("betas", (0.9, 1.0), "betas"),
    ("max_grad_norm", 0.0, "max_grad_norm"),
    ("gradient_accumulation_steps", 0, "gradient_accumulation_steps"),
])
def test_bad_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        OptimizerSettings(**{"warmup_steps": 10, "total_steps": 100, field: value})


def test_settings_round_trip_and_reject_unknown_keys():
    settings = OptimizerSettings(learning_rate=1e-3, betas=(0.9, 0.98), max_grad_norm=None)
    assert OptimizerSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match=r"unknown optimizer settings \['lr'\]"):
        OptimizerSettings.from_dict({"lr": 1.0})


def test_no_weight_decay_for_biases_and_norms():
    names = canonical_shapes(small_config("stable"), "ctc")
    no_decay = sorted(n for n in names if not decays_weight(n))
    assert no_decay == sorted(n for n in names if n.endswith(".bias") or ".layer_norm." in n or "_layer_norm." in n)
    assert decays_weight("wav2vec2.encoder.layers.0.attention.q_proj.weight")
    assert not decays_weight("wav2vec2.encoder.layers.0.final_layer_norm.weight")
    assert not decays_weight("wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight")  # GroupNorm too
