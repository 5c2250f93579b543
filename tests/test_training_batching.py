"""wav2vec2.training.batching: length buckets by seconds, exact resume, and the NumPy batches."""
import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import small_config
from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2.spec.lengths import feat_extract_output_lengths
from wav2vec2.training.batching import (
    LABEL_PAD,
    Collator,
    LengthBucketSampler,
    Position,
    pad_labels,
    sequential_batches,
)
from wav2vec2.training.vocabulary import build_vocabulary, ctc_tokenizer


def durations(n=500, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 12.0, size=n)


def padded_seconds(batch, lengths):
    return len(batch) * lengths[batch].max()


@pytest.mark.parametrize("window", [1, 37, 2000])
def test_every_example_once_per_epoch_within_batch_seconds(window):
    lengths = durations()
    sampler = LengthBucketSampler(lengths, batch_seconds=40.0, seed=3, window=window)
    for epoch in range(3):
        batches = sampler.epoch_batches(epoch)
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(lengths.size))
        assert all(padded_seconds(b, lengths) <= 40.0 for b in batches)


def test_buckets_hold_similar_lengths():
    """Sorting within the whole epoch pads far less than random batches of the same count."""
    lengths = durations(2000)
    sampler = LengthBucketSampler(lengths, batch_seconds=60.0, seed=0)
    batches = sampler.epoch_batches(0)
    padding = sum(padded_seconds(b, lengths) - lengths[b].sum() for b in batches)
    assert padding / lengths.sum() < 0.05
    # packing greedily: a batch plus the next-longer example of its window would overflow
    assert np.mean([len(b) for b in batches]) > 0.8 * 60.0 / lengths.mean()


def test_batches_are_a_function_of_seed_and_epoch():
    lengths = durations()
    a, b = LengthBucketSampler(lengths, 30.0, seed=1), LengthBucketSampler(lengths, 30.0, seed=1)
    for epoch in (0, 1, 5):
        for x, y in zip(a.epoch_batches(epoch), b.epoch_batches(epoch), strict=True):
            np.testing.assert_array_equal(x, y)
    other_seed = LengthBucketSampler(lengths, 30.0, seed=2).epoch_batches(0)
    assert not all(np.array_equal(x, y) for x, y in zip(a.epoch_batches(0), other_seed))
    assert not all(np.array_equal(x, y) for x, y in zip(a.epoch_batches(0), a.epoch_batches(1)))


def test_resuming_from_the_middle_gives_the_remaining_batches():
    lengths = durations(200)
    sampler = LengthBucketSampler(lengths, 25.0, seed=7)
    per_epoch = len(sampler.epoch_batches(0))
    full = list(itertools.islice(sampler.iterate(), 3 * per_epoch))
    for cut in (1, per_epoch - 1, per_epoch, per_epoch + 5):
        resume_at = sampler.after(full[cut - 1][0])
        assert resume_at == full[cut][0]
        fresh = LengthBucketSampler(lengths, 25.0, seed=7)  # a new process: nothing cached
        resumed = list(itertools.islice(fresh.iterate(resume_at), len(full) - cut))
        assert [p for p, _ in resumed] == [p for p, _ in full[cut:]]
        for (_, x), (_, y) in zip(resumed, full[cut:]):
            np.testing.assert_array_equal(x, y)
    assert full[per_epoch][0] == Position(1, 0)
    with pytest.raises(ValueError, match="has only"):
        next(sampler.iterate(Position(0, per_epoch + 1)))


def test_position_round_trips_through_a_dict():
    assert Position.from_dict(Position(3, 14).to_dict()) == Position(3, 14)


def test_an_example_longer_than_a_batch_is_an_error():
    with pytest.raises(ValueError, match=r"example 1 lasts 9.00 s, longer than batch_seconds=8"):
        LengthBucketSampler([1.0, 9.0, 2.0], batch_seconds=8)
    with pytest.raises(ValueError, match="positive"):
        LengthBucketSampler([1.0, 0.0], batch_seconds=8)


def test_sequential_batches_cover_every_example_by_length():
    lengths = durations(100)
    batches = sequential_batches(lengths, 20.0)
    order = np.concatenate(batches)
    np.testing.assert_array_equal(order, np.argsort(lengths, kind="stable"))
    assert all(padded_seconds(b, lengths) <= 20.0 for b in batches)


def test_pad_labels():
    np.testing.assert_array_equal(pad_labels([[5, 6, 7], [8]]), [[5, 6, 7], [8, LABEL_PAD, LABEL_PAD]])
    assert pad_labels([[5, 6, 7], [8]]).dtype == np.int64


# ------------------------------------------------------------------------------------ collator
@dataclass
class Clip:
    """An Example stand-in with audio in memory."""

    samples: np.ndarray
    text: str = None
    label: str = None
    where: str = "memory"

    def load_audio(self, sampling_rate):
        return self.samples

    @property
    def seconds(self):
        return len(self.samples) / 16000


def clips(seed=0):
    rng = np.random.default_rng(seed)
    return [
        Clip(rng.standard_normal(1600).astype(np.float32) * 3 + 1, "Hello, there!", "yes"),
        Clip(rng.standard_normal(1000).astype(np.float32), "hi", "no"),
    ]


def test_ctc_batch_padding_normalisation_and_labels():
    config = small_config("stable", mask_time_prob=0.5, mask_time_length=2, mask_feature_prob=0.3, mask_feature_length=2)
    tokenizer = ctc_tokenizer(build_vocabulary(["hello there", "hi"]))
    collator = Collator(config, Wav2Vec2FeatureExtractor(return_attention_mask=True), "ctc", tokenizer=tokenizer)
    examples = clips()
    batch = collator(examples, rng=np.random.default_rng(0))
    assert batch["input_values"].shape == (2, 1600) and batch["input_values"].dtype == np.float32
    np.testing.assert_array_equal(batch["attention_mask"].sum(-1), [1600, 1000])
    for row, clip in zip(batch["input_values"], examples):
        x = clip.samples.astype(np.float64)
        np.testing.assert_allclose(row[: len(x)], (x - x.mean()) / np.sqrt(x.var() + 1e-7), rtol=1e-5, atol=1e-5)
        assert not row[len(x):].any()
    vocab = tokenizer.get_vocab()
    expected = [[vocab[c] for c in "HELLO|THERE"], [vocab["H"], vocab["I"]]]
    np.testing.assert_array_equal(batch["labels"], pad_labels(expected))

    frames = feat_extract_output_lengths(config, 1600, add_adapter=False)
    valid_frames = feat_extract_output_lengths(config, 1000, add_adapter=False)
    assert batch["mask_time_indices"].shape == (2, frames)
    assert batch["mask_time_indices"].any()
    assert not batch["mask_time_indices"][1, valid_frames:].any()  # padding is never masked
    assert batch["mask_feature_indices"].shape == (2, config.hidden_size)

    again = collator(examples, rng=np.random.default_rng(0))
    for key in batch:
        np.testing.assert_array_equal(again[key], batch[key])
    evaluation = collator(examples, training=False)
    assert "mask_time_indices" not in evaluation


def test_masks_continue_the_generator_stream():
    """Saving the Generator's state between batches and restoring it gives the same later masks."""
    config = small_config("stable", mask_time_prob=0.5, mask_time_length=2)
    tokenizer = ctc_tokenizer(build_vocabulary(["hello there", "hi"]))
    collator = Collator(config, Wav2Vec2FeatureExtractor(return_attention_mask=True), "ctc", tokenizer=tokenizer)
    rng = np.random.default_rng(5)
    collator(clips(), rng=rng)
    state = rng.bit_generator.state
    expected = collator(clips(1), rng=rng)["mask_time_indices"]
    restored = np.random.default_rng()
    restored.bit_generator.state = state
    np.testing.assert_array_equal(collator(clips(1), rng=restored)["mask_time_indices"], expected)


def test_pretraining_and_classification_batches():
    config = small_config("base", mask_time_prob=0.5, mask_time_length=2, num_negatives=3)
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=False)
    batch = Collator(config, extractor, "pretraining")(clips(), rng=np.random.default_rng(0))
    assert "attention_mask" not in batch and "labels" not in batch
    frames = feat_extract_output_lengths(config, 1600, add_adapter=False)
    assert batch["mask_time_indices"].shape == (2, frames)
    assert batch["sampled_negative_indices"].shape == (2, frames, 3)
    # negatives of utterance b point into its own rows of the flattened (batch * frames) features
    masked = batch["mask_time_indices"][1]
    negatives = batch["sampled_negative_indices"][1][masked]
    assert ((negatives >= frames) & (negatives < 2 * frames)).all()

    classify = Collator(config, extractor, "sequence-classification", label2id={"no": 0, "yes": 1})
    batch = classify(clips(), training=False)
    np.testing.assert_array_equal(batch["labels"], [1, 0])
    with pytest.raises(ValueError, match="rng="):
        classify(clips())
