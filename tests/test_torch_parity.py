"""PyTorch backend against the reference (transformers 4.57.6): every head, both architectures.

Each reference model gets noise added to every tensor (so LayerNorms, biases and the weight norm are
not at their trivial init) and the same weights are copied into ours through the canonical dict.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import HEADS, reference_config, small_config  # noqa: E402
from wav2vec2.backends import torch as ours  # noqa: E402
from wav2vec2.spec.lengths import feat_extract_output_lengths  # noqa: E402
from wav2vec2.spec.masking import pretraining_mask  # noqa: E402
from wav2vec2.spec.names import HEAD_CLASSES  # noqa: E402
from wav2vec2.spec.negatives import sample_negative_indices  # noqa: E402

ATOL = 1e-5
GRAD_ATOL = 1e-4

CLASSES = HEAD_CLASSES
ARCHS = ("base", "stable")


def canonical_name(name: str) -> str:
    return name.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )


def reference_canonical(reference) -> dict:
    return {canonical_name(k): v.detach().cpu().numpy().copy() for k, v in reference.state_dict().items()}


def paired_models(head: str, config, seed: int = 0, attn_implementation="sdpa"):
    """(ours, reference) in eval mode, with the same perturbed random weights."""
    reference_cfg = reference_config(config)
    reference_cfg._attn_implementation = attn_implementation
    reference = getattr(transformers, CLASSES[head])(reference_cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    model = getattr(ours, CLASSES[head])(config)
    model.load_canonical_state_dict(reference_canonical(reference))
    return model.eval(), reference.eval()


def batch_inputs(padded: bool, seed: int = 0, lengths=(600, 430)):
    """Waveforms (2, 600) and, when padded, a mask with the second utterance 430 samples long."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, lengths[0])).astype(np.float32)
    if not padded:
        return torch.from_numpy(x), None
    mask = np.ones_like(x, dtype=np.int64)
    mask[1, lengths[1]:] = 0
    x[1, lengths[1]:] = 0.0
    return torch.from_numpy(x), torch.from_numpy(mask)


def labels_for(head: str, config, frames: int, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    if head == "ctc":
        labels = rng.integers(1, config.vocab_size, size=(batch, 5))
        labels[1, 3:] = -100
        return torch.from_numpy(labels)
    if head in ("sequence_classification", "xvector"):
        return torch.from_numpy(rng.integers(0, config.num_labels, size=(batch,)))
    if head == "audio_frame_classification":
        return torch.nn.functional.one_hot(
            torch.from_numpy(rng.integers(0, config.num_labels, size=(batch, frames))), config.num_labels
        )
    return None


def pretraining_inputs(config, frames: int, attention_mask=None, seed: int = 0):
    rng = np.random.default_rng(seed)
    valid = None
    if attention_mask is not None:
        lengths = feat_extract_output_lengths(config, attention_mask.sum(-1).numpy())
        valid = np.arange(frames)[None] < lengths[:, None]
    mask = pretraining_mask(config, 2, frames, rng=rng, frame_attention_mask=valid, min_masks=2)
    negatives = sample_negative_indices((2, frames), config.num_negatives, rng=rng, mask_time_indices=mask)
    return torch.from_numpy(mask), torch.from_numpy(negatives.astype(np.int64))


def assert_close(actual, expected, atol=ATOL, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    np.testing.assert_allclose(
        actual.detach().float().numpy(), expected.detach().float().numpy(), atol=atol, rtol=0, err_msg=what
    )


@pytest.fixture(scope="module")
def pairs():
    cache = {}

    def get(head, arch):
        if (head, arch) not in cache:
            cache[head, arch] = paired_models(head, small_config(arch))
        return cache[head, arch]

    return get


# ----------------------------------------------------------------------------------- weight names
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", HEADS)
def test_key_set_is_canonical(pairs, head, arch):
    model, reference = pairs(head, arch)
    state = model.canonical_state_dict()
    expected = {k: tuple(v.shape) for k, v in reference_canonical(reference).items()}
    assert {k: v.shape for k, v in state.items()} == expected
    names = pytest.importorskip("wav2vec2.spec.names")
    assert {k: tuple(v) for k, v in names.canonical_shapes(small_config(arch), head).items()} == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_mms_adapter_and_conv_adapter_key_sets(arch):
    config = small_config(arch, adapter_attn_dim=4, add_adapter=True, output_hidden_size=12)
    model = ours.Wav2Vec2ForCTC(config)
    reference = transformers.Wav2Vec2ForCTC(reference_config(config))
    assert set(model.canonical_state_dict()) == set(reference_canonical(reference))


# ----------------------------------------------------------------------------------- forward parity
def _compare_outputs(head, out, expected):
    if head == "model":
        assert_close(out.last_hidden_state, expected.last_hidden_state, what="last_hidden_state")
        assert_close(out.extract_features, expected.extract_features, what="extract_features")
    elif head == "pretraining":
        assert_close(out.projected_states, expected.projected_states, what="projected_states")
        assert_close(out.projected_quantized_states, expected.projected_quantized_states, what="projected_quantized")
        assert_close(out.codevector_perplexity, expected.codevector_perplexity, what="perplexity")
    else:
        assert_close(out.logits, expected.logits, what="logits")
    if head == "xvector":
        assert_close(out.embeddings, expected.embeddings, what="embeddings")
    # stage by stage: the encoder input, then every layer's output
    assert len(out.hidden_states) == len(expected.hidden_states)
    for i, (a, b) in enumerate(zip(out.hidden_states, expected.hidden_states)):
        assert_close(a, b, what=f"hidden_states[{i}]")


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", HEADS)
def test_outputs_match_reference(pairs, head, arch, padded):
    model, reference = pairs(head, arch)
    x, mask = batch_inputs(padded)
    with torch.no_grad():
        out = model(x, attention_mask=mask, output_hidden_states=True)
        expected = reference(x, attention_mask=mask, output_hidden_states=True)
    _compare_outputs(head, out, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_weights_match_reference(arch):
    model, reference = paired_models("model", small_config(arch), attn_implementation="eager")
    x, mask = batch_inputs(padded=True)
    with torch.no_grad():
        out = model(x, attention_mask=mask, output_attentions=True)
        expected = reference(x, attention_mask=mask, output_attentions=True)
        fast = model(x, attention_mask=mask)  # the SDPA path
    for i, (a, b) in enumerate(zip(out.attentions, expected.attentions)):
        assert_close(a, b, what=f"attentions[{i}]")
    assert_close(out.last_hidden_state, expected.last_hidden_state, what="explicit softmax path")
    assert_close(fast.last_hidden_state, expected.last_hidden_state, what="sdpa path")


@pytest.mark.parametrize("arch", ARCHS)
def test_given_time_mask_uses_masked_spec_embed(pairs, arch):
    model, reference = pairs("model", arch)
    x, mask = batch_inputs(padded=True)
    frames = feat_extract_output_lengths(model.config, x.shape[1])
    time_mask, _ = pretraining_inputs(model.config, frames, mask)
    with torch.no_grad():
        out = model(x, attention_mask=mask, mask_time_indices=time_mask.numpy())
        expected = reference(x, attention_mask=mask, mask_time_indices=time_mask)
        unmasked = model(x, attention_mask=mask)
    assert_close(out.last_hidden_state, expected.last_hidden_state)
    assert not torch.allclose(out.last_hidden_state, unmasked.last_hidden_state)


@pytest.mark.parametrize("head", ["sequence_classification", "audio_frame_classification", "xvector"])
def test_weighted_layer_sum(head):
    config = small_config("stable", use_weighted_layer_sum=True)
    model, reference = paired_models(head, config, seed=3)
    x, mask = batch_inputs(padded=True)
    labels = labels_for(head, config, frames=feat_extract_output_lengths(config, x.shape[1]))
    with torch.no_grad():
        out = model(x, attention_mask=mask, labels=labels)
        expected = reference(x, attention_mask=mask, labels=labels)
    assert_close(out.logits, expected.logits)
    np.testing.assert_allclose(out.loss.item(), expected.loss.item(), rtol=1e-5)


# ----------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", [h for h in HEADS if h != "model"])
def test_losses_match_reference(pairs, head, arch):
    model, reference = pairs(head, arch)
    config = model.config
    x, mask = batch_inputs(padded=True)
    frames = feat_extract_output_lengths(config, x.shape[1])
    with torch.no_grad():
        if head == "pretraining":
            time_mask, negatives = pretraining_inputs(config, frames, mask)
            out = model(x, attention_mask=mask, mask_time_indices=time_mask, sampled_negative_indices=negatives)
            expected = reference(x, attention_mask=mask, mask_time_indices=time_mask, sampled_negative_indices=negatives)
            for name in ("contrastive_loss", "diversity_loss"):
                np.testing.assert_allclose(getattr(out, name).item(), getattr(expected, name).item(), rtol=1e-5)
        else:
            labels = labels_for(head, config, frames)
            out = model(x, attention_mask=mask, labels=labels)
            expected = reference(x, attention_mask=mask, labels=labels)
    assert torch.isfinite(out.loss)
    np.testing.assert_allclose(out.loss.item(), expected.loss.item(), rtol=1e-5)


@pytest.mark.parametrize("reduction,zero_infinity", [("mean", False), ("sum", True), ("none", False)])
def test_ctc_loss_reductions(reduction, zero_infinity):
    config = small_config("base", ctc_loss_reduction=reduction, ctc_zero_infinity=zero_infinity)
    model, reference = paired_models("ctc", config, seed=1)
    x, mask = batch_inputs(padded=True)
    labels = labels_for("ctc", config, frames=0)
    if zero_infinity:  # a target longer than its utterance: infinite loss, zeroed
        labels = torch.cat([labels, torch.ones(2, 40, dtype=labels.dtype)], dim=1)
    with torch.no_grad():
        out = model(x, attention_mask=mask, labels=labels.numpy())
        expected = reference(x, attention_mask=mask, labels=labels)
    np.testing.assert_allclose(out.loss.numpy(), expected.loss.numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------------- gradients
def _compare_gradients(model, reference, x_ours, x_ref):
    assert_close(x_ours.grad, x_ref.grad, atol=GRAD_ATOL, what="d loss / d input_values")
    reference_grads = {canonical_name(k): p.grad for k, p in reference.named_parameters()}
    for name, p in model.named_parameters():
        key = canonical_name(name)
        if reference_grads[key] is None:
            assert p.grad is None or not p.grad.any(), key
        else:
            assert_close(p.grad, reference_grads[key], atol=GRAD_ATOL, what=f"d loss / d {key}")


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("arch", ARCHS)
def test_ctc_gradients_match_reference(arch, training):
    """Training mode runs with dropout and SpecAugment off (the reference draws its own masks)."""
    zero_dropout = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, final_dropout=0.0)
    config = small_config(arch, ctc_loss_reduction="mean", mask_time_prob=0.0, **zero_dropout)
    model, reference = paired_models("ctc", config, seed=2)
    x, mask = batch_inputs(padded=True)
    labels = labels_for("ctc", config, frames=0)
    if training:
        model.train(), reference.train()
        reference.wav2vec2.feature_extractor._requires_grad = False  # see the pretraining test
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    model(x_ours, attention_mask=mask, labels=labels).loss.backward()
    reference(x_ref, attention_mask=mask, labels=labels).loss.backward()
    _compare_gradients(model, reference, x_ours, x_ref)


@pytest.mark.parametrize("arch", ARCHS)
def test_pretraining_gradients_match_reference_in_training_mode(arch, monkeypatch):
    """Training mode (Gumbel sampling on), dropout off. The reference draws its Gumbel noise inside
    torch's gumbel_softmax; seeding that call and passing ours the noise torch documents
    (-log of Exp(1) samples, from the same seed) gives both the same codevector choices."""
    zero_dropout = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, final_dropout=0.0)
    config = small_config(arch, **zero_dropout)
    model, reference = paired_models("pretraining", config, seed=4)
    model.train(), reference.train()
    # The reference flips requires_grad on its conv input in training, which fails when the input
    # itself requires grad; this switch only skips that line.
    reference.wav2vec2.feature_extractor._requires_grad = False
    model.set_gumbel_temperature(1.5), reference.set_gumbel_temperature(1.5)
    x, mask = batch_inputs(padded=True)
    frames = feat_extract_output_lengths(config, x.shape[1])
    time_mask, negatives = pretraining_inputs(config, frames, mask, seed=5)

    gumbel_softmax = torch.nn.functional.gumbel_softmax

    def seeded_gumbel_softmax(logits, *args, **kwargs):
        torch.manual_seed(1234)
        return gumbel_softmax(logits, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", seeded_gumbel_softmax)
    torch.manual_seed(1234)
    shape = (2, frames, config.num_codevector_groups, config.num_codevectors_per_group)
    noise = -torch.empty(shape).exponential_().log()

    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = model(x_ours, attention_mask=mask, mask_time_indices=time_mask, sampled_negative_indices=negatives, gumbel_noise=noise)
    expected = reference(x_ref, attention_mask=mask, mask_time_indices=time_mask, sampled_negative_indices=negatives)
    np.testing.assert_allclose(out.loss.item(), expected.loss.item(), rtol=1e-5)
    assert_close(out.projected_quantized_states, expected.projected_quantized_states)
    out.loss.backward()
    expected.loss.backward()
    _compare_gradients(model, reference, x_ours, x_ref)


# ----------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("arch", ARCHS)
def test_conv_adapter_matches_reference(arch):
    config = small_config(arch, add_adapter=True, output_hidden_size=12, num_adapter_layers=2)
    model, reference = paired_models("ctc", config, seed=6)
    x, mask = batch_inputs(padded=True, lengths=(1200, 900))
    labels = labels_for("ctc", config, frames=0)
    with torch.no_grad():
        out = model(x, attention_mask=mask, labels=labels)
        expected = reference(x, attention_mask=mask, labels=labels)
    assert out.logits.shape[1] == feat_extract_output_lengths(config, x.shape[1])  # adapter shortened
    assert_close(out.logits, expected.logits)
    np.testing.assert_allclose(out.loss.item(), expected.loss.item(), rtol=1e-5)


def test_mms_load_adapter_matches_reference(tmp_path):
    """An adapter file with a new vocabulary size: the reference's load_adapter is the oracle."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    config = small_config("stable", adapter_attn_dim=4)
    model, reference = paired_models("ctc", config, seed=7)
    new_vocab_size = config.vocab_size + 3
    generator = torch.Generator().manual_seed(8)
    adapter = {
        name: torch.randn(tensor.shape, generator=generator)
        for name, tensor in reference.state_dict().items()
        if ".adapter_layer." in name
    }
    adapter["lm_head.weight"] = torch.randn(new_vocab_size, config.hidden_size, generator=generator)
    adapter["lm_head.bias"] = torch.randn(new_vocab_size, generator=generator)
    safetensors_torch.save_file(adapter, str(tmp_path / "adapter.fra.safetensors"))
    torch.save(adapter, tmp_path / "adapter.deu.bin")

    reference.config._name_or_path = str(tmp_path)
    reference.load_adapter("fra")
    model.load_adapter("fra", path_or_repo_id=tmp_path)
    assert model.config.vocab_size == new_vocab_size and model.target_lang == "fra"
    x, mask = batch_inputs(padded=True)
    with torch.no_grad():
        # random unit-scale adapters give logits near 10: the float32 tolerance of conformance/tolerances.py
        # (1e-5 + 1e-5 * max|expected|), as the fast conv path sums in another order than oneDNN
        expected = reference(x, attention_mask=mask).logits
        assert_close(model(x, attention_mask=mask).logits, expected, atol=ATOL * (1 + expected.abs().max().item()))

    model.load_adapter("deu", path_or_repo_id=tmp_path)  # the .bin spelling loads too
    with torch.no_grad():
        assert_close(model(x, attention_mask=mask).logits, expected, atol=ATOL * (1 + expected.abs().max().item()))
    with pytest.raises(FileNotFoundError, match="adapter.xx"):
        model.load_adapter("xx", path_or_repo_id=tmp_path)
