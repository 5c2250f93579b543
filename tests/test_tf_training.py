"""Training and export with the Keras 3 backend: XLA train steps on CPU, gradient checkpointing,
Keras fit, SavedModel export."""
import collections

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from conftest import HEADS, small_config  # noqa: E402
from test_tf_modeling import CLASS_NAMES, frames, head_inputs, padded_batch  # noqa: E402
from wav2vec2.backends import tensorflow as W  # noqa: E402
from wav2vec2.backends.tensorflow import modeling  # noqa: E402
from wav2vec2.backends.tensorflow.training import _seed_generators  # noqa: E402
from wav2vec2.spec import masking  # noqa: E402


@pytest.mark.parametrize("head", HEADS)
def test_xla_train_step_on_cpu(head):
    """Forward and backward of every head compile with XLA (the grouped positional conv included)."""
    arch = "stable" if head in ("ctc", "xvector") else "base"
    # Two layers keep the XLA compile short; LayerDrop on, so its conditional compiles too. The CTC
    # model carries MMS adapters and the bare model the conv adapter, so that they train as well (without
    # LayerDrop there: dropping a strided adapter conv changes the sequence length, which XLA cannot take).
    config = small_config(
        arch, num_hidden_layers=2, layerdrop=0.0 if head == "model" else 0.5,
        adapter_attn_dim=4 if head == "ctc" else None, add_adapter=head == "model", num_adapter_layers=1,
    )
    model = getattr(W, CLASS_NAMES[head])(config)
    if head == "ctc":  # recomputed layers (with their LayerDrop conditional) compile too
        model.gradient_checkpointing_enable()
    waveforms, attention_mask = padded_batch()
    inputs = head_inputs(config, head, np.random.default_rng(0))
    if head != "pretraining":  # under XLA, SpecAugment masks are inputs (drawing them calls NumPy)
        mask = masking.pretraining_mask(config, 2, frames(config), rng=np.random.default_rng(0), min_masks=1)
        inputs["mask_time_indices"] = mask
    if head == "model":
        # The bare model has no loss: push its output along a random direction.
        direction = tf.constant(np.random.default_rng(1).standard_normal(config.hidden_size), tf.float32)
        loss_of = lambda outputs: tf.reduce_mean(outputs.last_hidden_state * direction)  # noqa: E731
    else:
        loss_of = lambda outputs: outputs.loss  # noqa: E731
    optimizer = keras.optimizers.SGD(0.01)
    optimizer.build(model.trainable_variables)
    inputs = {k: tf.constant(v) for k, v in inputs.items()}

    @tf.function(jit_compile=True)
    def train_step(waveforms, attention_mask, inputs):
        with tf.GradientTape() as tape:
            loss = loss_of(model(waveforms, attention_mask=attention_mask, training=True, **inputs))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss, gradients

    before = model.canonical_state_dict()
    loss, gradients = train_step(tf.constant(waveforms), tf.constant(attention_mask), inputs)
    assert np.isfinite(loss.numpy())
    assert all(g is None or np.isfinite(g.numpy()).all() for g in gradients)
    pos_conv = "encoder.pos_conv_embed.conv.weight_v"
    key = pos_conv if head == "model" else "wav2vec2." + pos_conv
    assert not np.array_equal(before[key], model.canonical_state_dict()[key]), "positional conv got no update"


def _reseed(model, seed):
    """Every seed generator of the model to a fixed state, as the trainer does for each update."""
    for index, generator in enumerate(_seed_generators(model)):
        generator.state.assign(np.array([seed, index], dtype=generator.state.dtype))


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_gradient_checkpointing_recomputes_with_the_same_dropout_and_layerdrop(arch, monkeypatch):
    config = small_config(
        arch, num_hidden_layers=3, layerdrop=0.4, hidden_dropout=0.2, attention_dropout=0.2, activation_dropout=0.2,
        mask_time_prob=0.0,
    )
    model = W.Wav2Vec2ForCTC(config)
    waveforms, attention_mask = padded_batch()
    labels = head_inputs(config, "ctc", np.random.default_rng(0))["labels"]
    calls = collections.Counter()  # layer calls, forward and recomputed
    for layer_class in (modeling.ConvLayer, modeling.StableEncoderLayer if arch == "stable" else modeling.EncoderLayer):
        def counted(self, *args, _call=layer_class.call, **kwargs):
            calls[type(self).__name__] += 1
            return _call(self, *args, **kwargs)

        monkeypatch.setattr(layer_class, "call", counted)

    def step(seed):
        _reseed(model, seed)
        calls.clear()
        with tf.GradientTape() as tape:
            loss = model(waveforms, attention_mask=attention_mask, labels=labels, training=True).loss
        gradients = tape.gradient(loss, model.trainable_variables)
        return float(loss), [None if g is None else g.numpy() for g in gradients], dict(calls)

    seeds = (3, 4)
    plain = [step(seed) for seed in seeds]
    model.gradient_checkpointing_enable()
    checkpointed = [step(seed) for seed in seeds]
    for (loss, gradients, plain_calls), (loss_ckpt, gradients_ckpt, ckpt_calls) in zip(plain, checkpointed):
        assert loss_ckpt == loss  # the same dropout masks and LayerDrop draws: bit for bit
        for g, g_ckpt in zip(gradients, gradients_ckpt):
            assert (g is None) == (g_ckpt is None)
            if g is not None:
                np.testing.assert_array_equal(g_ckpt, g)
        # every layer that ran forward ran again in the backward pass
        assert ckpt_calls == {name: 2 * count for name, count in plain_calls.items()}
    # dropout and LayerDrop were on: the draws change with the seed, and at least one layer was dropped
    assert len({loss for loss, _, _ in plain}) == len(seeds)
    layer_name = "StableEncoderLayer" if arch == "stable" else "EncoderLayer"
    assert min(c[layer_name] for _, _, c in plain) < config.num_hidden_layers
    model.gradient_checkpointing_disable()
    assert step(seeds[0])[2] == plain[0][2]


def test_the_trainer_keeps_gradient_checkpointing():
    from wav2vec2.backends.tensorflow.training import TensorFlowTrainer
    from wav2vec2.training.loop import TrainSettings

    model = W.Wav2Vec2ForCTC(small_config("base"))
    model.gradient_checkpointing_enable()
    trainer = TensorFlowTrainer("ctc")
    trainer.init(model, TrainSettings(max_steps=1))  # rebuilds the model in the strategy's scope
    assert trainer.model is not model
    assert trainer.model.wav2vec2.encoder.gradient_checkpointing
    assert trainer.model.wav2vec2.feature_extractor.gradient_checkpointing


def test_conv_adapter_layerdrop_trains_in_a_graph():
    config = small_config("base", layerdrop=0.5, add_adapter=True, num_adapter_layers=2)
    model = W.Wav2Vec2ForCTC(config)
    waveforms, attention_mask = padded_batch()
    labels = head_inputs(config, "ctc", np.random.default_rng(0))["labels"][:, :2]
    mask = masking.pretraining_mask(config, 2, frames(config), rng=np.random.default_rng(0), min_masks=1)

    @tf.function
    def loss_and_gradients(waveforms):
        with tf.GradientTape() as tape:
            outputs = model(waveforms, attention_mask=attention_mask, labels=labels, mask_time_indices=mask, training=True)
        return outputs.logits, tape.gradient(outputs.loss, model.trainable_variables)

    lengths = set()
    for _ in range(8):  # each adapter layer is skipped or not: the output length shows which ran
        logits, gradients = loss_and_gradients(tf.constant(waveforms))
        lengths.add(logits.shape[1])
        assert all(g is None or np.isfinite(g.numpy()).all() for g in gradients)
    assert len(lengths) > 1


def test_keras_fit_on_a_ctc_batch():
    config = small_config("base", layerdrop=0.1)
    model = W.Wav2Vec2ForCTC(config)
    waveforms, attention_mask = padded_batch()
    labels = head_inputs(config, "ctc", np.random.default_rng(0))["labels"]
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = {"input_values": waveforms, "attention_mask": attention_mask}
    initial = float(model.evaluate(x, labels, batch_size=2, verbose=0))
    history = model.fit(x, labels, batch_size=2, epochs=4, verbose=0)
    assert len(history.history["loss"]) == 4 and all(np.isfinite(history.history["loss"]))
    # Compare in eval mode, where SpecAugment, dropout and LayerDrop are off.
    assert float(model.evaluate(x, labels, batch_size=2, verbose=0)) < initial


def test_keras_fit_for_pretraining_takes_masks_and_negatives():
    config = small_config("stable")
    model = W.Wav2Vec2ForPreTraining(config)
    waveforms, attention_mask = padded_batch()
    inputs = head_inputs(config, "pretraining", np.random.default_rng(0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit({"input_values": waveforms, "attention_mask": attention_mask, **inputs}, batch_size=2, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))


def test_exported_saved_model_gives_the_same_logits(tmp_path):
    config = small_config("stable")
    model = W.Wav2Vec2ForCTC(config)
    waveforms, attention_mask = padded_batch()
    expected = model(waveforms, attention_mask=attention_mask).logits.numpy()
    W.export_ctc_saved_model(model, tmp_path / "export")
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    logits = reloaded.serve(tf.constant(waveforms), tf.constant(attention_mask)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    # Any batch size and length: the signature is (None, None).
    short = reloaded.serve(tf.constant(waveforms[:1, :900]), tf.constant(attention_mask[:1, :900])).numpy()
    np.testing.assert_allclose(short, model(waveforms[:1, :900]).logits.numpy(), atol=1e-5)


def test_export_refuses_other_heads(tmp_path):
    with pytest.raises(ValueError, match="needs a Wav2Vec2ForCTC"):
        W.export_ctc_saved_model(W.Wav2Vec2Model(small_config("base")), tmp_path / "export")
