"""PyTorch backend in training: checkpointing, LayerDrop under DDP, torch.compile, freezing,
half precision, SpecAugment from the spec layer, initialisation and bad inputs."""
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conformance.tolerances import TOLERANCES  # noqa: E402
from conftest import small_config  # noqa: E402
from wav2vec2.backends import torch as ours  # noqa: E402
from wav2vec2.spec.lengths import feat_extract_output_lengths, min_input_length  # noqa: E402
from wav2vec2.spec.masking import spec_augment_masks  # noqa: E402

NO_DROPOUT = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, final_dropout=0.0)


def waveforms(batch=2, samples=600, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, samples)).astype(np.float32))


def ctc_labels(batch=2, vocab_size=12, seed=0):
    labels = np.random.default_rng(seed).integers(1, vocab_size, size=(batch, 4))
    labels[-1, 2:] = -100
    return torch.from_numpy(labels)


def loss_and_grads(model, x, labels):
    model.zero_grad()
    loss = model(x, labels=labels).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------------- checkpointing
@pytest.mark.parametrize("arch", ["base", "stable"])
def test_gradient_checkpointing_gives_the_same_gradients(arch):
    # Dropout and LayerDrop on: the recomputed layers must draw what they drew in the forward pass.
    config = small_config(arch, mask_time_prob=0.0, num_hidden_layers=3, layerdrop=0.4, hidden_dropout=0.2,
                          attention_dropout=0.2, activation_dropout=0.2)
    torch.manual_seed(0)
    model = ours.Wav2Vec2ForCTC(config).train()
    x, labels = waveforms(), ctc_labels()
    torch.manual_seed(1)
    loss, grads = loss_and_grads(model, x, labels)
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    loss_ckpt, grads_ckpt = loss_and_grads(model, x, labels)
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------- LayerDrop
def test_layerdrop_skipped_layers_still_get_zero_gradients():
    torch.manual_seed(0)
    config = small_config("stable", layerdrop=0.99, num_hidden_layers=3, mask_time_prob=0.0, **NO_DROPOUT)
    model = ours.Wav2Vec2ForCTC(config).train()
    _, grads = loss_and_grads(model, waveforms(), ctc_labels())
    layer_grads = [g for n, g in grads.items() if ".encoder.layers." in n]
    # every parameter has a gradient (DDP needs that), and the skipped layers' are zero
    assert len(grads) == len(list(model.parameters()))
    assert all(not g.any() for g in layer_grads)


def _train_under_ddp(steps=4, gradient_checkpointing=False):
    """A few LayerDrop training steps under DDP (gloo, world_size=1, in this process)."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        config = small_config("stable", layerdrop=0.5, num_hidden_layers=4, add_adapter=True, **NO_DROPOUT)
        model = ours.Wav2Vec2ForCTC(config).train()
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
        for step in range(steps):
            x = waveforms(seed=step, samples=1200)
            loss = ddp(x, labels=ctc_labels(seed=step), spec_augment_rng=np.random.default_rng(step)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("gradient_checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_layerdrop_under_ddp_without_find_unused_parameters(gradient_checkpointing):
    """DDP's reducer raises on the step after a parameter got no gradient; here none is missed."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    _train_under_ddp(gradient_checkpointing=gradient_checkpointing)


def test_ddp_control_without_the_zero_gradient_anchor_fails(monkeypatch):
    """Removing the zero gradient anchor of skipped layers must hit DDP's error, so the test above
    would notice a LayerDrop that silently leaves parameters out of the graph."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    import wav2vec2.backends.torch.modeling as modeling

    monkeypatch.setattr(modeling, "_zero_gradient_anchor", lambda module: None)
    with pytest.raises(RuntimeError, match="finished reduction"):
        _train_under_ddp()


# ----------------------------------------------------------------------------------- freezing
def test_freeze_feature_encoder_and_base_model():
    model = ours.Wav2Vec2ForCTC(small_config("base", mask_time_prob=0.0)).train()
    model.freeze_feature_encoder()
    _, grads = loss_and_grads(model, waveforms(), ctc_labels())
    assert not any(n.startswith("wav2vec2.feature_extractor.") for n in grads)
    assert "wav2vec2.feature_projection.projection.weight" in grads and "lm_head.weight" in grads

    model.freeze_base_model()
    _, grads = loss_and_grads(model, waveforms(), ctc_labels())
    assert set(grads) == {"lm_head.weight", "lm_head.bias"}


# ----------------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_ctc_loss_is_finite_and_close(dtype):
    config = small_config("stable", ctc_loss_reduction="mean", mask_time_prob=0.0)
    model = ours.Wav2Vec2ForCTC(config).eval()
    x, labels = waveforms(), ctc_labels()
    with torch.no_grad():
        expected = model(x, labels=labels).loss
        model.to(dtype)
        try:
            out = model(x, labels=labels)
        except RuntimeError as e:  # some CPU builds lack half kernels
            pytest.skip(f"{dtype} not supported on this CPU build: {e}")
    assert out.logits.dtype == dtype
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, expected, rtol=0.05, atol=0.05)


def test_bf16_xvector_loss_runs_in_float32():
    config = small_config("base", mask_time_prob=0.0)
    model = ours.Wav2Vec2ForXVector(config).eval()
    x, labels = waveforms(), torch.tensor([0, 2])
    with torch.no_grad():
        expected = model(x, labels=labels).loss
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16), labels=labels)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, expected, rtol=0.05, atol=0.05)


# ----------------------------------------------------------------------------------- SpecAugment
def test_training_spec_augment_draws_from_the_spec_layer():
    config = small_config("stable", mask_time_prob=0.3, mask_feature_prob=0.3, mask_feature_length=3, **NO_DROPOUT)
    model = ours.Wav2Vec2Model(config)
    x = waveforms()
    frames = feat_extract_output_lengths(config, x.shape[1])
    encoder_inputs = []
    model.encoder.register_forward_hook(lambda module, args, output: encoder_inputs.append(args[0]))

    with torch.no_grad():
        model.train()
        trained = model(x, spec_augment_rng=np.random.default_rng(5)).last_hidden_state
        again = model(x, spec_augment_rng=np.random.default_rng(5)).last_hidden_state
        time_mask, feature_mask = spec_augment_masks(config, 2, frames, rng=np.random.default_rng(5))
        model.eval()
        unmasked = model(x).last_hidden_state
    torch.testing.assert_close(trained, again)
    assert not torch.allclose(trained, unmasked)
    assert time_mask.any() and feature_mask.any()
    encoder_input = encoder_inputs[0]  # (batch, frames, hidden), after masking
    assert (encoder_input[torch.from_numpy(feature_mask)[:, None, :].expand_as(encoder_input)] == 0).all()
    masked_frames = encoder_input[torch.from_numpy(time_mask & True)]  # (n, hidden)
    embed = model.masked_spec_embed.detach().expand_as(masked_frames)
    channel_kept = ~torch.from_numpy(feature_mask)[np.nonzero(time_mask)[0]]
    torch.testing.assert_close(masked_frames[channel_kept], embed[channel_kept])


# ----------------------------------------------------------------------------------- initialisation
def test_initialisation_follows_the_reference_distributions():
    torch.manual_seed(0)
    config = small_config(
        "base", hidden_size=64, num_attention_heads=4, num_conv_pos_embedding_groups=4, num_codevectors_per_group=50
    )
    model = ours.Wav2Vec2ForPreTraining(config)
    body = model.wav2vec2
    q = body.encoder.layers[0].attention.q_proj.weight
    assert abs(q.std().item() - config.initializer_range) < 0.005 and not body.encoder.layers[0].attention.q_proj.bias.any()
    assert (body.encoder.layer_norm.weight == 1).all() and not body.encoder.layer_norm.bias.any()
    assert ((body.masked_spec_embed >= 0) & (body.masked_spec_embed < 1)).all()
    conv_v = body.encoder.pos_conv_embed.conv.parametrizations.weight.original1
    expected_std = 2 * np.sqrt(1 / (config.num_conv_pos_embeddings * config.hidden_size))
    assert abs(conv_v.std().item() - expected_std) < 0.2 * expected_std
    # weight_g starts at the norm of weight_v, so the effective weight equals weight_v
    torch.testing.assert_close(body.encoder.pos_conv_embed.conv.weight, conv_v)
    assert abs(model.quantizer.weight_proj.weight.std().item() - 1.0) < 0.1  # 800 draws of N(0, 1)
    bound = 1 / np.sqrt(config.conv_dim[-1])
    assert body.feature_projection.projection.weight.abs().max() <= bound


# ----------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def ctc_model():
    return ours.Wav2Vec2ForCTC(small_config("base")).eval()


@pytest.mark.parametrize(
    "make_input, match",
    [
        (lambda n: np.zeros((1, 1, n), np.float32), r"shape \(batch, samples\)"),
        (lambda n: np.zeros((2, n), np.int16), "floating point"),
        (lambda n: np.zeros((2, n - 1), np.float32), "at least"),
    ],
    ids=["rank", "dtype", "too-short"],
)
def test_bad_input_values_raise(ctc_model, make_input, match):
    shortest = min_input_length(ctc_model.config)
    with pytest.raises(ValueError, match=match):
        ctc_model(make_input(shortest))


def test_short_input_error_names_the_minimum(ctc_model):
    shortest = min_input_length(ctc_model.config)
    with pytest.raises(ValueError, match=str(shortest)):
        ctc_model(np.zeros((1, shortest - 1), np.float32))
    assert ctc_model(np.zeros(shortest, np.float32)).logits.shape[:2] == (1, 1)


def test_bad_masks_and_labels_raise(ctc_model):
    x = waveforms()
    with pytest.raises(ValueError, match="attention_mask"):
        ctc_model(x, attention_mask=np.ones((2, 10)))
    with pytest.raises(ValueError, match="labels"):
        ctc_model(x, labels=np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="vocab_size"):
        ctc_model(x, labels=np.full((2, 4), 99))
    with pytest.raises(ValueError, match="mask_time_indices"):
        ctc_model(x, mask_time_indices=np.zeros((2, 3), bool))
    frame_model = ours.Wav2Vec2ForAudioFrameClassification(small_config("base"))
    with pytest.raises(ValueError, match="labels"):
        frame_model(x, labels=np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="add_adapter"):
        ours.Wav2Vec2ForSequenceClassification(small_config("base", add_adapter=True))


# ----------------------------------------------------------------------------------- inference path
def test_inference_path_matches_autograd_path_and_sees_weight_updates():
    """Without autograd, q/k/v run as one fused matmul; it must agree with the three projections,
    also after the weights change in place (nothing stale)."""
    model = ours.Wav2Vec2Model(small_config("stable")).eval()
    x = waveforms()
    outputs = []
    for _ in range(2):
        with torch.no_grad():
            fused = model(x).last_hidden_state
        separate = model(x).last_hidden_state.detach()  # grad enabled: the separate projections
        atol, rtol = TOLERANCES[("float32", "hidden")]  # the same sums in another order
        torch.testing.assert_close(fused, separate, atol=atol, rtol=rtol)
        outputs.append(fused)
        with torch.no_grad():
            model.encoder.layers[0].attention.v_proj.weight.mul_(3.0)  # v: the output moves with it
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)
