"""CTC greedy decoding and offsets (wav2vec2.spec.ctc) against a plain-Python oracle. NumPy only."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2.spec import ctc

BLANK = 0
ids_strategy = st.lists(st.integers(0, 4), max_size=40)


def oracle_collapse(ids, blank, ignore=(), group=True):
    """Frame-by-frame reading of greedy CTC: [(id, start, end)] after merging runs and dropping blanks."""
    frames = [(i, t) for t, i in enumerate(ids) if i not in ignore and i >= 0]
    out = []
    if group:
        for label, run in itertools.groupby(frames, key=lambda f: f[0]):
            run = list(run)
            out.append((label, run[0][1], run[-1][1] + 1))
    else:
        out = [(label, t, t + 1) for label, t in frames]
    return [o for o in out if o[0] != blank]


def as_triples(segments):
    return list(zip(segments.ids.tolist(), segments.starts.tolist(), segments.ends.tolist()))


@settings(max_examples=200, deadline=None)
@given(ids=ids_strategy)
def test_collapse_matches_oracle(ids):
    assert as_triples(ctc.collapse(ids, BLANK)) == oracle_collapse(ids, BLANK)


@settings(max_examples=100, deadline=None)
@given(ids=ids_strategy, group=st.booleans())
def test_collapse_with_ignored_ids_keeps_original_frames(ids, group):
    got = as_triples(ctc.collapse(ids, BLANK, ignore_ids=[3], group=group))
    assert got == oracle_collapse(ids, BLANK, ignore=(3,), group=group)


def test_repeated_letter_survives_only_with_a_blank_between():
    # "L L" needs a blank between the runs to be read as two letters.
    assert ctc.collapse([1, 1, 0, 1], BLANK).ids.tolist() == [1, 1]
    assert ctc.collapse([1, 1, 1], BLANK).ids.tolist() == [1]
    assert ctc.collapse([0, 0, 0], BLANK).ids.tolist() == []
    assert ctc.collapse([], BLANK).ids.tolist() == []


def test_negative_ids_are_padding():
    segments = ctc.collapse([2, 2, -1, -1], BLANK)
    assert as_triples(segments) == [(2, 0, 2)]


@settings(max_examples=100, deadline=None)
@given(ids=ids_strategy)
def test_runs_reconstruct_the_sequence(ids):
    segments = ctc.runs(ids)
    rebuilt = [i for i, s, e in as_triples(segments) for _ in range(e - s)]
    assert rebuilt == ids
    assert all(a != b for a, b in zip(segments.ids[:-1], segments.ids[1:]))


@settings(max_examples=200, deadline=None)
@given(flags=st.lists(st.booleans(), max_size=30))
def test_word_spans_are_maximal_non_delimiter_runs(flags):
    spans = ctc.word_spans(flags)
    expected, start = [], None
    for i, is_delim in enumerate(flags + [True]):
        if not is_delim and start is None:
            start = i
        elif is_delim and start is not None:
            expected.append((start, i))
            start = None
    assert spans == expected


def test_word_offsets_use_first_and_last_frames():
    # frames: blank A A | | B blank B  -> chars A(1-3) |(3-5) B(5-6) B(7-8)
    segments = ctc.collapse([0, 1, 1, 3, 3, 2, 0, 2], BLANK)
    is_delim = segments.ids == 3
    assert ctc.word_offsets(segments, is_delim) == [(0, 1, 1, 3), (2, 4, 5, 8)]


def test_greedy_ids_and_decode(rng):
    logits = rng.normal(size=(2, 7, 5)).astype(np.float32)
    ids = ctc.greedy_ids(logits)
    np.testing.assert_array_equal(ids, logits.argmax(-1))
    masked = ctc.greedy_ids(logits, lengths=[7, 4])
    assert (masked[1, 4:] == -1).all() and (masked[1, :4] == ids[1, :4]).all()
    decoded = ctc.greedy_decode(logits, BLANK, lengths=[7, 4])
    assert as_triples(decoded[1]) == oracle_collapse(ids[1, :4].tolist(), BLANK)
    assert as_triples(decoded[0]) == oracle_collapse(ids[0].tolist(), BLANK)


def test_bad_shapes_are_value_errors():
    with pytest.raises(ValueError, match="frames, vocab"):
        ctc.greedy_ids(np.zeros(5))
    with pytest.raises(ValueError, match="lengths"):
        ctc.greedy_ids(np.zeros((2, 3, 4)), lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="batch, frames, vocab"):
        ctc.greedy_decode(np.zeros((3, 4)), BLANK)
