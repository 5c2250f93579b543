"""Flax backend in training: dropout in every layer type, LayerDrop, SpecAugment, Gumbel quantizer,
freezing, rematerialisation, an optax train step, bf16, and bad-input errors."""
import numpy as np
import pytest

from conformance.tolerances import TOLERANCES
from conftest import small_config

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
optax = pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

from wav2vec2.backends import flax as wf  # noqa: E402
from wav2vec2.backends.flax import modeling  # noqa: E402
from wav2vec2.spec.lengths import feat_extract_output_lengths  # noqa: E402
from wav2vec2.spec.masking import spec_augment_masks  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  final_dropout=0.0, layerdrop=0.0, feat_quantizer_dropout=0.0, apply_spec_augment=False)
KEY = jax.random.key(1)


def audio(batch=2, samples=400, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, samples)).astype(np.float32)


def assert_same_gradients(grads, remat_grads):
    """Remat recomputes the forward, which XLA fuses differently: float rounding, measured against each
    gradient's own scale (elementwise, a gradient near zero has no relative precision to speak of)."""
    def close(a, b):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-6 + 1e-5 * np.abs(b).max(), np.abs(a - b).max()

    jax.tree_util.tree_map(close, grads, remat_grads)


def differs(a, b):
    return not np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def pretraining_inputs(config, x, seed=0):
    from wav2vec2.spec.negatives import sample_negative_indices

    rng = np.random.default_rng(seed)
    frames = feat_extract_output_lengths(config, x.shape[1])
    mask = np.zeros((x.shape[0], frames), bool)
    mask[:, 2:9] = True
    negatives = sample_negative_indices((x.shape[0], frames), config.num_negatives, rng=rng, mask_time_indices=mask)
    return mask, negatives


# -------------------------------------------------------------------------------------- dropout
def test_train_mode_without_dropout_is_deterministic():
    model = wf.Wav2Vec2ForCTC(small_config("stable", **NO_DROPOUT))
    x = audio()
    np.testing.assert_allclose(model(x, train=True, dropout_rng=KEY).logits, model(x).logits, atol=1e-6)


@pytest.mark.parametrize(
    "arch,field",
    [
        ("stable", "hidden_dropout"),  # the reference's stable Flax encoder never applied it
        ("base", "hidden_dropout"),
        ("stable", "attention_dropout"),
        ("stable", "activation_dropout"),
        ("base", "feat_proj_dropout"),
        ("base", "final_dropout"),
    ],
)
def test_each_dropout_is_active_in_training(arch, field):
    model = wf.Wav2Vec2ForCTC(small_config(arch, **{**NO_DROPOUT, field: 0.5}))
    x = audio()
    first = model(x, train=True, dropout_rng=KEY).logits
    assert differs(first, model(x).logits)
    np.testing.assert_array_equal(first, model(x, train=True, dropout_rng=KEY).logits)  # explicit keys
    assert differs(first, model(x, train=True, dropout_rng=jax.random.key(2)).logits)


def test_quantizer_input_dropout_is_active_in_training():
    config = small_config("base", **{**NO_DROPOUT, "feat_quantizer_dropout": 0.5})
    model = wf.Wav2Vec2ForPreTraining(config)
    x = audio()
    train = model(x, train=True, dropout_rng=KEY, gumbel_rng=KEY)
    again = model(x, train=True, dropout_rng=jax.random.key(3), gumbel_rng=KEY)
    assert differs(train.projected_quantized_states, again.projected_quantized_states)
    np.testing.assert_allclose(train.projected_states, again.projected_states, atol=1e-6)  # only the quantizer's input


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_layerdrop_one_skips_every_layer(arch):
    model = wf.Wav2Vec2Model(small_config(arch, **{**NO_DROPOUT, "layerdrop": 1.0}))
    out = model(audio(), train=True, dropout_rng=KEY, output_hidden_states=True)
    for hidden in out.hidden_states[1:-1]:
        np.testing.assert_array_equal(hidden, out.hidden_states[0])
    eval_out = model(audio(), output_hidden_states=True)
    assert differs(eval_out.hidden_states[-2], eval_out.hidden_states[0])


def _skipped_count_frequencies(counts, num_layers):
    return np.bincount(counts, minlength=num_layers + 1) / len(counts)


def test_conv_adapter_layerdrop_skips_each_layer_with_probability_layerdrop_as_torch():
    """Each adapter layer is skipped independently with probability layerdrop (the reference's rule,
    drawn per layer): the number skipped is Binomial(layers, layerdrop) in Flax and in torch."""
    torch = pytest.importorskip("torch")
    from wav2vec2.backends.torch import modeling as torch_modeling

    p, draws = 0.3, 400
    config = small_config("base", add_adapter=True, num_adapter_layers=2, layerdrop=p)
    expected = np.array([(1 - p) ** 2, 2 * p * (1 - p), p**2])  # 0, 1 or 2 layers skipped
    tolerance = 4 * np.sqrt(expected * (1 - expected) / draws)

    skipped = np.array([modeling.adapter_layers_skipped(config, jax.random.key(i)) for i in range(draws)])
    assert skipped.shape == (draws, 2)
    np.testing.assert_array_less(np.abs(_skipped_count_frequencies(skipped.sum(1), 2) - expected), tolerance)
    assert abs((skipped[:, 0] & skipped[:, 1]).mean() - p**2) < tolerance[2]  # independent layers

    torch.manual_seed(0)
    adapter = torch_modeling.Adapter(config).train()
    hidden = torch.zeros(1, 16, config.hidden_size)  # 16 frames: 4 after both layers, 8 after one
    with torch.no_grad():
        frames = np.array([adapter(hidden).shape[1] for _ in range(draws)])
    counts = np.log2(frames // 4).astype(int)
    np.testing.assert_array_less(np.abs(_skipped_count_frequencies(counts, 2) - expected), tolerance)


def test_conv_adapter_layerdrop_runs_exactly_the_layers_not_skipped():
    config = small_config("base", **{**NO_DROPOUT, "add_adapter": True, "num_adapter_layers": 2, "layerdrop": 0.5})
    params = wf.Wav2Vec2Model(config).params["adapter"]
    hidden = jnp.asarray(np.random.default_rng(0).standard_normal((2, 12, config.hidden_size)), jnp.float32)
    adapter = modeling.Adapter(config)
    # The oracle: a one-layer adapter holding the second layer's weights, in evaluation.
    second_only = modeling.Adapter(config.replace(num_adapter_layers=1)).apply(
        {"params": {"layers_0": params["layers_1"]}}, hidden
    )
    run = jax.jit(lambda h: adapter.apply({"params": params}, h, deterministic=False, skipped=(True, False)))
    np.testing.assert_array_equal(run(hidden), second_only)
    np.testing.assert_array_equal(
        adapter.apply({"params": params}, hidden, deterministic=False, skipped=(True, True)), hidden
    )
    np.testing.assert_array_equal(  # evaluation runs every layer
        adapter.apply({"params": params}, hidden, skipped=(True, True)), adapter.apply({"params": params}, hidden)
    )
    with pytest.raises(ValueError, match="needs adapter_skipped, 2 bools"):
        adapter.apply({"params": params}, hidden, deterministic=False)
    with pytest.raises(ValueError, match="must be made outside jit"):
        jax.jit(lambda key: modeling.adapter_layers_skipped(config, key))(KEY)


def test_conv_adapter_layerdrop_in_a_training_call_changes_the_output_length():
    config = small_config("base", **{**NO_DROPOUT, "add_adapter": True, "num_adapter_layers": 1, "layerdrop": 0.5})
    model = wf.Wav2Vec2ForCTC(config)
    x = audio(samples=800)
    full = feat_extract_output_lengths(config, x.shape[1], add_adapter=True)
    skipped = feat_extract_output_lengths(config, x.shape[1], add_adapter=False)
    lengths = {model(x, train=True, dropout_rng=jax.random.key(i)).logits.shape[1] for i in range(8)}
    assert lengths == {full, skipped}
    assert model(x).logits.shape[1] == full
    key = jax.random.key(3)
    np.testing.assert_array_equal(model(x, train=True, dropout_rng=key).logits,
                                  model(x, train=True, dropout_rng=key).logits)


def test_spec_augment_in_training_uses_the_spec_layer_masks():
    config = small_config("base", **{**NO_DROPOUT, "apply_spec_augment": True, "mask_time_prob": 0.5,
                                     "mask_feature_prob": 0.3, "mask_feature_length": 3})
    model = wf.Wav2Vec2Model(config)
    x = audio()
    trained = model(x, train=True, dropout_rng=KEY, spec_augment_rng=np.random.default_rng(7))
    frames = feat_extract_output_lengths(config, x.shape[1])
    time_mask, feature_mask = spec_augment_masks(config, 2, frames, rng=np.random.default_rng(7))
    assert time_mask.any() and feature_mask.any()
    # The same masks applied by hand: the time mask replaces frames with masked_spec_embed, the
    # feature mask zeroes channels of the projected features.
    expected = model.module.apply(
        {"params": model.params}, x, mask_time_indices=time_mask, mask_feature_indices=feature_mask
    )
    atol, rtol = TOLERANCES[("float32", "hidden")]  # one graph against another: sums may reorder
    np.testing.assert_allclose(trained.last_hidden_state, expected.last_hidden_state, atol=atol, rtol=rtol)
    assert differs(trained.last_hidden_state, model(x).last_hidden_state)


# ------------------------------------------------------------------------------------- quantizer
def test_gumbel_quantizer_uses_explicit_keys_and_temperature():
    config = small_config("stable", **NO_DROPOUT)
    model = wf.Wav2Vec2ForPreTraining(config)
    x = audio()
    mask, negatives = pretraining_inputs(config, x)
    kwargs = dict(mask_time_indices=mask, sampled_negative_indices=negatives, train=True, dropout_rng=KEY)
    a = model(x, gumbel_rng=jax.random.key(5), **kwargs)
    b = model(x, gumbel_rng=jax.random.key(5), **kwargs)
    c = model(x, gumbel_rng=jax.random.key(6), **kwargs)
    np.testing.assert_array_equal(a.projected_quantized_states, b.projected_quantized_states)
    assert differs(a.projected_quantized_states, c.projected_quantized_states)
    assert np.isfinite(a.loss)

    @jax.jit
    def weight_proj_grad(params, temperature):
        inputs = dict(input_values=x, mask_time_indices=mask, sampled_negative_indices=negatives,
                      gumbel_temperature=temperature, deterministic=False)
        rngs = {"dropout": KEY, "layerdrop": KEY, "gumbel": jax.random.key(5)}
        grads = jax.grad(lambda p: model.module.apply({"params": p}, **inputs, rngs=rngs).loss)(params)
        return grads["quantizer"]["weight_proj"]["kernel"]

    hot, cold = weight_proj_grad(model.params, 2.0), weight_proj_grad(model.params, 0.5)
    assert np.abs(hot).max() > 0  # the straight-through estimator passes gradients to the logits
    assert differs(hot, cold)


# --------------------------------------------------------------------------- freezing and remat
def ctc_batch(config, seed=0):
    x = audio(2, 480, seed)
    labels = np.array([[1, 2, 3, 4], [5, 6, -100, -100]])
    return x, labels


def ctc_grads(model, x, labels):
    def loss_fn(params, values):
        return model.module.apply({"params": params}, values, labels=labels).loss

    return jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(model.params, x)


def test_freeze_feature_encoder_and_base_model_and_remat():
    config = small_config("stable", **NO_DROPOUT)
    model = wf.Wav2Vec2ForCTC(config)
    x, labels = ctc_batch(config)
    grads, input_grads = ctc_grads(model, x, labels)

    model.gradient_checkpointing_enable()
    remat_grads, _ = ctc_grads(model, x, labels)
    assert_same_gradients(grads, remat_grads)

    model.freeze_feature_encoder()
    frozen, frozen_input_grads = ctc_grads(model, x, labels)
    conv = frozen["wav2vec2"]["feature_extractor"]
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(conv))
    # the frozen program is another XLA program (other fusions, other float32 sums): 1e-4, as measured
    # on an AMX CPU (8.8e-5 relative on an input gradient), where 1e-5 held on others
    np.testing.assert_allclose(frozen["lm_head"]["kernel"], grads["lm_head"]["kernel"], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(frozen_input_grads, input_grads, rtol=2e-4, atol=1e-6)  # inputs still get gradients

    model.freeze_base_model()
    frozen, _ = ctc_grads(model, x, labels)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(frozen["wav2vec2"]))
    assert np.abs(frozen["lm_head"]["kernel"]).max() > 0


def test_remat_recomputes_with_the_same_dropout_and_layerdrop():
    config = small_config("base", **{**NO_DROPOUT, "hidden_dropout": 0.2, "attention_dropout": 0.2,
                                     "activation_dropout": 0.2, "layerdrop": 0.4, "num_hidden_layers": 3})
    model = wf.Wav2Vec2ForCTC(config)
    x, labels = ctc_batch(config)
    rngs = {"dropout": jax.random.key(3), "layerdrop": jax.random.key(4)}

    def loss_and_grads(module):
        def loss_fn(params):
            return module.apply({"params": params}, x, labels=labels, deterministic=False, rngs=rngs).loss

        return jax.jit(jax.value_and_grad(loss_fn))(model.params)

    loss, grads = loss_and_grads(model.module)
    model.gradient_checkpointing_enable()
    remat_loss, remat_grads = loss_and_grads(model.module)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    assert_same_gradients(grads, remat_grads)
    deterministic = model.module.apply({"params": model.params}, x, labels=labels).loss
    assert abs(float(loss) - float(deterministic)) > 1e-3  # dropout and LayerDrop were on


# ------------------------------------------------------------------------------ optax training
def test_jitted_optax_train_step_reduces_ctc_loss():
    config = small_config("base", **{**NO_DROPOUT, "hidden_dropout": 0.1, "layerdrop": 0.1})
    model = wf.Wav2Vec2ForCTC(config)
    x, labels = ctc_batch(config)
    mask = np.ones_like(x, dtype=np.int32)
    optimizer = optax.adam(3e-3)

    @jax.jit
    def train_step(params, opt_state, key):
        def loss_fn(p):
            rngs = {"dropout": key, "layerdrop": jax.random.fold_in(key, 1)}
            return model.module.apply({"params": p}, x, mask, labels, deterministic=False, rngs=rngs).loss

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = model.params, optimizer.init(model.params)
    start = float(model(x, mask, labels).loss)
    for step in range(8):
        params, opt_state, loss = train_step(params, opt_state, jax.random.key(step))
        assert np.isfinite(loss)
    assert float(model(x, mask, labels, params=params).loss) < start


# ----------------------------------------------------------------------------------------- bf16
@pytest.mark.parametrize("arch", ["base", "stable"])
def test_bfloat16_forward_is_finite_and_close(arch):
    config = small_config(arch, **NO_DROPOUT)
    full = wf.Wav2Vec2ForCTC(config)
    half = wf.Wav2Vec2ForCTC(config, dtype=jnp.bfloat16, params=full.params)
    x, labels = ctc_batch(config)
    a, b = full(x, labels=labels), half(x, labels=labels)
    assert b.logits.dtype == jnp.bfloat16
    assert jax.tree_util.tree_leaves(half.params)[0].dtype == jnp.float32  # parameters stay float32
    assert b.loss.dtype == jnp.float32 and np.isfinite(b.loss)
    scale = np.abs(np.asarray(a.logits)).max()
    np.testing.assert_allclose(np.asarray(b.logits, np.float32), a.logits, atol=0.05 * scale)
    np.testing.assert_allclose(b.loss, a.loss, rtol=0.05)


# ----------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def ctc_model():
    return wf.Wav2Vec2ForCTC(small_config("base"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_values=np.zeros((1, 2, 400), np.float32)), "shape"),
        (dict(input_values=np.zeros((1, 400), np.int16)), "floating"),
        (dict(input_values=np.zeros((1, 20), np.float32)), "at least"),
        (dict(input_values=np.zeros((2, 400), np.float32), attention_mask=np.ones((2, 300))), "attention_mask"),
        (dict(input_values=np.zeros((2, 400), np.float32), labels=np.ones((3, 4), np.int64)), "labels"),
        (dict(input_values=np.zeros((2, 400), np.float32), labels=np.full((2, 4), 99)), "vocab_size"),
        (dict(input_values=np.zeros((2, 400), np.float32), train=True), "dropout_rng"),
        (dict(input_values=np.zeros((2, 400), np.float32), mask_time_indices=np.ones((2, 3), bool)), "mask_time_indices"),
    ],
)
def test_bad_input_is_a_clear_value_error(ctc_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ctc_model(**kwargs)


def test_single_utterance_may_be_one_dimensional(ctc_model):
    x = audio(1, 400)
    np.testing.assert_array_equal(ctc_model(x[0]).logits, ctc_model(x).logits)
