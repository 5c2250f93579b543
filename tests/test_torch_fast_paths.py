"""The torch backend's inference fast paths give the numbers of its plain paths (which the parity tests
check against the reference): the conv feature encoder as im2col matmuls, the positional conv's weight
norm computed once. Within the conformance table's tolerances; their speed is the benchmark's business."""
import numpy as np
import pytest

from conformance.runner import random_weights
from conformance.tolerances import TOLERANCES
from conftest import small_config

torch = pytest.importorskip("torch")
from wav2vec2.backends.torch import Wav2Vec2Model  # noqa: E402


def _model(arch, **overrides):
    config = small_config(arch, **overrides)
    model = Wav2Vec2Model(config)
    model.load_canonical_state_dict(random_weights(config, "model", seed=3))
    return model.eval()


def _close(got, expected, dtype="float32", kind="features"):
    atol, rtol = TOLERANCES[(dtype, kind)]
    got, expected = got.float(), expected.float()
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= atol + rtol * expected.abs().max().item()


def _im2col(encoder, x):
    """The encoder's im2col path, layer by layer, whatever the dtype."""
    x = x[:, :, None]
    for layer in encoder.conv_layers:
        x = layer.forward_channels_last(x)
    return x.transpose(1, 2)


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_im2col_feature_encoder_matches_the_convolutions(arch, dtype):
    model = _model(arch, conv_bias=arch == "stable").to(dtype)
    encoder = model.feature_extractor
    x = torch.randn(3, 1234, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        fast = _im2col(encoder, x)
        assert encoder.uses_im2col(x) == (dtype != torch.float32)  # float32 keeps oneDNN's convolutions
        if dtype != torch.float32:
            assert torch.equal(encoder(x), fast)  # the encoder takes the matmul path in inference
    with torch.enable_grad():
        assert not encoder.uses_im2col(x)
        plain = encoder(x).detach()  # autograd on: the convolutions
    assert fast.shape == plain.shape and fast.shape[:2] == (3, 8)
    _close(fast, plain, "float32" if dtype == torch.float32 else "bfloat16")


def test_im2col_encoder_on_a_kernel_longer_than_its_stride_and_odd_lengths():
    model = _model("stable", conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2))
    for samples in (model.config.inputs_to_logits_ratio * 2 + 17, 999):
        x = torch.randn(2, samples)
        with torch.no_grad():
            fast = _im2col(model.feature_extractor, x)
        plain = model.feature_extractor(x).detach()
        _close(fast, plain)


def test_positional_conv_weight_norm_is_computed_once_and_follows_the_weights():
    model = _model("stable")
    pos = model.encoder.pos_conv_embed
    x = torch.randn(2, 9, model.config.hidden_size)

    def plain():
        with torch.enable_grad():
            return pos(x).detach()

    with torch.no_grad():
        first = pos(x)
        kernel = pos.normalised_weight()
        assert pos.normalised_weight() is kernel  # reused, not recomputed
        _close(first, plain(), kind="hidden")
        pos.conv.parametrizations.weight.original1.mul_(-0.5)  # an in-place change (an optimizer step)
        assert pos.normalised_weight() is not kernel
        changed = pos(x)
    _close(changed, plain(), kind="hidden")
    assert (changed - first).abs().max() > 1e-3

    # new weights loaded, or another dtype: the kernel is recomputed
    config = model.config
    model.load_canonical_state_dict(random_weights(config, "model", seed=4))
    with torch.no_grad():
        _close(pos(x), plain(), kind="hidden")
        model.to(torch.bfloat16)
        assert pos.normalised_weight().dtype == torch.bfloat16
        got = pos(x.bfloat16())
    with torch.enable_grad():
        expected = pos(x.bfloat16()).detach()
    _close(got, expected, "bfloat16", "hidden")


def test_training_keeps_the_plain_paths_and_their_gradients():
    model = _model("stable").train()
    x = torch.randn(2, 800)
    model(x).last_hidden_state.sum().backward()
    pos = model.encoder.pos_conv_embed.conv.parametrizations.weight
    assert pos.original0.grad is not None and pos.original1.grad is not None
    assert model.feature_extractor.conv_layers[0].conv.weight.grad is not None
    assert getattr(model.encoder.pos_conv_embed, "_normalised_weight", None) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_model_fast_paths_match_the_plain_model(dtype):
    model = _model("base").to(dtype)
    x = torch.randn(2, 1600).to(dtype)
    with torch.inference_mode():
        fast = model(x).last_hidden_state
    with torch.enable_grad():
        plain = model(x).last_hidden_state.detach()
    _close(fast, plain, "float32" if dtype == torch.float32 else "bfloat16", kind="hidden")
    assert np.isfinite(fast.float().numpy()).all()
