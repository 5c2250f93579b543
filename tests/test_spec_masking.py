"""SpecAugment span masks: span properties, counts, padding, determinism, and the reference's distribution."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import small_config
from wav2vec2.spec.masking import (
    compute_span_mask,
    pretraining_mask,
    seeded_generator,
    span_starts,
    spans_to_mask,
    spec_augment_masks,
)


def _right_padded(lengths, seq_len):
    return np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]


def _expected_count_range(mask_prob, valid_len, mask_length, min_masks, seq_len, num_valid_starts):
    """Smallest and largest span count the documented formula allows for u in [0, 1)."""
    cap = min(seq_len // mask_length, num_valid_starts)
    low = int(mask_prob * valid_len / mask_length)
    high = int(mask_prob * valid_len / mask_length + np.nextafter(1.0, 0.0))
    return min(max(low, min_masks), cap), min(max(high, min_masks), cap)


@st.composite
def mask_problems(draw):
    batch_size = draw(st.integers(1, 4))
    seq_len = draw(st.integers(0, 60))
    mask_length = draw(st.integers(1, 10))
    mask_prob = draw(st.floats(0.0, 1.0))
    min_masks = draw(st.integers(0, 5))
    kind = draw(st.sampled_from(["none", "right_padded", "holes"]))
    if kind == "none":
        attention_mask = None
    elif kind == "right_padded":
        lengths = draw(st.lists(st.integers(0, seq_len), min_size=batch_size, max_size=batch_size))
        attention_mask = _right_padded(lengths, seq_len)
    else:
        bits = draw(st.lists(st.booleans(), min_size=batch_size * seq_len, max_size=batch_size * seq_len))
        attention_mask = np.array(bits, dtype=bool).reshape(batch_size, seq_len)
    seed = draw(st.integers(0, 2**32 - 1))
    return (batch_size, seq_len), mask_prob, mask_length, min_masks, attention_mask, seed


@settings(max_examples=100, deadline=None)
@given(mask_problems())
def test_spans_are_whole_distinct_valid_and_counted_by_the_formula(problem):
    shape, mask_prob, mask_length, min_masks, attention_mask, seed = problem
    kwargs = dict(min_masks=min_masks, attention_mask=attention_mask)
    starts = span_starts(shape, mask_prob, mask_length, rng=np.random.default_rng(seed), **kwargs)
    mask = compute_span_mask(shape, mask_prob, mask_length, rng=np.random.default_rng(seed), **kwargs)

    assert mask.shape == shape and mask.dtype == bool
    valid = np.ones(shape, dtype=bool) if attention_mask is None else attention_mask
    expected_mask = np.zeros(shape, dtype=bool)
    for b, row_starts in enumerate(starts):
        assert len(set(row_starts.tolist())) == len(row_starts), "starts are drawn without replacement"
        for start in row_starts:
            span = slice(start, start + mask_length)
            assert start >= 0 and start + mask_length <= shape[1]
            assert valid[b, span].all(), "a span touches padding"
            expected_mask[b, span] = True
        num_valid_starts = sum(valid[b, t : t + mask_length].all() for t in range(shape[1] - mask_length + 1))
        low, high = _expected_count_range(
            mask_prob, valid[b].sum(), mask_length, min_masks, shape[1], num_valid_starts
        )
        assert low <= len(row_starts) <= high
    np.testing.assert_array_equal(mask, expected_mask)
    assert not (mask & ~valid).any()


def test_spans_to_mask_sets_exactly_the_span_frames():
    mask = spans_to_mask([np.array([0, 6]), np.array([], dtype=int), np.array([2, 3])], (3, 10), 3)
    expected = np.zeros((3, 10), dtype=bool)
    expected[0, [0, 1, 2, 6, 7, 8]] = True
    expected[2, [2, 3, 4, 5]] = True
    np.testing.assert_array_equal(mask, expected)


def test_min_masks_is_respected_when_the_spans_fit():
    starts = span_starts((5, 50), 0.0, 5, rng=np.random.default_rng(0), min_masks=3)
    assert [len(s) for s in starts] == [3] * 5


def test_never_more_spans_than_fit():
    # p=1 asks for 10/4 + u spans; only 10 // 4 = 2 fit side by side.
    starts = span_starts((50, 10), 1.0, 4, rng=np.random.default_rng(0), min_masks=9)
    assert all(len(s) == 2 for s in starts)
    # Only 2 valid starts (frames 0-4 valid, spans of 4): at most 2 spans.
    lengths = np.full(50, 5)
    starts = span_starts(
        (50, 40), 1.0, 4, rng=np.random.default_rng(0), min_masks=9, attention_mask=_right_padded(lengths, 40)
    )
    assert all(sorted(s.tolist()) == [0, 1] for s in starts)


@pytest.mark.parametrize(
    "shape, mask_length, lengths",
    [
        ((2, 0), 3, None),  # no frames at all
        ((2, 4), 10, None),  # shorter than one span
        ((3, 30), 10, [30, 0, 9]),  # one empty and one too-short utterance beside a long one
    ],
)
def test_short_inputs_get_no_spans_and_never_fail(shape, mask_length, lengths):
    attention_mask = None if lengths is None else _right_padded(lengths, shape[1])
    mask = compute_span_mask(
        shape, 0.9, mask_length, rng=np.random.default_rng(0), min_masks=2, attention_mask=attention_mask
    )
    assert mask.shape == shape
    if lengths is None:
        assert not mask.any()
    else:
        assert mask[0].any() and not mask[1:].any()


def test_same_seed_same_mask_and_global_state_untouched():
    state = np.random.get_state()
    first = compute_span_mask((4, 80), 0.3, 5, rng=np.random.default_rng(7), min_masks=1)
    again = compute_span_mask((4, 80), 0.3, 5, rng=np.random.default_rng(7), min_masks=1)
    other = compute_span_mask((4, 80), 0.3, 5, rng=np.random.default_rng(8), min_masks=1)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize("bad", [dict(mask_prob=1.5), dict(mask_length=0), dict(min_masks=-1)])
def test_bad_arguments_raise_value_error(bad):
    kwargs = dict(mask_prob=0.5, mask_length=2, min_masks=0) | bad
    with pytest.raises(ValueError):
        compute_span_mask((2, 10), rng=np.random.default_rng(0), **kwargs)


def test_attention_mask_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="attention_mask"):
        compute_span_mask((2, 10), 0.5, 2, rng=np.random.default_rng(0), attention_mask=np.ones((2, 9)))


# ---------------------------------------------------------------- the reference as distribution oracle
def _reference_masks(shape, mask_prob, mask_length, min_masks, attention_mask, draws):
    torch = pytest.importorskip("torch")
    modeling = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    state = np.random.get_state()
    np.random.seed(1234)  # the reference draws from the global NumPy state
    try:
        mask_tensor = None if attention_mask is None else torch.tensor(attention_mask, dtype=torch.long)
        return np.stack([
            modeling._compute_mask_indices(
                shape, mask_prob, mask_length, attention_mask=mask_tensor, min_masks=min_masks
            )
            for _ in range(draws)
        ])
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize(
    "shape, mask_prob, mask_length, min_masks, lengths",
    [
        ((6, 100), 0.2, 5, 2, [100, 90, 75, 60, 41, 20]),  # time masking with padding
        ((6, 100), 0.65, 10, 0, None),  # pretraining settings, overlapping spans
        ((4, 16), 0.3, 3, 0, None),  # feature axis
        ((4, 200), 0.01, 10, 0, None),  # low probability: mostly no spans
    ],
)
def test_masked_fraction_matches_the_reference(shape, mask_prob, mask_length, min_masks, lengths):
    draws = 2000
    attention_mask = None if lengths is None else _right_padded(lengths, shape[1])
    reference = _reference_masks(shape, mask_prob, mask_length, min_masks, attention_mask, draws)
    rng = np.random.default_rng(0)
    ours = np.stack([
        compute_span_mask(shape, mask_prob, mask_length, rng=rng, min_masks=min_masks, attention_mask=attention_mask)
        for _ in range(draws)
    ])
    # Masked fraction per utterance, averaged over the draws: (batch,)
    np.testing.assert_allclose(ours.mean(axis=(0, 2)), reference.mean(axis=(0, 2)), atol=0.01)
    # Masking probability of each frame: starts are uniform over the same positions. (batch, seq)
    np.testing.assert_allclose(ours.mean(axis=0), reference.mean(axis=0), atol=0.07)


# ---------------------------------------------------------------- config-driven masks
def test_spec_augment_masks_follow_the_config():
    config = small_config(
        mask_time_prob=0.3, mask_time_length=3, mask_time_min_masks=2,
        mask_feature_prob=0.4, mask_feature_length=2, mask_feature_min_masks=1,
    )
    frame_mask = _right_padded([40, 25, 2], 40)
    time_mask, feature_mask = spec_augment_masks(
        config, 3, 40, rng=np.random.default_rng(0), frame_attention_mask=frame_mask
    )
    assert time_mask.shape == (3, 40) and time_mask.dtype == bool
    assert not (time_mask & ~frame_mask).any()
    assert time_mask[0].sum() >= 3 and time_mask[1].sum() >= 3  # at least min_masks spans
    assert not time_mask[2].any()  # 2 valid frames: no span of 3 fits
    assert feature_mask.shape == (3, config.hidden_size) and feature_mask.dtype == bool
    assert (feature_mask.sum(axis=1) >= 2).all()


def test_spec_augment_masks_are_none_where_not_applicable():
    rng = np.random.default_rng(0)
    assert spec_augment_masks(small_config(apply_spec_augment=False, mask_feature_prob=0.5), 2, 30, rng=rng) == (
        None, None,
    )
    time_mask, feature_mask = spec_augment_masks(small_config(mask_time_prob=0.0), 2, 30, rng=rng)
    assert time_mask is None and feature_mask is None
    time_mask, feature_mask = spec_augment_masks(small_config(mask_time_prob=0.5), 2, 30, rng=rng)
    assert time_mask.shape == (2, 30) and feature_mask is None


def test_pretraining_mask_ignores_apply_spec_augment_and_defaults_to_no_minimum():
    config = small_config(apply_spec_augment=False, mask_time_prob=0.0, mask_time_length=4, mask_time_min_masks=2)
    assert not pretraining_mask(config, 3, 30, rng=np.random.default_rng(0)).any()
    mask = pretraining_mask(config, 3, 30, rng=np.random.default_rng(0), min_masks=2)
    assert mask.shape == (3, 30)
    assert (mask.sum(axis=1) >= 4).all()


def test_seeded_generator_depends_only_on_the_integers_and_their_order():
    """The backends seed it with torch int64 draws, Keras int64 seed states and JAX uint32 key data."""
    expected = np.random.default_rng([3, 5]).random(4)  # NumPy's SeedSequence of the same integers
    for words in (np.array([3, 5], np.uint32), np.array([3, 5], np.int64), np.array([[3], [5]]), [3, 5]):
        np.testing.assert_array_equal(seeded_generator(words).random(4), expected)
    assert not np.array_equal(seeded_generator([5, 3]).random(4), expected)
