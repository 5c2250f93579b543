"""The backend contract: the three backends are translations of each other.

This file is the contract, and docs/design.md restates it in prose:

1. Each backend exports the same classes in the same order (``__all__``): Wav2Vec2Model, the five
   heads, Wav2Vec2PreTrainedModel, then the four output dataclasses. TensorFlow adds ``ctc_loss``
   and ``export_ctc_saved_model`` at the end.
2. Output dataclasses have the same fields in the same order (``loss`` first, as the reference).
3. Constructors take ``config`` first (and the CTC head ``target_lang`` second); forward methods
   (torch ``forward``, Keras ``call``, Flax ``__call__``) take the same arguments in the same order
   with the same defaults. After them come only the framework's own controls, listed in
   ``FRAMEWORK_EXTRAS`` (Keras ``training``; Flax ``params``, ``dropout_rng``, ``train`` and the
   pretraining ``gumbel_rng`` / ``spec_augment_rng``; Flax ``seed`` / ``dtype`` / ``params``
   in constructors).
4. The same public methods with the same signatures: from_pretrained, save_pretrained,
   canonical_state_dict, load_canonical_state_dict, freeze_feature_encoder,
   gradient_checkpointing_enable/disable, freeze_base_model
   on every head, load_adapter on the CTC head, set_gumbel_temperature on pretraining.
5. Loading, saving and adapters are wav2vec2.pretrained, written once: a save leaves exactly one set
   of weight files and ``architectures`` in config.json; a load reads any format, bfloat16 included;
   an adapter file must be complete, a missing one is a FileNotFoundError, and loading one never
   changes a config another model shares.
6. Input and label checks are wav2vec2.spec.checks, one error text each: the same ValueError in
   every backend (empty batch, too-short audio, an all-zero mask with labels, a CTC blank outside
   the vocabulary).
7. Numbers: the CTC loss of every backend is the NumPy reference ``wav2vec2.spec.ctc_loss``;
   with use_weighted_layer_sum every backend returns the hidden states it summed.
"""
import dataclasses
import inspect
import json
import logging
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from conftest import small_config  # noqa: E402
from wav2vec2 import io  # noqa: E402
from wav2vec2.backends import flax as flax_backend  # noqa: E402
from wav2vec2.backends import tensorflow as tf_backend  # noqa: E402
from wav2vec2.backends import torch as torch_backend  # noqa: E402
from wav2vec2.pretrained import adapter_names  # noqa: E402
from wav2vec2.spec.ctc_loss import ctc_loss as reference_ctc_loss  # noqa: E402
from wav2vec2.spec.lengths import feat_extract_output_lengths, min_input_length  # noqa: E402
from wav2vec2.spec.names import canonical_shapes, normalize_key  # noqa: E402

BACKENDS = {"torch": torch_backend, "tensorflow": tf_backend, "flax": flax_backend}
EXPORT_EXTRAS = {"torch": [], "tensorflow": ["ctc_loss", "export_ctc_saved_model"], "flax": []}
MODEL_CLASSES = [
    "Wav2Vec2Model", "Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification", "Wav2Vec2ForAudioFrameClassification",
    "Wav2Vec2ForXVector", "Wav2Vec2ForPreTraining",
]
HEADS = MODEL_CLASSES[1:]
OUTPUTS = ["Wav2Vec2BaseModelOutput", "HeadOutput", "XVectorOutput", "Wav2Vec2ForPreTrainingOutput"]
FRAMEWORK_EXTRAS = {
    "torch": set(),
    "tensorflow": {"training", "kwargs"},
    "flax": {"params", "dropout_rng", "train", "gumbel_rng", "spec_augment_rng", "seed", "dtype"},
}
METHODS = {
    "from_pretrained": MODEL_CLASSES, "save_pretrained": MODEL_CLASSES, "canonical_state_dict": MODEL_CLASSES,
    "load_canonical_state_dict": MODEL_CLASSES, "freeze_feature_encoder": MODEL_CLASSES,
    "gradient_checkpointing_enable": MODEL_CLASSES, "gradient_checkpointing_disable": MODEL_CLASSES,
    "freeze_base_model": HEADS, "load_adapter": ["Wav2Vec2ForCTC"], "set_gumbel_temperature": ["Wav2Vec2ForPreTraining"],
}


def _forward(cls):
    for name in ("forward", "call", "__call__"):
        if name in vars(cls) or any(name in vars(base) for base in cls.__mro__[1:-1] if base.__module__.startswith("wav2vec2")):
            return getattr(cls, name)
    raise AssertionError(cls)


def _parameters(function, backend):
    """(name, default, keyword-only?) of the shared parameters, and the names of the framework's own."""
    shared, extras = [], []
    for p in list(inspect.signature(function).parameters.values())[1:]:  # without self / cls
        if p.name in FRAMEWORK_EXTRAS[backend] and not (backend == "flax" and p.name == "spec_augment_rng"
                                                        and p.kind is not p.KEYWORD_ONLY):
            extras.append(p.name)
        elif p.kind is p.VAR_KEYWORD:
            shared.append(("**" + p.name, None))
        else:
            shared.append((p.name, p.default))
    return shared, extras


# ------------------------------------------------------------------------------------ the API
def test_same_exported_names_in_the_same_order():
    expected = MODEL_CLASSES + ["Wav2Vec2PreTrainedModel"] + OUTPUTS
    for name, backend in BACKENDS.items():
        assert list(backend.__all__) == expected + EXPORT_EXTRAS[name], name
        for exported in backend.__all__:
            assert hasattr(backend, exported), (name, exported)


def test_output_dataclasses_have_the_same_fields_in_the_same_order():
    fields = {name: {out: [f.name for f in dataclasses.fields(getattr(b, out))] for out in OUTPUTS}
              for name, b in BACKENDS.items()}
    assert fields["torch"] == fields["tensorflow"] == fields["flax"]
    assert fields["torch"]["HeadOutput"] == ["loss", "logits", "hidden_states", "attentions"]


@pytest.mark.parametrize("class_name", MODEL_CLASSES)
def test_constructor_and_forward_signatures_match(class_name):
    constructors, forwards = {}, {}
    for name, backend in BACKENDS.items():
        cls = getattr(backend, class_name)
        constructors[name], _ = _parameters(cls.__init__, name)
        forwards[name], _ = _parameters(_forward(cls), name)
    assert constructors["torch"] == constructors["tensorflow"] == constructors["flax"], constructors
    assert constructors["torch"][0][0] == "config"
    assert forwards["torch"] == forwards["tensorflow"] == forwards["flax"], forwards
    assert [n for n, _ in forwards["torch"][:2]] == ["input_values", "attention_mask"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_same_public_methods_with_the_same_signatures(method):
    for class_name in METHODS[method]:
        signatures = {}
        for name, backend in BACKENDS.items():
            cls = getattr(backend, class_name)
            assert hasattr(cls, method), (name, class_name, method)
            shared, _ = _parameters(getattr(cls, method), name)
            if method == "save_pretrained":  # the native format is each backend's own default
                shared = [(n, d) for n, d in shared if n != "safe_serialization"]
            signatures[name] = shared
        assert len({repr(s) for s in signatures.values()}) == 1, (class_name, signatures)
    # freeze_base_model is a head's: the bare model has no base to freeze
    for backend in BACKENDS.values():
        if method == "freeze_base_model":
            assert not hasattr(backend.Wav2Vec2Model, method)


# ------------------------------------------------------------------------------------ shared models
def _models(head, config, seed=0, only=tuple(BACKENDS)):
    """The same weights in the three backends (drawn by torch), or in those named in ``only``."""
    torch.manual_seed(seed)
    name = {"ctc": "Wav2Vec2ForCTC", "sequence_classification": "Wav2Vec2ForSequenceClassification",
            "model": "Wav2Vec2Model", "xvector": "Wav2Vec2ForXVector",
            "audio_frame_classification": "Wav2Vec2ForAudioFrameClassification"}[head]
    pt = getattr(torch_backend, name)(config).eval()
    state = pt.canonical_state_dict()
    models = {"torch": pt}
    for backend in ("tensorflow", "flax"):
        if backend in only:
            models[backend] = getattr(BACKENDS[backend], name)(config)
            models[backend].load_canonical_state_dict(state)
    return {k: v for k, v in models.items() if k in only}


def _numpy(value):
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def _batch(config, rng, batch=2):
    samples = 3 * min_input_length(config)
    x = rng.standard_normal((batch, samples)).astype(np.float32)
    mask = np.ones((batch, samples), np.int32)
    if batch > 1:
        mask[1, samples // 2:] = 0
        x[1, samples // 2:] = 0
    return x, mask


@pytest.fixture(scope="module")
def ctc_models():
    return _models("ctc", small_config("stable", adapter_attn_dim=4, mask_time_prob=0.0))


# ------------------------------------------------------------------------------------ saves and loads
FORMAT_FILES = {"torch": "model.safetensors", "tensorflow": "tf_model.h5", "flax": "flax_model.msgpack"}


def test_save_pretrained_leaves_exactly_the_new_weights_and_every_backend_reloads_them(tmp_path, caplog):
    config = small_config("base")
    for saver in BACKENDS:
        directory = tmp_path / saver
        # Stale weights of other formats, and stale shards of one, from an earlier save.
        old = _models("ctc", config, seed=1, only=("torch",))["torch"].canonical_state_dict()
        io.write_state_dict(old, directory, format="safetensors")
        io.write_state_dict(old, directory, format="pytorch", max_shard_size=2000)
        io.write_state_dict(old, directory, format="tensorflow" if saver != "tensorflow" else "flax")
        model = _models("ctc", config, seed=2, only=(saver,))[saver]
        with caplog.at_level(logging.WARNING):
            model.save_pretrained(directory)
        assert "removed weight files of other formats" in caplog.text
        assert sorted(os.listdir(directory)) == sorted(["config.json", FORMAT_FILES[saver]]), saver
        with open(directory / "config.json") as f:
            assert json.load(f)["architectures"] == ["Wav2Vec2ForCTC"]
        saved = model.canonical_state_dict()
        for loader, backend in BACKENDS.items():
            reloaded = backend.Wav2Vec2ForCTC.from_pretrained(directory).canonical_state_dict()
            for key, value in saved.items():
                np.testing.assert_array_equal(reloaded[key], value, err_msg=f"{saver} -> {loader}: {key}")


def _bf16_checkpoints(tmp_path, config):
    """model.safetensors and pytorch_model.bin holding bfloat16 weights; the oracle is their float32 values."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(3)
    model = torch_backend.Wav2Vec2ForCTC(config)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    expected = {normalize_key(k): v.float().numpy() for k, v in state.items()}  # torch's own bf16 -> fp32
    (tmp_path / "st").mkdir()
    (tmp_path / "bin").mkdir()
    for sub in ("st", "bin"):
        config.save_pretrained(tmp_path / sub)
    safetensors_torch.save_file(state, str(tmp_path / "st" / "model.safetensors"))
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    return expected


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_bfloat16_checkpoints_load_in_every_backend(tmp_path, backend):
    config = small_config("stable")
    expected = _bf16_checkpoints(tmp_path, config)
    for sub in ("st", "bin"):
        loaded = BACKENDS[backend].Wav2Vec2ForCTC.from_pretrained(tmp_path / sub).canonical_state_dict()
        assert sorted(loaded) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(np.asarray(loaded[key], np.float32), value, err_msg=f"{sub}: {key}")


# ------------------------------------------------------------------------------------ adapters
def _write_adapter(directory, config, lang, vocab_size, seed, complete=True):
    """adapter.<lang>.safetensors with random weights (without its first adapter weight unless complete)."""
    rng = np.random.default_rng(seed)
    shapes = canonical_shapes(config.replace(vocab_size=vocab_size), "ctc")
    names = adapter_names(config)[0 if complete else 1:]
    state = {k: rng.standard_normal(shapes[k]).astype(np.float32) for k in names}
    io.write_adapter(state, directory, lang)
    return state


def test_load_adapter_is_the_same_everywhere_and_leaves_shared_configs_alone(tmp_path, ctc_models):
    config = ctc_models["torch"].config
    directory = tmp_path / "mms"
    ctc_models["torch"].save_pretrained(directory)
    adapter = _write_adapter(directory, config, "fra", config.vocab_size + 3, seed=4)
    _write_adapter(directory, config, "bad", config.vocab_size, seed=5, complete=False)
    for name, backend in BACKENDS.items():
        shared = config.replace()
        model, bystander = backend.Wav2Vec2ForCTC(shared), backend.Wav2Vec2ForCTC(shared)
        model.load_adapter("fra", directory)
        assert shared.vocab_size == config.vocab_size and bystander.config.vocab_size == config.vocab_size, name
        assert model.config.vocab_size == config.vocab_size + 3 and model.target_lang == "fra"
        state = model.canonical_state_dict()
        for key, value in adapter.items():
            np.testing.assert_array_equal(state[key], value, err_msg=f"{name}: {key}")
        x, _ = _batch(config, np.random.default_rng(0), batch=1)
        assert _numpy(model(x).logits).shape[-1] == config.vocab_size + 3
        with pytest.raises(ValueError, match="adapter's keys do not match this model: missing"):
            model.load_adapter("bad", directory)
        with pytest.raises(FileNotFoundError, match="no adapter for language 'xx'"):
            model.load_adapter("xx", directory)
        assert model.target_lang == "fra", name  # a refused adapter changes nothing


# ------------------------------------------------------------------------------------ input checks
def _with_config(model, config, *args):
    """Call ``model`` with ``config`` in place of its own (restored afterwards)."""
    own = model.config
    model.config = config
    try:
        return model(*args)
    finally:
        model.config = own


@pytest.mark.parametrize("case", ["empty batch", "empty audio", "zero mask with labels", "blank outside vocab"])
def test_bad_inputs_give_the_same_value_error_in_every_backend(case, ctc_models):
    config = ctc_models["torch"].config
    x, mask = _batch(config, np.random.default_rng(1))
    labels = np.array([[1, 2, 3], [4, 5, -100]])
    expected = {
        "empty batch": r"input_values is an empty batch \(batch size 0\)",
        "empty audio": "input_values has 0 samples; the conv feature encoder needs at least",
        "zero mask with labels": r"attention_mask is all zeros in batch row\(s\) \[1\]",
        "blank outside vocab": r"config.pad_token_id=40 is the CTC blank and must lie in \[0, vocab_size=12\)",
    }[case]
    for name, model in ctc_models.items():
        if case == "empty batch":
            call = lambda: model(np.zeros((0, x.shape[1]), np.float32))  # noqa: E731
        elif case == "empty audio":
            call = lambda: model(np.zeros((2, 0), np.float32))  # noqa: E731
        elif case == "zero mask with labels":
            zero = mask.copy()
            zero[1] = 0
            call = lambda: model(x, zero, labels)  # noqa: E731
        else:
            broken = config.replace()
            broken.pad_token_id = 40  # changed after the config was validated
            call = lambda: _with_config(model, broken, x, mask, labels)  # noqa: E731
        with pytest.raises(ValueError, match=expected):
            call()
    # The same config refused when made: the check at construction names the field.
    with pytest.raises(ValueError, match="pad_token_id"):
        small_config("base", pad_token_id=12)


def test_ctc_loss_of_every_backend_is_the_numpy_reference(ctc_models):
    config = ctc_models["torch"].config
    x, mask = _batch(config, np.random.default_rng(2))
    labels = np.array([[1, 2, 2, 3], [4, 5, -100, -100]])
    for name, model in ctc_models.items():
        for reduction in ("sum", "mean"):
            if reduction != config.ctc_loss_reduction:  # the same weights, another reduction
                model = type(model)(config.replace(ctc_loss_reduction=reduction))
                model.load_canonical_state_dict(ctc_models["torch"].canonical_state_dict())
            out = model(x, mask, labels)
            logits = _numpy(out.logits).astype(np.float64)
            log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            lengths = feat_extract_output_lengths(config, mask.sum(-1))
            expected = reference_ctc_loss(log_probs, labels, lengths, blank=config.pad_token_id, reduction=reduction)
            np.testing.assert_allclose(float(_numpy(out.loss)), expected, rtol=1e-5, err_msg=f"{name} {reduction}")


def test_weighted_layer_sum_returns_the_hidden_states_in_every_backend():
    config = small_config("base", use_weighted_layer_sum=True)
    x, mask = _batch(config, np.random.default_rng(3))
    hidden = {}
    for name, model in _models("sequence_classification", config).items():
        out = model(x, mask)  # hidden states not asked for
        assert out.hidden_states is not None and len(out.hidden_states) == config.num_hidden_layers + 1, name
        hidden[name] = _numpy(out.hidden_states[-1])
    np.testing.assert_allclose(hidden["tensorflow"], hidden["torch"], atol=1e-4)
    np.testing.assert_allclose(hidden["flax"], hidden["torch"], atol=1e-4)


def test_classification_heads_take_mask_time_indices_in_every_backend():
    config = small_config("base", mask_time_prob=0.5)
    x, mask = _batch(config, np.random.default_rng(4))
    frames = feat_extract_output_lengths(config, x.shape[1])
    mask_time = np.zeros((2, frames), bool)
    mask_time[:, 1:4] = True
    logits = {}
    for name, model in _models("sequence_classification", config).items():
        plain = _numpy(model(x, mask).logits)
        masked = _numpy(model(x, mask, mask_time_indices=mask_time).logits)
        assert not np.allclose(plain, masked), name  # a given time mask applies, in eval mode too
        logits[name] = masked
    np.testing.assert_allclose(logits["tensorflow"], logits["torch"], atol=1e-4)
    np.testing.assert_allclose(logits["flax"], logits["torch"], atol=1e-4)


# ------------------------------------------------------------------------------------ default randomness
def _seeded_training_forward(name, model, x, mask, seed):
    """The bare model's training output after seeding the framework as one seeds its dropout."""
    if name == "torch":
        torch.manual_seed(seed)
        model.train()
        try:
            return _numpy(model(x, mask).last_hidden_state)
        finally:
            model.eval()
    if name == "tensorflow":
        from wav2vec2.backends.tensorflow.training import _seed_generators

        for index, generator in enumerate(_seed_generators(model)):  # as the trainer reseeds every update
            generator.state.assign(np.array([seed, index], dtype=generator.state.dtype))
        return _numpy(model(x, mask, training=True).last_hidden_state)
    import jax

    return _numpy(model(x, mask, train=True, dropout_rng=jax.random.key(seed)).last_hidden_state)


def test_spec_augment_masks_not_passed_are_drawn_by_the_spec_layer_seeded_by_each_framework(monkeypatch):
    """Masks neither passed nor given a Generator: every backend draws them with wav2vec2.spec.masking,
    with the Generator masking.seeded_generator makes from its framework's random state; so seeding the
    framework reproduces them, and one Generator makes the three backends draw the same masks."""
    from wav2vec2.spec import masking

    config = small_config("base", mask_time_prob=0.5, mask_feature_prob=0.3, mask_feature_length=2, hidden_dropout=0.0,
                          attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)
    x, mask = _batch(config, np.random.default_rng(5))
    models = _models("model", config)
    seeded_generator = masking.seeded_generator
    words = []

    def recorded(seed):
        words.append(np.asarray(seed).tolist())
        return seeded_generator(seed)

    monkeypatch.setattr(masking, "seeded_generator", recorded)
    for name, model in models.items():
        words.clear()
        first = _seeded_training_forward(name, model, x, mask, seed=1)
        again = _seeded_training_forward(name, model, x, mask, seed=1)
        other = _seeded_training_forward(name, model, x, mask, seed=2)
        assert len(words) == 3 and words[0] == words[1] != words[2], (name, words)
        np.testing.assert_array_equal(again, first, err_msg=name)
        assert not np.allclose(other, first), name
        assert not np.allclose(first, _numpy(model(x, mask).last_hidden_state)), name  # masks were applied

    monkeypatch.setattr(masking, "seeded_generator", lambda seed: np.random.default_rng(7))
    outputs = {name: _seeded_training_forward(name, model, x, mask, seed=1) for name, model in models.items()}
    np.testing.assert_allclose(outputs["tensorflow"], outputs["torch"], atol=1e-4)
    np.testing.assert_allclose(outputs["flax"], outputs["torch"], atol=1e-4)


# ------------------------------------------------------------------------------------ framework transforms
@pytest.fixture(scope="module")
def flax_ctc():
    config = small_config("base", mask_time_prob=0.0)
    return flax_backend.Wav2Vec2ForCTC(config), config


def test_flax_model_inside_jax_jit(flax_ctc):
    import jax

    model, config = flax_ctc
    x, mask = _batch(config, np.random.default_rng(5))
    eager = np.asarray(model(x, mask).logits)
    jitted = jax.jit(lambda x, m: model(x, m).logits)(x, mask)
    np.testing.assert_allclose(np.asarray(jitted), eager, atol=1e-5)


def test_flax_model_inside_jax_grad(flax_ctc):
    import jax

    model, config = flax_ctc
    x, mask = _batch(config, np.random.default_rng(6))
    labels = np.array([[1, 2, 3], [4, 5, -100]])
    loss_of = lambda params: model(x, mask, labels, params=params).loss  # noqa: E731
    grads = jax.grad(loss_of)(model.params)
    # Oracle: a central finite difference along the gradient direction.
    leaves, tree = jax.tree_util.tree_flatten(grads)
    norm = np.sqrt(sum(float((np.asarray(g) ** 2).sum()) for g in leaves))
    assert norm > 0
    step = 1e-3 / norm
    shift = lambda sign: jax.tree_util.tree_map(lambda p, g: p + sign * step * g, model.params, grads)  # noqa: E731
    numeric = (float(loss_of(shift(1))) - float(loss_of(shift(-1)))) / (2 * step)
    np.testing.assert_allclose(numeric, norm**2, rtol=2e-2)


def test_flax_model_inside_jax_vmap(flax_ctc):
    import jax

    model, config = flax_ctc
    x, _ = _batch(config, np.random.default_rng(7), batch=3)
    mapped = jax.vmap(lambda one: model(one).logits[0])(x)  # one waveform (samples,) per call
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(model(x).logits), atol=1e-5)


def test_torch_under_dynamic_int8_quantization():
    config = small_config("base", mask_time_prob=0.0, hidden_size=32, intermediate_size=40)
    torch.manual_seed(8)
    model = torch_backend.Wav2Vec2ForCTC(config).eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    x, mask = _batch(config, np.random.default_rng(8))
    with torch.inference_mode():
        expected = model(x, mask).logits
        got = quantized(x, mask).logits
    assert type(quantized.wav2vec2.encoder.layers[0].attention.q_proj) is not torch.nn.Linear
    # int8 weights: close to the float model, not equal to it
    assert not torch.equal(got, expected)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=0.1 * float(expected.abs().max()))


def test_torch_under_torch_compile():
    config = small_config("base", mask_time_prob=0.0)
    torch.manual_seed(9)
    model = torch_backend.Wav2Vec2ForCTC(config).eval()
    # Dynamo's tracing and AOTAutograd's functionalisation and decompositions (what a model's code
    # can break); inductor's code generation is torch's own and costs a minute of C++ compiles here.
    compiled = torch.compile(model, backend="aot_eager", fullgraph=False)
    x, mask = _batch(config, np.random.default_rng(9))
    x, mask = torch.from_numpy(x), torch.from_numpy(mask)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x, mask).logits, model(x, mask).logits)
