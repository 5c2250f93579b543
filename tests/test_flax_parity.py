"""Flax backend against the reference (transformers 4.57): PyTorch classes for every head and both
architectures, and the reference Flax classes where they exist (stable architecture only).

Reference weights are perturbed before being copied over, so that trivially initialised tensors
(LayerNorm, biases) are tested too.
"""
import numpy as np
import pytest

from conftest import HEADS, padded_batch, reference_config, small_config, utterances_with_own_statistics

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from wav2vec2.backends import flax as wf  # noqa: E402
from wav2vec2.backends.flax import modeling  # noqa: E402
from wav2vec2.spec.lengths import feat_extract_output_lengths  # noqa: E402
from wav2vec2.spec.names import HEAD_CLASSES, canonical_shapes, from_flax_tree, normalize_key, to_flax_tree  # noqa: E402

# XLA on CPU may otherwise use reduced-precision matmul passes; parity at 1e-5 needs full float32.
jax.config.update("jax_default_matmul_precision", "highest")

ATOL = 1e-5
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  final_dropout=0.0, layerdrop=0.0)

OURS = {
    "model": wf.Wav2Vec2Model,
    "ctc": wf.Wav2Vec2ForCTC,
    "sequence_classification": wf.Wav2Vec2ForSequenceClassification,
    "audio_frame_classification": wf.Wav2Vec2ForAudioFrameClassification,
    "xvector": wf.Wav2Vec2ForXVector,
    "pretraining": wf.Wav2Vec2ForPreTraining,
}
REFERENCE = HEAD_CLASSES


def perturbed_reference(head, config, seed=0):
    """The reference PyTorch model of `head`, eval mode, eager attention, every tensor perturbed."""
    torch.manual_seed(seed)
    ref_config = reference_config(config)
    ref_config._attn_implementation = "eager"
    ref = getattr(transformers, REFERENCE[head])(ref_config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return ref


def reference_pair(head, config, seed=0):
    ref = perturbed_reference(head, config, seed)
    ours = OURS[head](config)
    ours.load_canonical_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    return ours, ref


def ctc_labels(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, vocab_size, size=(2, 5))
    labels[1, 3:] = -100
    return labels


def t(a):
    return torch.from_numpy(np.asarray(a))


def close(ours, ref, atol=ATOL, rtol=0.0):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), ref, atol=atol, rtol=rtol)


def close_loss(ours, ref):
    # Relative 1e-5; the absolute floor covers losses near zero (a confident AM-softmax), where
    # float32 rounding of the logits alone exceeds it.
    close(ours, ref, atol=1e-7, rtol=1e-5)


def head_inputs(head, config, x, seed=0):
    """Labels (and pretraining masks/negatives) for `head`, as NumPy."""
    rng = np.random.default_rng(seed)
    num_frames = feat_extract_output_lengths(config, x.shape[1], add_adapter=False)
    if head == "ctc":
        return {"labels": ctc_labels(config.vocab_size, seed)}
    if head in ("sequence_classification", "xvector"):
        return {"labels": rng.integers(0, config.num_labels, size=(x.shape[0],))}
    if head == "audio_frame_classification":
        return {"labels": rng.random((x.shape[0], num_frames, config.num_labels)).astype(np.float32)}
    if head == "pretraining":
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

        np.random.seed(seed)  # the reference helpers draw from the global NumPy state
        mask = _compute_mask_indices((x.shape[0], num_frames), mask_prob=0.5, mask_length=2, min_masks=2)
        negatives = _sample_negative_indices((x.shape[0], num_frames), config.num_negatives, mask)
        return {"mask_time_indices": mask, "sampled_negative_indices": negatives}
    return {}


def run_both(head, ours, ref, x, mask, extra, **kwargs):
    ours_out = ours(x, mask, **extra, **kwargs)
    torch_extra = {k: t(v) for k, v in extra.items()}
    with torch.no_grad():
        ref_out = ref(t(x), None if mask is None else t(mask), **torch_extra, **kwargs)
    return ours_out, ref_out


def test_canonical_state_dict_round_trip():
    model = wf.Wav2Vec2ForPreTraining(small_config("stable"))
    state = model.canonical_state_dict()
    assert {k: v.shape for k, v in state.items()} == dict(canonical_shapes(model.config, "pretraining"))
    again = wf.Wav2Vec2ForPreTraining(model.config, seed=1)
    again.load_canonical_state_dict(state)
    for key, value in again.canonical_state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


# ------------------------------------------------------------------------------- forward, all heads
# The classification heads pool a weighted sum of all layers on one architecture each.
WEIGHTED_LAYER_SUM = {("base", "sequence_classification"), ("stable", "audio_frame_classification"),
                      ("base", "xvector")}


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("head", HEADS)
def test_outputs_and_losses_match_reference(arch, head):
    config = small_config(arch, **NO_DROPOUT, use_weighted_layer_sum=(arch, head) in WEIGHTED_LAYER_SUM)
    ours, ref = reference_pair(head, config)
    x, mask = padded_batch((500, 380))
    extra = head_inputs(head, config, x)
    o, r = run_both(head, ours, ref, x, mask, extra, output_hidden_states=True)

    assert len(o.hidden_states) == len(r.hidden_states) == config.num_hidden_layers + 1
    for ours_h, ref_h in zip(o.hidden_states, r.hidden_states):  # stage by stage
        close(ours_h, ref_h)
    if head == "model":
        close(o.extract_features, r.extract_features)
        close(o.last_hidden_state, r.last_hidden_state)
    elif head == "pretraining":
        close(o.projected_states, r.projected_states)
        close(o.projected_quantized_states, r.projected_quantized_states)
        close(o.codevector_perplexity, r.codevector_perplexity)
        for name in ("loss", "contrastive_loss", "diversity_loss"):
            close_loss(getattr(o, name), getattr(r, name))
    else:
        close(o.logits, r.logits)
        close_loss(o.loss, r.loss)
        if head == "xvector":
            close(o.embeddings, r.embeddings)


@pytest.mark.parametrize(
    "arch,head,overrides",
    [
        ("stable", "ctc", dict(add_adapter=True, output_hidden_size=24)),  # conv adapter with projection
        ("base", "ctc", dict(add_adapter=True, num_adapter_layers=2, conv_bias=True, ctc_loss_reduction="mean")),
        ("stable", "ctc", dict(adapter_attn_dim=4, conv_bias=False, layer_norm_eps=1e-6)),  # MMS adapters
        ("base", "model", dict(num_conv_pos_embeddings=5, hidden_act="relu", feat_extract_activation="gelu_new")),
    ],
)
def test_variants_match_reference(arch, head, overrides):
    config = small_config(arch, **NO_DROPOUT, **overrides)
    ours, ref = reference_pair(head, config, seed=1)
    x, mask = padded_batch((600, 420), seed=1)
    extra = head_inputs(head, config, x, seed=1)
    o, r = run_both(head, ours, ref, x, mask, extra, output_attentions=True)
    if head == "model":
        close(o.last_hidden_state, r.last_hidden_state)
    else:
        close(o.logits, r.logits)
        close_loss(o.loss, r.loss)
    for ours_a, ref_a in zip(o.attentions, r.attentions):
        close(ours_a, ref_a)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_ctc_loss_matches_torch(reduction, zero_infinity):
    """modeling.ctc_loss against torch.nn.functional.ctc_loss: values and gradients, with an
    infeasible target (utterance 2 has 4 frames; its target needs 3 labels + 2 blanks between repeats)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 9, 6)).astype(np.float32)
    frame_lengths = np.array([9, 4, 7])
    labels = np.array([[1, 2, 2, 3], [4, 4, 4, -100], [5, -100, 1, -100]])  # -100 anywhere is skipped

    def ours(logits):
        return modeling.ctc_loss(logits, frame_lengths, labels, 0, reduction, zero_infinity)

    value, grad = jax.jit(lambda z: (ours(z), jax.grad(lambda z: ours(z).sum())(z)))(logits)

    logits_t = t(logits).requires_grad_(True)
    log_probs = torch.log_softmax(logits_t, -1).transpose(0, 1)
    valid = t(labels) >= 0
    expected = torch.nn.functional.ctc_loss(
        log_probs, t(labels)[valid], t(frame_lengths), valid.sum(-1), blank=0, reduction=reduction,
        zero_infinity=zero_infinity,
    )
    finite = np.isfinite(expected.detach().numpy())
    assert finite.all() == zero_infinity or reduction == "none"
    np.testing.assert_allclose(np.asarray(value)[finite], expected.detach().numpy()[finite], rtol=1e-5)
    assert (~np.isfinite(np.asarray(value)) == ~finite).all()
    if finite.all():
        expected.sum().backward()
        close(grad, logits_t.grad, atol=1e-5)


def test_padded_xvector_pools_only_valid_frames():
    """Each utterance of a padded batch gets the embedding of the reference run on it alone. (Only
    without TDNN dilation: the reference's valid-frame count ignores dilation, which we follow.)"""
    config = small_config("stable", **NO_DROPOUT, tdnn_dilation=(1, 1, 1))
    ours, ref = reference_pair("xvector", config)
    x, mask = padded_batch((640, 520))
    o = ours(x, mask)
    for i, n in enumerate((640, 520)):
        with torch.no_grad():
            r = ref(t(x[i : i + 1, :n]))
        close(o.embeddings[i : i + 1], r.embeddings)
        close(o.logits[i : i + 1], r.logits)


# ------------------------------------------------------------------------------------- gradients
def torch_grads(ref):
    return {normalize_key(k): p.grad.numpy() for k, p in ref.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch,head", [("base", "ctc"), ("stable", "pretraining")])
def test_loss_gradients_match_reference(arch, head):
    config = small_config(arch, **NO_DROPOUT, ctc_loss_reduction="mean")
    ours, ref = reference_pair(head, config)
    x, mask = padded_batch((500, 380))
    extra = head_inputs(head, config, x)

    inputs = {"input_values": x, "attention_mask": mask, **extra}
    if head == "pretraining":
        inputs["mask_time_indices"] = inputs["mask_time_indices"].astype(bool)

    def loss_fn(params, input_values):
        return ours.module.apply({"params": params}, **{**inputs, "input_values": input_values}).loss

    param_grads, input_grads = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(ours.params, x)

    x_torch = t(x).requires_grad_(True)
    loss = ref(x_torch, t(mask), **{k: t(v) for k, v in extra.items()}).loss
    loss.backward()
    expected = torch_grads(ref)
    ours_grads = from_flax_tree(param_grads)
    for key, value in expected.items():
        np.testing.assert_allclose(ours_grads[key], value, atol=1e-4, rtol=1e-4, err_msg=key)
    close(input_grads, x_torch.grad, atol=1e-4)


# --------------------------------------------------------------------------- the reference Flax
def reference_flax(head, ours):
    cls = {"model": "FlaxWav2Vec2Model", "ctc": "FlaxWav2Vec2ForCTC", "pretraining": "FlaxWav2Vec2ForPreTraining"}[head]
    ref_config = reference_config(ours.config)
    ref = getattr(transformers, cls)(ref_config, _do_init=False)
    return ref, to_flax_tree(ours.canonical_state_dict())


@pytest.mark.parametrize("head", ["model", "ctc", "pretraining"])
def test_matches_reference_flax(head):
    config = small_config("stable", **NO_DROPOUT)
    ours, _ = reference_pair(head, config)
    ref, ref_params = reference_flax(head, ours)
    x, mask = padded_batch((500, 380))
    if head == "pretraining":
        extra = head_inputs(head, config, x)
        o = ours(x, mask, mask_time_indices=extra["mask_time_indices"])
        r = ref(x, mask, mask_time_indices=extra["mask_time_indices"], params=ref_params)
        close(o.projected_states, r.projected_states)
        close(o.projected_quantized_states, r.projected_quantized_states)
        return
    o = ours(x, mask, output_hidden_states=True)
    r = ref(x, mask, params=ref_params, output_hidden_states=True)
    for ours_h, ref_h in zip(o.hidden_states, r.hidden_states):
        close(ours_h, ref_h)
    close(o.last_hidden_state if head == "model" else o.logits, r.last_hidden_state if head == "model" else r.logits)


@pytest.mark.parametrize("kernel, stride, channels, samples", [
    (10, 5, 1, 203), (3, 2, 8, 41), (2, 2, 8, 40), (5, 2, 6, 30), (400, 160, 1, 1000), (4, 4, 3, 17),
])
def test_strided_conv_in_bf16_as_matmuls_gives_the_float64_conv(kernel, stride, channels, samples):
    # bf16 runs as matmuls over blocks of taps (or copied windows); float32 is lax's conv
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, samples, channels)).astype(np.float32)
    conv = modeling.StridedConv(16, kernel, stride, True, jnp.bfloat16, bias_init=jax.nn.initializers.normal(1.0))
    params = conv.init(jax.random.PRNGKey(0), x)
    w, b = np.asarray(params["params"]["kernel"], np.float64), np.asarray(params["params"]["bias"], np.float64)
    xq = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    wq = np.asarray(jnp.asarray(w, jnp.bfloat16), np.float64)
    frames = (samples - kernel) // stride + 1
    windows = np.stack([xq[:, t * stride:t * stride + kernel] for t in range(frames)], axis=1)  # (b, f, k, c)
    expected = np.einsum("bfkc,kco->bfo", windows, wq) + b
    got = conv.apply(params, x)
    assert got.dtype == jnp.bfloat16 and got.shape == expected.shape
    assert np.abs(np.asarray(got, np.float64) - expected).max() <= 1e-2 * np.abs(expected).max()
    full = modeling.StridedConv(16, kernel, stride, True, jnp.float32, bias_init=jax.nn.initializers.normal(1.0))
    expected = np.einsum("bfkc,kco->bfo", np.stack([x[:, t * stride:t * stride + kernel] for t in range(frames)], 1), w) + b
    assert np.abs(np.asarray(full.apply(params, x), np.float64) - expected).max() < 1e-4


def test_bf16_dense_sums_in_float32():
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 512)).astype(np.float32)
    dense = modeling.Dense(7, dtype=jnp.bfloat16)
    params = dense.init(jax.random.PRNGKey(0), x)
    w = np.asarray(jnp.asarray(params["params"]["kernel"], jnp.bfloat16), np.float64)
    expected = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64) @ w
    got = dense.apply(params, x)
    assert got.dtype == jnp.bfloat16
    # one rounding of a float32 sum: within bf16's half ulp of the float64 product (plus float32 noise)
    assert np.abs(np.asarray(got, np.float64) - expected).max() <= 2 ** -8 * np.abs(expected).max() + 1e-5


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("span_frames", [1, 3, 7, None])
@pytest.mark.parametrize("samples", [67, 240, 1003])
def test_feature_encoder_by_spans_gives_the_layers_run_whole(arch, span_frames, samples):
    # Each layer run in turn over whole utterances, the GroupNorm as flax's nn.GroupNorm, is the
    # oracle for the span loop with its GroupNorm folded into the first layer's weights.
    import jax.numpy as jnp

    config = small_config(arch)
    rng = np.random.default_rng(samples)
    x = utterances_with_own_statistics(samples, rng)
    encoder = modeling.FeatureEncoder(config)
    params = encoder.init(jax.random.PRNGKey(1), x)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)
    expected = x[:, :, None]
    for i in range(config.num_feat_extract_layers):
        expected = modeling.ConvLayer(config, i).apply({"params": params[f"conv_layers_{i}"]}, expected)
    frames = feat_extract_output_lengths(config, samples, add_adapter=False)
    got = encoder.apply({"params": params}, x[:, :, None], params, span_frames, method=modeling.FeatureEncoder.by_spans)
    assert got.shape == expected.shape == (2, frames, config.conv_dim[-1])
    assert np.abs(np.asarray(got) - np.asarray(expected)).max() < 1e-5 * max(1.0, np.abs(expected).max())
    if span_frames is None:  # the module's call takes the span path
        np.testing.assert_allclose(np.asarray(encoder.apply({"params": params}, x)), np.asarray(got), rtol=0, atol=0)
        bf16 = modeling.FeatureEncoder(config, jnp.bfloat16).apply({"params": params}, x)
        assert bf16.dtype == jnp.bfloat16
        assert np.abs(np.asarray(bf16, np.float32) - np.asarray(expected)).max() < 3e-2 * np.abs(expected).max()


def test_feature_encoder_by_spans_rejects_too_short_input():
    config = small_config()
    encoder = modeling.FeatureEncoder(config)
    params = encoder.init(jax.random.PRNGKey(0), np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="samples"):
        encoder.apply(params, np.zeros((1, 5), np.float32))


def test_bf16_inference_casts_the_kernels_once_and_follows_new_weights():
    # The cached bf16 kernels give the numbers of the float32 weights cast inside the call; replacing
    # the weights replaces the cache.
    import jax.numpy as jnp

    config = small_config(**NO_DROPOUT)
    model = wf.Wav2Vec2ForCTC(config, dtype=jnp.bfloat16)
    x = np.random.default_rng(0).standard_normal((2, 400)).astype(np.float32)
    cached = np.asarray(model(x).logits, np.float32)
    kernels = [v for p, v in jax.tree_util.tree_flatten_with_path(model._compute_params(False))[0]
               if p[-1].key == "kernel"]
    assert kernels and all(k.dtype == jnp.bfloat16 for k in kernels)
    assert model._compute_params(False) is model._compute_params(False)  # kept while the weights are
    np.testing.assert_array_equal(cached, np.asarray(model(x, params=model.params).logits, np.float32))
    state = {k: v * 1.5 for k, v in model.canonical_state_dict().items()}
    model.load_canonical_state_dict(state)
    changed = np.asarray(model(x).logits, np.float32)
    assert not np.array_equal(changed, cached)
    np.testing.assert_array_equal(changed, np.asarray(model(x, params=model.params).logits, np.float32))
