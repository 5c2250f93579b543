"""The torch backend's inference fast paths give the numbers of its plain paths (which the parity tests
check against the reference): float32 CPU matmuls through oneDNN, the conv feature encoder as im2col
matmuls, the positional conv's weight norm computed once. Within the conformance table's tolerances; their speed is the benchmark's business."""
import numpy as np
import pytest

from conformance.runner import random_weights
from conformance.tolerances import TOLERANCES
from conftest import small_config

torch = pytest.importorskip("torch")
from wav2vec2.backends.torch import Wav2Vec2Model  # noqa: E402
from wav2vec2.backends.torch import modeling  # noqa: E402


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
        # float32: the matmul form; bf16: the convolutions only where oneDNN has bf16 kernels but no AMX
        expected = torch.backends.mkldnn.is_available() if dtype == torch.float32 else (
            torch.cpu._is_amx_tile_supported() or not torch.ops.mkldnn._is_mkldnn_bf16_supported())
        assert encoder.uses_im2col(x) == expected
        if expected:  # the encoder takes the matmul path in inference
            _close(encoder(x), fast, "float32" if dtype == torch.float32 else "bfloat16")
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


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_im2col_encoder_in_spans_gives_the_frames_of_the_whole_input(arch):
    # spans of output frames, each from its own samples; the GroupNorm's statistics stay the whole
    # utterance's (base), so every span size gives the convolutions' frames
    model = _model(arch, conv_dim=(16, 16, 16, 16), conv_kernel=(10, 3, 3, 2), conv_stride=(5, 2, 2, 2))
    encoder = model.feature_extractor
    x = torch.randn(2, 40 * model.config.inputs_to_logits_ratio + 1234)
    plain = encoder(x).detach()  # autograd on: the convolutions
    frames = plain.shape[-1]
    with torch.no_grad():
        for span in (1, 3, 7, frames - 1, frames, 10 * frames):
            got = encoder.forward_channels_last(x, span).transpose(1, 2)
            assert got.shape == plain.shape
            _close(got, plain)
        short = x[:, :59]  # one sample short of a frame's 60
        with pytest.raises(ValueError, match="59 samples; the conv feature encoder needs at least 60"):
            encoder.forward_channels_last(short)


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
    assert model.encoder.pos_conv_embed not in modeling._DERIVED  # nothing cached for inference


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


def _op_names(run) -> set:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inference_matmuls_run_through_onednn_with_the_numbers_of_f_linear(dtype):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    native = dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(48, 20).to(dtype)
    weight, bias = layer.weight.double(), layer.bias.double()
    for shape in ((3, 7, 48), (5, 48), (0, 4, 48), (2, 3, 96)):
        x = torch.randn(shape, generator=generator).to(dtype)
        if shape[-1] == 96:
            x = x[..., ::2]  # a strided input
        add = torch.randn(*shape[:-1], 20, generator=generator).to(dtype)
        product = torch.nn.functional.linear(x.double(), weight, bias)
        for activation, extra in ((None, None), ("gelu", None), ("gelu_new", None), ("relu", None),
                                  ("swish", None), (None, add), ("gelu", add)):
            expected = product if extra is None else product + extra.double()
            if activation is not None:
                expected = modeling.ACTIVATIONS[activation](expected)
            with torch.inference_mode():
                assert modeling.uses_onednn_matmul(x) == native
                got = modeling.dense(x, layer.weight, layer.bias, activation, add=extra)
            assert got.dtype == dtype and got.shape == expected.shape
            if got.numel():
                assert (got.double() - expected).abs().max().item() < tolerance * max(1, expected.abs().max().item())
    with torch.inference_mode():
        names = _op_names(lambda: modeling.linear(layer, x))
        assert ("mkldnn::_linear_pointwise" in names) == native
    assert not modeling.uses_onednn_matmul(x)  # autograd on: F.linear, which has a backward
    x.requires_grad_(True)
    modeling.linear(layer, x, "gelu").sum().backward()
    assert layer.weight.grad is not None and x.grad is not None


def test_bf16_wide_linears_run_on_prepacked_weights_with_their_numbers_and_follow_the_weights():
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("no native oneDNN bf16 here")
    model = _model("base", intermediate_size=64).to(torch.bfloat16)  # 64 = 4 x hidden: prepacked
    x = torch.randn(2, 1600).bfloat16()
    layer = model.encoder.layers[0]
    with torch.enable_grad():
        plain = model(x).last_hidden_state.detach()  # autograd on: F.linear on the parameters
    with torch.inference_mode():
        assert modeling.prepacks((64, 16), x) and not modeling.prepacks((16, 64), x)
        fast = model(x).last_hidden_state
        packed = modeling._DERIVED[layer.feed_forward.intermediate_dense]["prepacked_weight"][2]
        assert packed.is_mkldnn and "fused_qkv_prepacked" in modeling._DERIVED[layer.attention]
        assert layer.feed_forward.output_dense not in modeling._DERIVED  # narrow: its plain weight
    _close(fast, plain, "bfloat16", kind="hidden")
    with torch.no_grad():
        layer.feed_forward.intermediate_dense.weight.mul_(-1)  # in place: the packed copy is stale
        layer.attention.v_proj.weight.mul_(0.5)
    with torch.enable_grad():
        plain = model(x).last_hidden_state.detach()
    with torch.inference_mode():
        changed = model(x).last_hidden_state
        assert modeling._DERIVED[layer.feed_forward.intermediate_dense]["prepacked_weight"][2] is not packed
    _close(changed, plain, "bfloat16", kind="hidden")
    assert (changed.float() - fast.float()).abs().max() > 1e-2


@pytest.mark.filterwarnings("ignore:.*quantize:UserWarning")
def test_a_linear_with_hooks_or_replaced_runs_its_own_forward():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.inference_mode():
        out = modeling.linear(layer, x)
    assert len(seen) == 1 and seen[0] is out
    handle.remove()
    quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear}, torch.qint8)[0]
    with torch.inference_mode():
        got = modeling.linear(quantized, x)
    assert (got - layer(x).detach()).abs().max().item() < 0.05


def test_whole_model_float32_inference_has_no_mkl_linear():
    model = _model("base")
    x = torch.randn(2, 1600)
    with torch.inference_mode():
        names = _op_names(lambda: model(x))
    if torch.backends.mkldnn.is_available():
        assert "mkldnn::_linear_pointwise" in names
        assert not names & {"aten::linear", "aten::addmm"}, names


@pytest.mark.parametrize("grad", [False, True])
def test_bf16_positional_conv_with_few_channels_per_group_gives_the_float64_numbers(grad):
    # torch's CPU bf16 grouped conv is wrong for < 16 channels per group and an even kernel (AMX):
    # such a conv runs in float32, so the model keeps the numbers of the float64 oracle
    model = _model("stable", hidden_size=48, num_attention_heads=4, num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=4)  # 12 channels per group
    pos = model.encoder.pos_conv_embed
    x = torch.randn(2, 30, 48, generator=torch.Generator().manual_seed(1))
    conv = pos.conv
    expected = torch.nn.functional.conv1d(x.double().transpose(1, 2), conv.weight.double(), conv.bias.double(),
                                          padding=conv.padding, groups=conv.groups)[:, :, :-1]
    expected = torch.nn.functional.gelu(expected).transpose(1, 2)
    pos.to(torch.bfloat16)
    assert pos.runs_in_float32(x.bfloat16())
    with torch.set_grad_enabled(grad):
        got = pos(x.bfloat16()).detach()
    assert got.dtype == torch.bfloat16
    assert (got.double() - expected).abs().max().item() < 0.03 * expected.abs().max().item()
