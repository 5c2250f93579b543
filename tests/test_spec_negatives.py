"""Negative sampling: negatives come from the other masked frames of the same utterance, uniformly."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2.spec.negatives import sample_negative_indices


@st.composite
def negative_problems(draw):
    batch_size = draw(st.integers(1, 4))
    seq_len = draw(st.integers(1, 40))
    num_negatives = draw(st.integers(0, 8))
    if draw(st.booleans()):
        mask = None
    else:
        bits = draw(st.lists(st.booleans(), min_size=batch_size * seq_len, max_size=batch_size * seq_len))
        mask = np.array(bits, dtype=bool).reshape(batch_size, seq_len)
    return (batch_size, seq_len), num_negatives, mask, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=100, deadline=None)
@given(negative_problems())
def test_negatives_are_other_candidates_of_the_same_utterance(problem):
    shape, num_negatives, mask, seed = problem
    negatives = sample_negative_indices(shape, num_negatives, rng=np.random.default_rng(seed), mask_time_indices=mask)

    batch_size, seq_len = shape
    assert negatives.shape == (batch_size, seq_len, num_negatives) and negatives.dtype == np.int32
    candidates = np.ones(shape, dtype=bool) if mask is None else mask
    for b in range(batch_size):
        for t in range(seq_len):
            flat = negatives[b, t]
            if not candidates[b, t]:
                assert (flat == b * seq_len).all(), "a non-candidate row points at frame 0 of its utterance"
            elif candidates[b].sum() == 1:
                assert (flat == b * seq_len + t).all(), "a lone candidate points at itself"
            else:
                assert (flat // seq_len == b).all(), "negative from another utterance"
                frames = flat % seq_len
                assert candidates[b, frames].all(), "negative outside the candidates"
                assert (frames != t).all(), "negative equals the positive"


def test_negatives_are_uniform_over_the_other_candidates():
    seq_len, num_negatives = 12, 6000
    mask = np.zeros((1, seq_len), dtype=bool)
    candidates = np.array([1, 4, 5, 9, 11])
    mask[0, candidates] = True
    negatives = sample_negative_indices((1, seq_len), num_negatives, rng=np.random.default_rng(0), mask_time_indices=mask)
    for t in candidates:
        counts = np.bincount(negatives[0, t], minlength=seq_len)
        others = candidates[candidates != t]
        expected = num_negatives / len(others)  # 1500, binomial sd ~ 34
        assert counts[t] == 0
        np.testing.assert_allclose(counts[others], expected, atol=5 * np.sqrt(expected))
        assert counts.sum() == counts[others].sum()


def test_utterances_with_too_few_candidates_do_not_fail():
    mask = np.zeros((3, 6), dtype=bool)
    mask[1, 4] = True  # a lone masked frame
    mask[2, [0, 3]] = True
    negatives = sample_negative_indices((3, 6), 3, rng=np.random.default_rng(0), mask_time_indices=mask)
    assert (negatives[0] == 0).all()
    assert (negatives[1, 4] == 6 + 4).all() and (negatives[1, :4] == 6).all()
    assert (negatives[2, 0] == 12 + 3).all() and (negatives[2, 3] == 12 + 0).all()


def test_same_seed_same_negatives_and_global_state_untouched():
    state = np.random.get_state()
    mask = np.random.default_rng(1).random((3, 30)) < 0.5
    first = sample_negative_indices((3, 30), 5, rng=np.random.default_rng(3), mask_time_indices=mask)
    again = sample_negative_indices((3, 30), 5, rng=np.random.default_rng(3), mask_time_indices=mask)
    np.testing.assert_array_equal(first, again)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="mask_time_indices"):
        sample_negative_indices((2, 5), 3, rng=np.random.default_rng(0), mask_time_indices=np.ones((2, 4)))
    with pytest.raises(ValueError, match="features_shape"):
        sample_negative_indices((2, 5, 1), 3, rng=np.random.default_rng(0))


@pytest.mark.parametrize("use_mask", [True, False])
def test_same_convention_as_the_reference(use_mask):
    modeling = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    shape, num_negatives = (3, 25), 7
    mask = None
    if use_mask:
        mask = np.random.default_rng(2).random(shape) < 0.4
        mask[:, :2] = True  # at least two candidates per utterance: the reference fails otherwise
    state = np.random.get_state()
    np.random.seed(0)
    try:
        reference = modeling._sample_negative_indices(shape, num_negatives, mask_time_indices=mask)
    finally:
        np.random.set_state(state)
    ours = sample_negative_indices(shape, num_negatives, rng=np.random.default_rng(0), mask_time_indices=mask)

    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    candidates = np.ones(shape, dtype=bool) if mask is None else mask
    # Rows the loss never reads hold the same filler in both.
    np.testing.assert_array_equal(ours[~candidates], reference[~candidates])
    # Candidate rows: both draw from the same set, the other candidates of the same utterance.
    for b in range(shape[0]):
        for t in np.flatnonzero(candidates[b]):
            allowed = {b * shape[1] + s for s in np.flatnonzero(candidates[b]) if s != t}
            assert set(reference[b, t].tolist()) <= allowed
            assert set(ours[b, t].tolist()) <= allowed
