"""Weight-name tables against the reference: PyTorch key sets, TF h5 names, the Flax tree, fairseq."""
import numpy as np
import pytest

from conftest import reference_config, small_config
from wav2vec2.spec import names

REFERENCE_CLASSES = names.HEAD_CLASSES

VARIANTS = {
    "plain": {},
    "no_masking": dict(mask_time_prob=0.0),
    "feature_masking_only": dict(mask_time_prob=0.0, mask_feature_prob=0.1),
    "weighted_sum": dict(use_weighted_layer_sum=True),
    "conv_adapter": dict(add_adapter=True, num_adapter_layers=2),
    "conv_adapter_proj": dict(add_adapter=True, output_hidden_size=12, adapter_kernel_size=2),
    "mms_adapters": dict(adapter_attn_dim=4),
    "no_conv_bias_layer_norm": dict(feat_extract_norm="layer", conv_bias=False),
}


def reference_shapes(config, head):
    """The reference state dict's keys and shapes, parametrization spelling mapped to weight_g/v."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = getattr(transformers, REFERENCE_CLASSES[head])(reference_config(config))
    return {names.normalize_key(k): tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("head", names.HEADS)
def test_canonical_shapes_match_reference(head, arch, variant):
    config = small_config(arch, **VARIANTS[variant])
    if config.add_adapter and head in ("sequence_classification", "audio_frame_classification"):
        pytest.skip("the reference refuses adapters with classification heads")
    expected = reference_shapes(config, head)
    got = names.canonical_shapes(config, head)
    assert got == expected
    assert list(got) == list(expected)  # same order as the reference state dict


@pytest.mark.parametrize("head", names.HEADS)
def test_head_keys_are_exactly_the_keys_outside_the_body(head):
    config = small_config("stable", use_weighted_layer_sum=True)
    shapes = names.canonical_shapes(config, head)
    outside = {k for k in shapes if not k.startswith(names.BODY_PREFIX)}
    assert names.head_keys(config, head) == (outside if head != "model" else frozenset())
    for key in names.head_keys(config, head):
        assert names.head_of_key(key) is not None


def test_head_of_key():
    assert names.head_of_key("lm_head.weight") == "ctc"
    assert names.head_of_key("quantizer.codevectors") == "pretraining"
    assert names.head_of_key("tdnn.0.kernel.weight") == "xvector"
    assert names.head_of_key("wav2vec2.encoder.layer_norm.weight") is None
    assert names.head_of_key("encoder.layer_norm.weight") is None


def test_unknown_head_is_an_error():
    with pytest.raises(ValueError, match="unknown head 'ctc_head'"):
        names.canonical_shapes(small_config(), "ctc_head")


def test_normalize_key_maps_parametrizations():
    prefix = "wav2vec2.encoder.pos_conv_embed.conv."
    assert names.normalize_key(prefix + "parametrizations.weight.original0") == prefix + "weight_g"
    assert names.normalize_key(prefix + "parametrizations.weight.original1") == prefix + "weight_v"
    assert names.normalize_key(prefix + "bias") == prefix + "bias"


# ------------------------------------------------------------------------------------ TF names
def random_state(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("head", names.HEADS)
def test_tf_and_flax_round_trip_every_head(head):
    config = small_config("stable", use_weighted_layer_sum=True, adapter_attn_dim=3)
    state = random_state(names.canonical_shapes(config, head))
    back = names.from_tf_weights(names.to_tf_weights(state))
    assert list(back) == list(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key])
    back = names.from_flax_tree(names.to_flax_tree(state))
    assert set(back) == set(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key])


def test_tf_names_follow_keras_scopes():
    assert names.tf_name("wav2vec2.encoder.layers.3.attention.k_proj.weight") == (
        "wav2vec2/encoder/layers.3/attention/k_proj/kernel:0"
    )
    assert names.tf_name("wav2vec2.feature_extractor.conv_layers.0.layer_norm.bias") == (
        "wav2vec2/feature_extractor/conv_layers.0/layer_norm/beta:0"
    )
    assert names.tf_name("layer_weights") == "layer_weights:0"
    assert names.tf_name("tdnn.1.kernel.weight") == "tdnn.1/kernel/kernel:0"


def test_foreign_names_with_the_wrong_leaf_are_errors():
    with pytest.raises(ValueError, match="k_proj/weight"):
        names.from_tf_weights({"wav2vec2/encoder/layers.0/attention/k_proj/weight:0": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="layer_norm/kernel"):
        names.from_flax_tree({"encoder": {"layer_norm": {"kernel": np.zeros(2)}}})


# ------------------------------------------------------------------ the backends' maps from the table
def every_option(arch, head):
    """A config with every optional weight the head can have (only CTC reads the conv adapter's output)."""
    config = small_config(arch, use_weighted_layer_sum=True, adapter_attn_dim=4, feat_extract_norm="layer")
    return config.replace(add_adapter=True, output_hidden_size=12) if head == "ctc" else config


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_tf_variables_map_onto_exactly_the_canonical_keys(arch):
    tf_backend = pytest.importorskip("wav2vec2.backends.tensorflow")
    for head in names.HEADS:
        config = every_option(arch, head)
        expected = names.canonical_shapes(config, head)
        model = getattr(tf_backend, names.HEAD_CLASSES[head])(config)
        assert model.head == head
        assert list(model.canonical_variables()) == list(expected), head
        assert model.canonical_shapes() == expected, head


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_flax_parameters_map_onto_exactly_the_canonical_keys(arch):
    """Every head's linen tree (traced, not run) through ``flax_key``: exactly the canonical keys and shapes."""
    jax = pytest.importorskip("jax")
    from flax.traverse_util import flatten_dict

    from wav2vec2.backends import flax as flax_backend

    for head in names.HEADS:
        config = every_option(arch, head)
        module = getattr(flax_backend, names.HEAD_CLASSES[head]).module_class(config)
        tree = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, np.zeros((1, 400), np.float32)))
        shapes = {}
        for path, value in flatten_dict(tree["params"]).items():
            key, reversed_axes = names.flax_key(path)
            assert key not in shapes, key
            shapes[key] = value.shape[::-1] if reversed_axes else value.shape
        assert shapes == names.canonical_shapes(config, head), head


def test_an_unknown_tf_variable_is_an_error_never_skipped():
    keras = pytest.importorskip("keras")
    tf_backend = pytest.importorskip("wav2vec2.backends.tensorflow")
    model = tf_backend.Wav2Vec2Model(small_config())
    encoder = model.encoder
    # (object.__setattr__: Keras refuses new state in a built layer, and the walk reads attributes only)
    extra = keras.layers.Dense(2)
    extra.build((None, 2))
    object.__setattr__(encoder, "extra", extra)  # a name the table maps, but no canonical weight of the config
    with pytest.raises(ValueError, match=r"unknown weight names encoder\.extra\.bias, encoder\.extra\.weight"):
        model.canonical_state_dict()
    object.__delattr__(encoder, "extra")
    object.__setattr__(encoder, "scale", keras.Variable(np.ones(2), name="scale"))  # a leaf TF never has
    with pytest.raises(ValueError, match="tf weight 'encoder/scale' matches no known weight name"):
        model.canonical_state_dict()
    object.__delattr__(encoder, "scale")
    object.__setattr__(encoder, "by_name", {"layer_norm": encoder.layer_norm})  # out of the walk's reach
    object.__delattr__(encoder, "layer_norm")
    with pytest.raises(ValueError, match=r"missing weights encoder\.layer_norm\.bias, encoder\.layer_norm\.weight"):
        model.canonical_state_dict()


def test_an_unknown_flax_parameter_is_an_error_never_skipped():
    with pytest.raises(ValueError, match="no TF/Flax layout rule for weight 'encoder.layers.0.scale_factor'"):
        names.flax_key(("encoder", "layers_0", "scale_factor"))
    with pytest.raises(ValueError, match="flax weight 'encoder/layers.0/extra/gamma' matches no known weight name"):
        names.flax_key(("encoder", "layers_0", "extra", "gamma"))
    assert names.flax_key(("encoder", "layers_0", "attention", "k_proj", "kernel")) == (
        "encoder.layers.0.attention.k_proj.weight", True)
    assert names.flax_key(("adapter_layer", "linear_1", "bias")) == ("adapter_layer.linear_1.bias", False)


def _tf_reference_weights(model):
    """{name without first scope: array} for the variables of a reference TF model."""
    return {"/".join(w.name.split("/")[1:]): w.numpy() for w in model.weights}


@pytest.mark.parametrize("arch", ["base", "stable"])
@pytest.mark.parametrize("head", ["model", "ctc", "sequence_classification"])
def test_tf_names_and_layouts_match_reference_tf(head, arch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tf_keras")
    config = small_config(arch)
    ref_config = reference_config(config)
    cls_name = REFERENCE_CLASSES[head]
    torch_model = getattr(transformers, cls_name)(ref_config).eval()
    state = {names.normalize_key(k): v.numpy() for k, v in torch_model.state_dict().items()}
    tf_model = getattr(transformers, "TF" + cls_name)(ref_config)
    tf_model(tf_model.dummy_inputs)
    reference = _tf_reference_weights(tf_model)

    ours = names.to_tf_weights(state)
    assert set(ours) == set(reference)
    for name, array in ours.items():
        assert array.shape == tuple(reference[name].shape), name
    # load ours into the TF model by name; the outputs must then match PyTorch
    by_name = {"/".join(w.name.split("/")[1:]): w for w in tf_model.weights}
    for name, array in ours.items():
        by_name[name].assign(array)
    waveform = np.random.default_rng(0).standard_normal((1, 400)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(waveform))[0].numpy()
    got = tf_model(waveform, training=False)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("head", ["model", "ctc", "pretraining"])
def test_flax_tree_matches_reference_flax(head):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("flax")
    from flax.traverse_util import flatten_dict

    config = small_config("stable")
    ref_config = reference_config(config)
    cls_name = REFERENCE_CLASSES[head]
    torch_model = getattr(transformers, cls_name)(ref_config).eval()
    state = {names.normalize_key(k): v.numpy() for k, v in torch_model.state_dict().items()}
    flax_model = getattr(transformers, "Flax" + cls_name)(ref_config)

    ours = names.to_flax_tree(state)
    reference = flatten_dict(flax_model.params)
    assert {k: v.shape for k, v in flatten_dict(ours).items()} == {k: v.shape for k, v in reference.items()}
    waveform = np.random.default_rng(0).standard_normal((1, 400)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(waveform))[0].numpy()
    got = np.asarray(flax_model(waveform, params=ours)[0])
    np.testing.assert_allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------------------------ fairseq
def test_fairseq_rules_map_pretrained_and_finetuned_names():
    pretrained = {
        "feature_extractor.conv_layers.0.0.weight": "wav2vec2.feature_extractor.conv_layers.0.conv.weight",
        "feature_extractor.conv_layers.0.2.weight": "wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight",
        "feature_extractor.conv_layers.3.2.1.bias": "wav2vec2.feature_extractor.conv_layers.3.layer_norm.bias",
        "post_extract_proj.weight": "wav2vec2.feature_projection.projection.weight",
        "layer_norm.bias": "wav2vec2.feature_projection.layer_norm.bias",
        "mask_emb": "wav2vec2.masked_spec_embed",
        "encoder.pos_conv.0.weight_g": "wav2vec2.encoder.pos_conv_embed.conv.weight_g",
        "encoder.layer_norm.weight": "wav2vec2.encoder.layer_norm.weight",
        "encoder.layers.11.self_attn.out_proj.bias": "wav2vec2.encoder.layers.11.attention.out_proj.bias",
        "encoder.layers.2.self_attn_layer_norm.weight": "wav2vec2.encoder.layers.2.layer_norm.weight",
        "encoder.layers.2.fc1.weight": "wav2vec2.encoder.layers.2.feed_forward.intermediate_dense.weight",
        "encoder.layers.2.fc2.bias": "wav2vec2.encoder.layers.2.feed_forward.output_dense.bias",
        "encoder.layers.2.final_layer_norm.bias": "wav2vec2.encoder.layers.2.final_layer_norm.bias",
        "quantizer.vars": "quantizer.codevectors",
        "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
        "project_q.bias": "project_q.bias",
        "final_proj.weight": "project_hid.weight",
        "w2v_encoder.w2v_model.encoder.layers.0.fc1.bias": "wav2vec2.encoder.layers.0.feed_forward.intermediate_dense.bias",
        "w2v_encoder.proj.weight": "lm_head.weight",
    }
    for key, expected in pretrained.items():
        assert names.fairseq_name(key) == expected, key


def test_unknown_fairseq_keys_are_listed():
    with pytest.raises(ValueError, match=r"target_glu\.0\.weight"):
        names.fairseq_to_canonical({"mask_emb": np.zeros(2), "target_glu.0.weight": np.zeros(2)})
