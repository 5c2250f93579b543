"""The Keras 3 / TensorFlow backend against the reference PyTorch classes (transformers 4.57.6).

Every reference model gets perturbed weights (noise on every tensor), copied over through the
canonical state dict; outputs must agree within 1e-5, losses within 1e-5 relative, gradients within 1e-4.
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import HEADS, reference_config, small_config, utterances_with_own_statistics  # noqa: E402
from wav2vec2.backends import tensorflow as W  # noqa: E402
from wav2vec2.spec import masking, negatives  # noqa: E402
from wav2vec2.spec.lengths import min_input_length  # noqa: E402
from wav2vec2.spec.names import HEAD_CLASSES, relayout  # noqa: E402

CLASS_NAMES = HEAD_CLASSES
# The PyTorch-2 weight-norm spelling of the reference, and the canonical one.
WEIGHT_NORM_NAMES = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
SAMPLES = 1200
VALID = 800  # samples of the shorter utterance of the padded batch


def canonical_name(name):
    for alias, canonical in WEIGHT_NORM_NAMES.items():
        name = name.replace(alias, canonical)
    return name


def perturbed_reference(config, head, seed=0):
    """A reference PyTorch model with noise added to every weight, in eval mode."""
    torch.manual_seed(seed)
    reference = getattr(transformers, CLASS_NAMES[head])(reference_config(config)).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return reference


def reference_state(reference):
    return {canonical_name(k): v.detach().numpy().copy() for k, v in reference.state_dict().items()}


def model_pair(config, head, seed=0):
    reference = perturbed_reference(config, head, seed)
    model = getattr(W, CLASS_NAMES[head])(config)
    model.load_canonical_state_dict(reference_state(reference))
    return reference, model


def padded_batch(seed=0, samples=SAMPLES, valid=VALID):
    rng = np.random.default_rng(seed)
    waveforms = rng.standard_normal((2, samples)).astype(np.float32)
    attention_mask = np.ones((2, samples), np.int32)
    attention_mask[1, valid:] = 0
    waveforms[1, valid:] = 0.0
    return waveforms, attention_mask


def frames(config, samples=SAMPLES):
    length = samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
    return length


def head_inputs(config, head, rng):
    """Labels (or pretraining masks and negatives) for a padded batch of two."""
    num_frames = frames(config)
    if head == "ctc":
        labels = rng.integers(1, config.vocab_size, size=(2, 6))
        labels[1, 4:] = -100
        return {"labels": labels}
    if head in ("sequence_classification", "xvector"):
        return {"labels": rng.integers(0, config.num_labels, size=(2,))}
    if head == "audio_frame_classification":
        return {"labels": rng.random((2, num_frames, config.num_labels)).astype(np.float32)}
    if head == "pretraining":
        frame_mask = np.arange(num_frames)[None] < np.array([num_frames, frames(config, VALID)])[:, None]
        mask = masking.pretraining_mask(config, 2, num_frames, rng=rng, frame_attention_mask=frame_mask, min_masks=2)
        sampled = negatives.sample_negative_indices((2, num_frames), config.num_negatives, rng=rng, mask_time_indices=mask)
        return {"mask_time_indices": mask, "sampled_negative_indices": sampled}
    return {}


def to_torch(inputs):
    return {k: torch.tensor(v) for k, v in inputs.items()}


COMPARED = {
    "model": ("last_hidden_state", "extract_features"),
    "ctc": ("logits",),
    "sequence_classification": ("logits",),
    "audio_frame_classification": ("logits",),
    "xvector": ("logits", "embeddings"),
    "pretraining": ("projected_states", "projected_quantized_states", "codevector_perplexity"),
}
LOSSES = {"pretraining": ("loss", "contrastive_loss", "diversity_loss")}


def assert_outputs_match(ours, theirs, head):
    for name in COMPARED[head]:
        np.testing.assert_allclose(np.asarray(getattr(ours, name)), getattr(theirs, name).detach().numpy(), atol=1e-5, err_msg=name)
    if theirs.hidden_states is not None:
        assert len(ours.hidden_states) == len(theirs.hidden_states)
        for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), atol=1e-5, err_msg=f"hidden_states[{i}]")
    for name in LOSSES.get(head, ("loss",)):
        expected = getattr(theirs, name, None)
        if expected is not None:
            np.testing.assert_allclose(np.asarray(getattr(ours, name)), expected.item(), rtol=1e-5, err_msg=name)


# ------------------------------------------------------------------------------------------ weights


@pytest.mark.parametrize(
    "overrides",
    [dict(add_adapter=True, output_hidden_size=12, num_adapter_layers=2), dict(adapter_attn_dim=4), dict(mask_time_prob=0.0)],
    ids=["conv_adapter", "mms_adapter", "no_masked_spec_embed"],
)
def test_key_set_matches_reference_with_options(overrides):
    config = small_config("stable", **overrides)
    reference = perturbed_reference(config, "ctc")
    model = W.Wav2Vec2ForCTC(config)
    assert model.canonical_shapes() == {k: tuple(v.shape) for k, v in reference_state(reference).items()}


def test_state_dict_round_trip_is_exact():
    config = small_config("base")
    reference, model = model_pair(config, "ctc")
    state = reference_state(reference)
    ours = model.canonical_state_dict()
    assert set(ours) == set(state)
    for name in state:
        np.testing.assert_array_equal(ours[name], state[name], err_msg=name)


def test_load_rejects_unknown_missing_and_misshapen_weights():
    config = small_config("base")
    model = W.Wav2Vec2ForCTC(config)
    state = model.canonical_state_dict()
    with pytest.raises(ValueError, match="unknown weight names.*not_a_weight"):
        model.load_canonical_state_dict({**state, "not_a_weight": np.zeros(1)})
    with pytest.raises(ValueError, match="missing weights.*lm_head.bias"):
        model.load_canonical_state_dict({k: v for k, v in state.items() if k != "lm_head.bias"})
    with pytest.raises(ValueError, match="'lm_head.weight': expected shape \\(12, 16\\)"):
        model.load_canonical_state_dict({**state, "lm_head.weight": np.zeros((3, 16))})


# ------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("head", HEADS)
def test_head_matches_reference_on_padded_batch(arch, head):
    config = small_config(arch)
    reference, model = model_pair(config, head)
    waveforms, attention_mask = padded_batch()
    inputs = head_inputs(config, head, np.random.default_rng(1))
    ours = model(waveforms, attention_mask=attention_mask, output_hidden_states=True, **inputs)
    with torch.no_grad():
        theirs = reference(
            torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask), output_hidden_states=True, **to_torch(inputs)
        )
    assert_outputs_match(ours, theirs, head)


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_unpadded_single_waveform_matches_reference(arch):
    config = small_config(arch)
    reference, model = model_pair(config, "model")
    waveform = padded_batch()[0][0]
    ours = model(waveform)  # (samples,) is a batch of one
    with torch.no_grad():
        theirs = reference(torch.tensor(waveform[None]))
    np.testing.assert_allclose(ours.last_hidden_state.numpy(), theirs.last_hidden_state.numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_attention_weights_match_reference(arch):
    config = small_config(arch)
    reference, model = model_pair(config, "model")
    reference.config._attn_implementation = "eager"  # the reference returns weights from its eager path
    waveforms, attention_mask = padded_batch()
    ours = model(waveforms, attention_mask=attention_mask, output_attentions=True)
    with torch.no_grad():
        theirs = reference(torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask), output_attentions=True)
    assert len(ours.attentions) == len(theirs.attentions) == config.num_hidden_layers
    for i, (a, b) in enumerate(zip(ours.attentions, theirs.attentions)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=f"attentions[{i}]")
    # Padded keys get no weight.
    assert np.abs(ours.attentions[0].numpy()[1, :, :, frames(config, VALID):]).max() < 1e-12


def test_feature_encoder_and_positional_conv_stages():
    config = small_config("base", num_conv_pos_embeddings=5)  # odd kernel: no frame dropped
    reference, model = model_pair(config, "model")
    waveforms, _ = padded_batch()
    features = model.feature_extractor(waveforms)
    with torch.no_grad():
        expected = reference.feature_extractor(torch.tensor(waveforms)).transpose(1, 2)
        hidden = torch.tensor(np.random.default_rng(2).standard_normal((2, 9, config.hidden_size)).astype(np.float32))
        expected_positions = reference.encoder.pos_conv_embed(hidden)
    np.testing.assert_allclose(features.numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.encoder.pos_conv_embed(hidden.numpy()).numpy(), expected_positions.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "arch, overrides, head",
    [
        ("stable", dict(adapter_attn_dim=4), "ctc"),
        ("stable", dict(add_adapter=True, output_hidden_size=12, num_adapter_layers=2), "ctc"),
        ("base", dict(add_adapter=True, num_adapter_layers=1), "ctc"),
        ("base", dict(use_weighted_layer_sum=True), "sequence_classification"),
        ("stable", dict(use_weighted_layer_sum=True), "audio_frame_classification"),
        ("stable", dict(use_weighted_layer_sum=True), "xvector"),
        ("base", dict(conv_bias=True, feat_extract_activation="relu", hidden_act="gelu_new"), "ctc"),
    ],
    ids=["mms_adapter", "conv_adapter_proj", "conv_adapter", "weighted_sum_seq",
         "weighted_sum_frame", "weighted_sum_xvector", "conv_bias_activations"],
)
def test_options_match_reference(arch, overrides, head):
    config = small_config(arch, **overrides)
    reference, model = model_pair(config, head)
    waveforms, attention_mask = padded_batch()
    inputs = head_inputs(config, head, np.random.default_rng(1))
    ours = model(waveforms, attention_mask=attention_mask, output_hidden_states=True, **inputs)
    with torch.no_grad():
        theirs = reference(
            torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask), output_hidden_states=True, **to_torch(inputs)
        )
    assert_outputs_match(ours, theirs, head)


def test_classification_heads_refuse_the_conv_adapter():
    config = small_config("base", add_adapter=True)
    for cls in (W.Wav2Vec2ForSequenceClassification, W.Wav2Vec2ForAudioFrameClassification):
        with pytest.raises(ValueError, match="add_adapter"):
            cls(config)


# ------------------------------------------------------------------------------------------ CTC loss


@pytest.mark.parametrize(
    "reduction, zero_infinity, pad_token_id, impossible",
    [("mean", False, 0, False), ("sum", False, 3, False), ("none", False, 0, True), ("mean", True, 0, True), ("sum", True, 5, True)],
)
def test_ctc_loss_normalised_like_pytorch(reduction, zero_infinity, pad_token_id, impossible):
    config = small_config("base", ctc_loss_reduction=reduction, ctc_zero_infinity=zero_infinity, pad_token_id=pad_token_id)
    reference, model = model_pair(config, "ctc")
    waveforms, attention_mask = padded_batch()
    num_valid_frames = frames(config, VALID)
    labels = np.full((2, num_valid_frames + 4), -100)
    labels[0, :5] = [1, 2, 2, 7, 4]  # a repeat needs a blank between
    labels[0, 7] = 9  # a label after a padding gap still counts, like torch's masked_select
    if impossible:  # more labels than frames: inf, or 0 with zero_infinity
        labels[1] = np.arange(labels.shape[1]) % (config.vocab_size - 1) + 1
    else:
        labels[1, :3] = [6, 6, 6]
    labels[labels == pad_token_id] = 11
    ours = model(waveforms, attention_mask=attention_mask, labels=labels)
    with torch.no_grad():
        theirs = reference(torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask), labels=torch.tensor(labels))
    np.testing.assert_allclose(ours.loss.numpy(), theirs.loss.numpy(), rtol=1e-5)


def test_ctc_loss_zero_infinity_gives_finite_gradients():
    config = small_config("base", ctc_zero_infinity=True)
    model = W.Wav2Vec2ForCTC(config)
    waveforms, attention_mask = padded_batch()
    labels = np.tile(np.arange(1, 11), (2, 10))  # far more labels than frames
    with tf.GradientTape() as tape:
        loss = model(waveforms, attention_mask=attention_mask, labels=labels).loss
    gradients = tape.gradient(loss, model.trainable_variables)
    assert loss.numpy() == 0.0
    assert all(np.isfinite(g.numpy()).all() for g in gradients if g is not None)


# ------------------------------------------------------------------------------------------ gradients


def _tf_gradients(model, waveforms, call):
    weights = model.canonical_variables()
    x = tf.constant(waveforms)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = call(x)
    grads = tape.gradient(loss, [x] + [variable for variable, _ in weights.values()])
    out = {"input_values": grads[0].numpy()}
    for (name, (variable, reversed_axes)), grad in zip(weights.items(), grads[1:]):
        value = np.zeros(variable.shape, np.float32) if grad is None else tf.convert_to_tensor(grad).numpy()
        out[name] = relayout(value, reversed_axes)
    return loss.numpy(), out


def _torch_gradients(reference, waveforms, call):
    x = torch.tensor(waveforms, requires_grad=True)
    loss = call(x)
    loss.backward()
    out = {"input_values": x.grad.numpy()}
    for name, parameter in reference.named_parameters():
        grad = parameter.grad
        out[canonical_name(name)] = np.zeros(tuple(parameter.shape), np.float32) if grad is None else grad.numpy()
    return loss.item(), out


def _assert_gradients_match(ours, theirs):
    assert set(ours) == set(theirs)
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_ctc_gradients_match_reference(arch):
    config = small_config(arch, ctc_loss_reduction="mean")
    reference, model = model_pair(config, "ctc")
    waveforms, attention_mask = padded_batch()
    labels = head_inputs(config, "ctc", np.random.default_rng(3))["labels"]
    loss, ours = _tf_gradients(model, waveforms, lambda x: model(x, attention_mask=attention_mask, labels=labels).loss)
    expected_loss, theirs = _torch_gradients(
        reference, waveforms,
        lambda x: reference(x, attention_mask=torch.tensor(attention_mask), labels=torch.tensor(labels)).loss,
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    _assert_gradients_match(ours, theirs)


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_pretraining_gradients_match_reference(arch):
    config = small_config(arch)
    reference, model = model_pair(config, "pretraining")
    waveforms, attention_mask = padded_batch()
    inputs = head_inputs(config, "pretraining", np.random.default_rng(4))
    loss, ours = _tf_gradients(model, waveforms, lambda x: model(x, attention_mask=attention_mask, **inputs).loss)
    expected_loss, theirs = _torch_gradients(
        reference, waveforms,
        lambda x: reference(x, attention_mask=torch.tensor(attention_mask), **to_torch(inputs)).loss,
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    _assert_gradients_match(ours, theirs)


def test_xvector_gradients_stay_finite_when_a_channel_is_silent():
    config = small_config("base")
    model = W.Wav2Vec2ForXVector(config)
    bias = model.tdnn[-1].kernel.bias
    bias.assign(np.where(np.arange(bias.shape[0]) == 0, -1e4, bias.numpy()))  # ReLU keeps channel 0 at 0
    waveforms, attention_mask = padded_batch()
    with tf.GradientTape() as tape:
        outputs = model(waveforms, attention_mask=attention_mask, labels=np.array([0, 1]))
    gradients = tape.gradient(outputs.loss, model.trainable_variables)
    assert np.isfinite(outputs.loss.numpy()) and outputs.embeddings.numpy().shape == (2, config.xvector_output_dim)
    assert all(np.isfinite(g.numpy()).all() for g in gradients if g is not None)


# ------------------------------------------------------------------------------------------ training mode


def _no_dropout(arch, **overrides):
    return small_config(
        arch, hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, feat_quantizer_dropout=0.0, **overrides,
    )


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_training_with_given_time_mask_matches_reference(arch):
    config = _no_dropout(arch)
    reference, model = model_pair(config, "model")
    reference.train()
    waveforms, attention_mask = padded_batch()
    mask = masking.pretraining_mask(config, 2, frames(config), rng=np.random.default_rng(5), min_masks=2)
    ours = model(waveforms, attention_mask=attention_mask, mask_time_indices=mask, training=True)
    with torch.no_grad():
        theirs = reference(
            torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask), mask_time_indices=torch.tensor(mask)
        )
    unmasked = model(waveforms, attention_mask=attention_mask, training=True)
    assert np.abs(unmasked.last_hidden_state.numpy() - theirs.last_hidden_state.numpy()).max() > 1e-2
    np.testing.assert_allclose(ours.last_hidden_state.numpy(), theirs.last_hidden_state.numpy(), atol=1e-5)


def test_training_draws_spec_augment_masks_from_the_spec_layer():
    config = _no_dropout("base", mask_time_prob=0.3, mask_feature_prob=0.3, mask_feature_length=3, mask_feature_min_masks=1)
    model = W.Wav2Vec2Model(config)
    waveforms, attention_mask = padded_batch()
    num_frames = frames(config)
    valid = np.arange(num_frames)[None] < np.array([num_frames, frames(config, VALID)])[:, None]
    time_mask, feature_mask = masking.spec_augment_masks(config, 2, num_frames, rng=np.random.default_rng(7), frame_attention_mask=valid)
    assert time_mask.any() and feature_mask.any() and not (time_mask & ~valid).any()
    drawn = model(waveforms, attention_mask=attention_mask, training=True, spec_augment_rng=np.random.default_rng(7))

    # The same masks applied by hand: masked frames take masked_spec_embed, masked channels are zero.
    features = model.feature_extractor(waveforms)
    hidden, _ = model.feature_projection(features)
    hidden = np.where(time_mask[:, :, None], model.masked_spec_embed.numpy(), hidden.numpy())
    hidden = np.where(feature_mask[:, None, :], 0.0, hidden).astype(np.float32)
    expected, _, _ = model.encoder(hidden, tf.constant(valid))
    np.testing.assert_allclose(drawn.last_hidden_state.numpy(), expected.numpy(), atol=1e-6)


def test_pretraining_in_training_mode_with_gumbel_noise_matches_reference(monkeypatch):
    config = _no_dropout("stable")
    reference, model = model_pair(config, "pretraining")
    reference.train()
    reference.set_gumbel_temperature(1.5)
    model.set_gumbel_temperature(1.5)
    waveforms, attention_mask = padded_batch()
    inputs = head_inputs(config, "pretraining", np.random.default_rng(8))
    noise = np.random.default_rng(9).gumbel(size=(2, frames(config), config.num_codevector_groups, config.num_codevectors_per_group))
    noise = noise.astype(np.float32)

    def gumbel_softmax_with_our_noise(logits, tau, hard):  # the reference's straight-through sampler, fixed noise
        soft = torch.softmax((logits + torch.tensor(noise).reshape(logits.shape)) / tau, dim=-1)
        hard_codes = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard_codes - soft.detach() + soft

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", gumbel_softmax_with_our_noise)
    ours = model(waveforms, attention_mask=attention_mask, training=True, gumbel_noise=noise, **inputs)
    with torch.no_grad():
        theirs = reference(torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask), **to_torch(inputs))
    assert_outputs_match(ours, theirs, "pretraining")


def test_mixed_bfloat16_computes_the_ctc_loss_in_float32():
    keras = pytest.importorskip("keras")
    config = small_config("base")
    reference_model = W.Wav2Vec2ForCTC(config)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = W.Wav2Vec2ForCTC(config)
    finally:
        keras.config.set_dtype_policy("float32")
    model.load_canonical_state_dict(reference_model.canonical_state_dict())
    waveforms, attention_mask = padded_batch()
    labels = head_inputs(config, "ctc", np.random.default_rng(3))["labels"]
    with tf.GradientTape() as tape:
        outputs = model(waveforms, attention_mask=attention_mask, labels=labels)
    gradients = tape.gradient(outputs.loss, model.trainable_variables)
    assert outputs.logits.dtype == tf.bfloat16 and outputs.loss.dtype == tf.float32
    assert all(np.isfinite(g.numpy()).all() for g in gradients if g is not None)
    expected = reference_model(waveforms, attention_mask=attention_mask, labels=labels).loss.numpy()
    np.testing.assert_allclose(outputs.loss.numpy(), expected, rtol=2e-2)


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_bfloat16_policy_holds_bf16_weights_and_gives_the_reference_logits_in_a_graph(arch):
    # transcribe --precision bf16 builds under the "bfloat16" policy: weights stored in bf16 (no
    # cast per call), compute in bf16; within the conformance runner's bf16 "head" tolerance
    keras = pytest.importorskip("keras")
    config = small_config(arch)
    reference = perturbed_reference(config, "ctc")
    keras.config.set_dtype_policy("bfloat16")
    try:
        model = W.Wav2Vec2ForCTC(config)
    finally:
        keras.config.set_dtype_policy("float32")
    model.load_canonical_state_dict(reference_state(reference))
    assert {v.dtype for v in model.weights} == {"bfloat16"}
    waveforms, attention_mask = padded_batch()
    graph = tf.function(lambda x, m: tf.cast(model(x, attention_mask=m).logits, tf.float32))
    got = graph(tf.constant(waveforms), tf.constant(attention_mask)).numpy()
    with torch.no_grad():
        theirs = reference(torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask)).logits.numpy()
    assert np.abs(got - theirs).max() <= 1e-1 + 5e-2 * np.abs(theirs).max()


def test_freezing():
    model = W.Wav2Vec2ForCTC(small_config("base"))
    encoder_variables = {id(v) for v in model.wav2vec2.feature_extractor.trainable_variables}
    model.freeze_feature_encoder()
    assert encoder_variables and not encoder_variables & {id(v) for v in model.trainable_variables}
    model.freeze_base_model()
    assert {id(v) for v in model.trainable_variables} == {id(model.lm_head.kernel), id(model.lm_head.bias)}


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def ctc_model():
    return W.Wav2Vec2ForCTC(small_config("base"))


def test_bad_inputs_raise_clear_errors(ctc_model):
    config = ctc_model.config
    waveforms, attention_mask = padded_batch()
    with pytest.raises(ValueError, match=r"shape \(batch, samples\) or \(samples,\)"):
        ctc_model(waveforms[:, None])
    with pytest.raises(ValueError, match="floating point audio, got dtype int32"):
        ctc_model(np.ones((1, SAMPLES), np.int32))
    too_short = min_input_length(config) - 1
    with pytest.raises(ValueError, match=f"{too_short} samples; the conv feature encoder needs at least {too_short + 1}"):
        ctc_model(np.zeros((1, too_short), np.float32))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        ctc_model(waveforms, attention_mask=attention_mask[:, :100])
    with pytest.raises(ValueError, match=r"labels must be integer token ids of shape \(batch=2, target_length\)"):
        ctc_model(waveforms, labels=np.ones((2,), np.int64))
    with pytest.raises(ValueError, match=r"labels must be integer token ids of shape \(batch=2, target_length\).*got shape \(3, 4\)"):
        ctc_model(waveforms, labels=np.ones((3, 4), np.int64))
    with pytest.raises(ValueError, match="vocab_size is 12"):
        ctc_model(waveforms, labels=np.full((2, 3), 12))


def test_bad_head_labels_raise(ctc_model):
    config = ctc_model.config
    waveforms, _ = padded_batch()
    with pytest.raises(ValueError, match=r"labels must be integer class ids of shape \(batch=2,\)"):
        W.Wav2Vec2ForSequenceClassification(config)(waveforms, labels=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match=r"labels must have shape \(2, \d+, 3\) \(batch, frames, num_labels\)"):
        W.Wav2Vec2ForAudioFrameClassification(config)(waveforms, labels=np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("name", ["gelu", "gelu_new"])
def test_bf16_gelu_is_the_float64_gelu_rounded_once(name):
    import math

    from wav2vec2.backends.tensorflow import modeling

    x = np.linspace(-6, 6, 2001)
    bf16 = tf.cast(tf.constant(x, tf.float32), tf.bfloat16)
    exact_x = tf.cast(bf16, tf.float64).numpy()
    if name == "gelu":
        exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in exact_x])
    else:
        exact = 0.5 * exact_x * (1 + np.tanh(math.sqrt(2 / math.pi) * (exact_x + 0.044715 * exact_x ** 3)))
    got = modeling._ACTIVATIONS[name](bf16)
    assert got.dtype == tf.bfloat16
    # one rounding to bf16 (8 significant bits): within half an ulp, plus float32 noise near zero
    assert np.all(np.abs(tf.cast(got, tf.float64).numpy() - exact) <= 2.0 ** -8 * np.abs(exact) + 1e-6)


# ------------------------------------------------------------------------------------ graph fast paths
@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("head", ["ctc", "xvector"])
def test_head_in_a_graph_matches_reference_on_padded_batch(arch, head):
    # In a tf.function the feature encoder runs span by span with a folded GroupNorm and the feed
    # forward as one fused matmul; eagerly (the other tests) it runs the plain layers.
    config = small_config(arch)
    reference, model = model_pair(config, head)
    waveforms, attention_mask = padded_batch()
    graph = tf.function(lambda x, m: model(x, attention_mask=m).logits)
    with torch.no_grad():
        theirs = reference(torch.tensor(waveforms), attention_mask=torch.tensor(attention_mask)).logits.numpy()
    np.testing.assert_allclose(graph(tf.constant(waveforms), tf.constant(attention_mask)).numpy(), theirs, atol=1e-5)


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("span_frames", [1, 3, 7, None])
@pytest.mark.parametrize("samples", [67, 240, 1003])
def test_feature_encoder_by_spans_gives_the_layers_run_whole(arch, span_frames, samples):
    # Each layer run in turn over whole utterances, the GroupNorm as Keras' GroupNormalization, is
    # the oracle for the span loop with its GroupNorm folded into the first layer's weights.
    from wav2vec2.backends.tensorflow import modeling

    config = small_config(arch)
    rng = np.random.default_rng(samples)
    x = utterances_with_own_statistics(samples, rng)
    encoder = modeling.FeatureEncoder(config)
    encoder(x)  # builds the layers
    for variable in encoder.weights:
        variable.assign(variable + 0.1 * rng.standard_normal(variable.shape).astype(np.float32))
    expected = x[:, :, None]
    for layer in encoder.conv_layers:
        expected = layer(expected)
    expected = expected.numpy()
    got = tf.function(lambda v: encoder.by_spans(v[:, :, None], span_frames))(tf.constant(x)).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5 * max(1.0, np.abs(expected).max())
    if span_frames is None:  # a graph call takes the span path
        np.testing.assert_allclose(tf.function(encoder)(tf.constant(x)).numpy(), got, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("name", ["gelu", "gelu_new", "relu", "silu"])
def test_matmul_with_fused_activation_in_a_graph_gives_the_float64_formula(dtype, with_bias, name):
    import math

    from wav2vec2.backends.tensorflow import modeling

    rng = np.random.default_rng(0)
    x = tf.cast(rng.standard_normal((2, 5, 64)).astype(np.float32), dtype)
    kernel = tf.cast((rng.standard_normal((64, 48)) * 0.2).astype(np.float32), dtype)
    bias = tf.cast(rng.standard_normal(48).astype(np.float32), dtype) if with_bias else None
    got = tf.function(lambda a: modeling._matmul_activation(a, kernel, bias, name))(x)
    assert got.dtype == x.dtype and got.shape == (2, 5, 48)
    pre = tf.cast(x, tf.float64).numpy() @ tf.cast(kernel, tf.float64).numpy()
    if with_bias:
        pre = pre + tf.cast(bias, tf.float64).numpy()
    erf = np.vectorize(math.erf)
    expected = {
        "gelu": lambda v: 0.5 * v * (1 + erf(v / math.sqrt(2))),
        "gelu_new": lambda v: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))),
        "relu": lambda v: np.maximum(v, 0),
        "silu": lambda v: v / (1 + np.exp(-v)),
    }[name](pre)
    tolerance = 2.0 ** -7 * np.abs(expected) + 2e-2 if dtype == "bfloat16" else 1e-5 * (1 + np.abs(expected))
    assert np.all(np.abs(tf.cast(got, tf.float64).numpy() - expected) <= tolerance)
