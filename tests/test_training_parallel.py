"""wav2vec2.training.parallel (NumPy only): shards partition a batch with weights that add up to
the one-worker loss; padding keeps every real row, mask and negative; seeds and temperatures."""
import numpy as np
import pytest

from conftest import small_config
from wav2vec2.spec.lengths import feat_extract_output_lengths
from wav2vec2.spec.negatives import sample_negative_indices
from wav2vec2.training import parallel


def pretraining_batch(rows=5, samples=900, seed=0):
    config = small_config("stable", num_negatives=3)
    rng = np.random.default_rng(seed)
    frames = int(feat_extract_output_lengths(config, samples))
    mask = rng.random((rows, frames)) < 0.5
    batch = {
        "input_values": rng.standard_normal((rows, samples)).astype(np.float32),
        "attention_mask": np.ones((rows, samples), np.int32),
        "mask_time_indices": mask,
        "sampled_negative_indices": sample_negative_indices((rows, frames), 3, rng=rng, mask_time_indices=mask),
    }
    return config, batch


@pytest.mark.parametrize("rows, world", [(5, 2), (1, 2), (3, 3), (7, 4)])
def test_shards_partition_the_rows_and_weights_add_up(rows, world):
    config = small_config("stable", ctc_loss_reduction="mean")
    batch = {"input_values": np.arange(rows, dtype=np.float32)[:, None] * np.ones((1, 500), np.float32),
             "labels": np.arange(rows)[:, None] * np.ones((1, 3), np.int64)}
    per_row = np.random.default_rng(rows).random(rows)  # one worker's loss: the mean of these
    parts = parallel.shards("ctc", config, batch, world)
    assert len(parts) == world
    seen = np.concatenate([p["input_values"][:, 0] for p, w in parts if w > 0])
    np.testing.assert_array_equal(np.sort(seen), np.arange(rows))
    total = sum(w * per_row[p["input_values"][:, 0].astype(int)].mean() for p, w in parts)
    assert total == pytest.approx(per_row.mean())
    summed = parallel.shards("ctc", config.replace(ctc_loss_reduction="sum"), batch, world)
    assert sum(w * per_row[p["input_values"][:, 0].astype(int)].sum() for p, w in summed) == pytest.approx(per_row.sum())


def test_shard_negatives_point_at_the_same_frames():
    config, batch = pretraining_batch()
    frames = batch["mask_time_indices"].shape[1]
    flat = batch["input_values"][:, :frames].reshape(-1)  # any per-frame value will do
    parts = parallel.shards("pretraining", config, batch, 2)
    start = 0
    for part, weight in parts:
        assert weight == pytest.approx(1 / batch["mask_time_indices"].sum())
        rows = len(part["input_values"])
        own = part["input_values"][:, :frames].reshape(-1)
        np.testing.assert_array_equal(own[part["sampled_negative_indices"]],
                                      flat[batch["sampled_negative_indices"][start:start + rows]])
        start += rows


def test_padding_keeps_real_rows_masks_and_negatives():
    config, batch = pretraining_batch(rows=5)
    frames = batch["mask_time_indices"].shape[1]
    padded, weights = parallel.pad_batch(batch, config, rows_multiple=4, frames_multiple=16)
    new_frames = padded["mask_time_indices"].shape[1]
    assert padded["input_values"].shape[0] == 8 and new_frames % 16 == 0 and new_frames >= frames
    assert new_frames == feat_extract_output_lengths(config, padded["input_values"].shape[1])
    np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(padded["input_values"][:5, : batch["input_values"].shape[1]], batch["input_values"])
    np.testing.assert_array_equal(padded["mask_time_indices"][:5, :frames], batch["mask_time_indices"])
    assert not padded["mask_time_indices"][5:].any() and not padded["mask_time_indices"][:, frames:].any()
    row, frame = np.divmod(padded["sampled_negative_indices"][:5, :frames], new_frames)
    expected_row, expected_frame = np.divmod(batch["sampled_negative_indices"], frames)
    np.testing.assert_array_equal(row, expected_row)
    np.testing.assert_array_equal(frame, expected_frame)
    rows_of_every_index = padded["sampled_negative_indices"] // new_frames
    np.testing.assert_array_equal(rows_of_every_index, np.arange(8)[:, None, None] * np.ones_like(rows_of_every_index))


def test_seeds_clipping_and_temperature():
    assert parallel.step_seed(0, 0, 1) == parallel.step_seed(0, 0, 1)
    assert len({parallel.step_seed(0, 0, 1), parallel.step_seed(0, 1, 1), parallel.step_seed(0, 0, 2),
                parallel.step_seed(1, 0, 1)}) == 4
    assert parallel.clip_coefficient(0.5, 1.0) == 1.0
    assert parallel.clip_coefficient(4.0, 1.0) == pytest.approx(1 / (4.0 + 1e-6))
    assert parallel.clip_coefficient(1e9, None) == 1.0
    assert parallel.gumbel_temperature(1) == 2.0
    assert parallel.gumbel_temperature(10**7) == 0.5
