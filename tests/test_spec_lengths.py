"""Conv-stack lengths and frame masks against the reference model's own bookkeeping."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import reference_config, small_config
from wav2vec2.spec.lengths import feat_extract_output_lengths, frame_attention_mask, min_input_length

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@st.composite
def conv_configs(draw):
    num_layers = draw(st.integers(1, 4))
    layer_sizes = st.lists(st.integers(1, 10), min_size=num_layers, max_size=num_layers)
    return small_config(
        conv_dim=(4,) * num_layers,
        conv_kernel=tuple(draw(layer_sizes)),
        conv_stride=tuple(min(s, 5) for s in draw(layer_sizes)),
        add_adapter=draw(st.booleans()),
        adapter_stride=draw(st.integers(1, 3)),
        num_adapter_layers=draw(st.integers(1, 3)),
        num_hidden_layers=1,
    )


def _reference_model(config):
    return transformers.Wav2Vec2Model(reference_config(config))


@settings(max_examples=50, deadline=None)
@given(conv_configs(), st.lists(st.integers(0, 5000), min_size=1, max_size=6), st.sampled_from([None, False, True]))
def test_output_lengths_match_the_reference(config, input_lengths, add_adapter):
    reference = _reference_model(config)
    expected = reference._get_feat_extract_output_lengths(torch.tensor(input_lengths), add_adapter=add_adapter)
    ours = feat_extract_output_lengths(config, np.array(input_lengths), add_adapter=add_adapter)
    np.testing.assert_array_equal(ours, expected.numpy())
    # Plain ints give plain ints.
    single = feat_extract_output_lengths(config, input_lengths[0], add_adapter=add_adapter)
    assert isinstance(single, int) and single == int(expected[0])


@settings(max_examples=50, deadline=None)
@given(conv_configs(), st.sampled_from([None, False, True]), st.integers(1, 40))
def test_min_input_length_is_minimal(config, add_adapter, wanted):
    reference = _reference_model(config)
    shortest = min_input_length(config, add_adapter=add_adapter, frames=wanted)
    frames = reference._get_feat_extract_output_lengths(torch.tensor([shortest - 1, shortest]), add_adapter=add_adapter)
    assert frames[0] < wanted <= frames[1]


@settings(max_examples=30, deadline=None)
@given(conv_configs(), st.integers(1, 4), st.data())
def test_frame_attention_mask_matches_the_reference(config, batch_size, data):
    shortest = min_input_length(config)
    num_samples = data.draw(st.integers(shortest, shortest + 3000))
    # Right-padded sample masks, each with at least one output frame (the reference marks every
    # frame valid for an utterance with no frames, see the next test).
    lengths = data.draw(st.lists(st.integers(shortest, num_samples), min_size=batch_size, max_size=batch_size))
    sample_mask = (np.arange(num_samples)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    num_frames = feat_extract_output_lengths(config, num_samples)

    reference = _reference_model(config)
    expected = reference._get_feature_vector_attention_mask(num_frames, torch.tensor(sample_mask))
    ours = frame_attention_mask(config, sample_mask, num_frames)
    assert ours.dtype == bool
    np.testing.assert_array_equal(ours, expected.numpy())


def test_utterance_with_no_frames_has_no_valid_frame():
    config = small_config()
    shortest = min_input_length(config)
    sample_mask = np.zeros((2, 3 * shortest), dtype=np.int64)
    sample_mask[0, :] = 1
    sample_mask[1, : shortest - 1] = 1
    num_frames = feat_extract_output_lengths(config, 3 * shortest)
    mask = frame_attention_mask(config, sample_mask, num_frames)
    assert mask[0].all() and not mask[1].any()


def test_frame_attention_mask_rejects_a_one_dimensional_mask():
    with pytest.raises(ValueError, match="attention_mask"):
        frame_attention_mask(small_config(), np.ones(100), 5)


@pytest.mark.parametrize("samples", [400, 401, 719, 720, 16_000, 160_000, 160_123])
@pytest.mark.parametrize("span_frames", [1, 7, 128, 10_000])
def test_conv_spans_cover_every_frame_once_from_their_own_samples(samples, span_frames):
    from wav2vec2 import Wav2Vec2Config
    from wav2vec2.spec.lengths import conv_spans

    config = Wav2Vec2Config()
    plan = conv_spans(config, samples, span_frames)
    assert plan.frames == feat_extract_output_lengths(config, samples, add_adapter=False)
    assert plan.span == min(span_frames, plan.frames) and plan.count * plan.span >= plan.frames > (plan.count - 1) * plan.span
    # a span's samples are exactly what its frames see: the conv stack makes `span` frames of them
    assert feat_extract_output_lengths(config, plan.span_samples, add_adapter=False) == plan.span
    assert feat_extract_output_lengths(config, plan.span_samples - 1, add_adapter=False) == plan.span - 1
    for index in range(plan.count):  # span i's first frame is frame i * span of the whole input
        assert plan.start(index) == index * plan.span * config.inputs_to_logits_ratio
    assert plan.padded_samples >= samples - (samples - plan.receptive) % plan.hop
    assert plan.padded_samples - samples < plan.span * plan.hop  # padding only within the last span
