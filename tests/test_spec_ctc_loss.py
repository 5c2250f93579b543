"""The NumPy CTC loss against torch.nn.functional.ctc_loss (float64) and a brute-force path sum."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2.spec.ctc_loss import ctc_loss

torch = pytest.importorskip("torch")

PAD = -100


def _log_softmax(x):
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def _torch_ctc(log_probs, labels, input_lengths, blank, reduction, zero_infinity):
    """The oracle, called the way Wav2Vec2ForCTC calls it."""
    labels = torch.as_tensor(labels)
    labels_mask = labels >= 0
    loss = torch.nn.functional.ctc_loss(
        torch.as_tensor(log_probs, dtype=torch.float64).transpose(0, 1),  # (frames, batch, vocab)
        labels.masked_select(labels_mask),
        torch.as_tensor(input_lengths),
        labels_mask.sum(-1),
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    return loss.numpy()


@st.composite
def ctc_problems(draw):
    batch_size = draw(st.integers(1, 4))
    num_frames = draw(st.integers(1, 12))
    vocab_size = draw(st.integers(2, 6))
    blank = draw(st.sampled_from([0, vocab_size - 1]))
    non_blank = [v for v in range(vocab_size) if v != blank]
    max_label_len = draw(st.integers(1, 8))
    labels = np.full((batch_size, max_label_len), PAD, dtype=np.int64)
    for b in range(batch_size):
        # few distinct symbols so that repeated labels (which need a blank between them) are common
        row = draw(st.lists(st.sampled_from(non_blank[:2]), max_size=max_label_len))
        labels[b, : len(row)] = row
    input_lengths = draw(st.lists(st.integers(0, num_frames), min_size=batch_size, max_size=batch_size))
    seed = draw(st.integers(0, 2**32 - 1))
    logits = np.random.default_rng(seed).normal(size=(batch_size, num_frames, vocab_size)) * 2
    return _log_softmax(logits), labels, np.array(input_lengths, dtype=np.int64), blank


@settings(max_examples=100, deadline=None)
@given(ctc_problems(), st.sampled_from(["none", "sum", "mean"]), st.booleans())
def test_matches_torch_ctc_loss(problem, reduction, zero_infinity):
    log_probs, labels, input_lengths, blank = problem
    ours = ctc_loss(log_probs, labels, input_lengths, blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    expected = _torch_ctc(log_probs, labels, input_lengths, blank, reduction, zero_infinity)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-10)


def test_repeated_labels_padding_and_infeasible_targets():
    rng = np.random.default_rng(0)
    log_probs = _log_softmax(rng.normal(size=(4, 10, 5)))
    labels = np.array([
        [1, 1, 2, PAD, PAD, PAD],  # repeat: needs 4 frames
        [3, 3, 3, 3, 3, 3],  # needs 11 frames: infeasible in 10
        [PAD] * 6,  # empty target: all blanks
        [4, 2, 4, -1, -1, -1],  # any negative value pads
    ])
    input_lengths = np.array([10, 10, 7, 3])
    for reduction, zero_infinity in itertools.product(["none", "sum", "mean"], [False, True]):
        ours = ctc_loss(log_probs, labels, input_lengths, reduction=reduction, zero_infinity=zero_infinity)
        expected = _torch_ctc(log_probs, labels, input_lengths, 0, reduction, zero_infinity)
        np.testing.assert_allclose(ours, expected, rtol=1e-12)
    losses = ctc_loss(log_probs, labels, input_lengths, reduction="none")
    assert np.isinf(losses[1]) and np.isfinite(losses[[0, 2, 3]]).all()
    assert ctc_loss(log_probs, labels, input_lengths, zero_infinity=True, reduction="none")[1] == 0.0


def _brute_force_nll(log_probs, target, blank):
    """-log of the summed probability of every frame-level path that collapses to ``target``."""
    num_frames, vocab_size = log_probs.shape
    total = -np.inf
    for path in itertools.product(range(vocab_size), repeat=num_frames):
        collapsed = [s for i, s in enumerate(path) if s != blank and (i == 0 or s != path[i - 1])]
        if collapsed == list(target):
            total = np.logaddexp(total, sum(log_probs[t, s] for t, s in enumerate(path)))
    return -total


@pytest.mark.parametrize("target", [[], [1], [1, 1], [2, 1, 2], [1, 1, 1]])
def test_matches_a_brute_force_sum_over_paths(target):
    # Unnormalised scores: the loss uses log_probs as given, like torch.
    log_probs = np.random.default_rng(len(target)).normal(size=(5, 3))
    labels = np.array([target + [PAD] * (3 - len(target))])
    loss = ctc_loss(log_probs[None], labels, [5], reduction="none")[0]
    np.testing.assert_allclose(loss, _brute_force_nll(log_probs, target, blank=0), rtol=1e-12)


def test_no_frames_means_only_the_empty_target_is_possible():
    log_probs = np.zeros((2, 0, 3))
    losses = ctc_loss(log_probs, np.array([[PAD], [1]]), [0, 0], reduction="none")
    np.testing.assert_array_equal(losses, [0.0, np.inf])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(reduction="avg"), "reduction"),
        (dict(input_lengths=[4, 9]), "input_lengths"),
        (dict(labels=[[1, 7], [1, PAD]]), "labels"),
        (dict(labels=[[1, 0], [1, PAD]]), "blank"),
        (dict(log_probs=np.zeros((2, 4))), "log_probs"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, match):
    args = dict(log_probs=np.zeros((2, 4, 3)), labels=[[1, 2], [1, PAD]], input_lengths=[4, 4]) | kwargs
    with pytest.raises(ValueError, match=match):
        ctc_loss(**args)
