"""Length-bucketed batches by seconds of audio, and the NumPy batches every backend trains on.

Batches (``LengthBucketSampler``). Epoch e of seed s is a pure function of (s, e, the durations,
``batch_seconds``, ``window``): the examples are shuffled with ``numpy.random.default_rng([s, e])``,
cut into windows of ``window`` examples, each window is sorted by duration and packed greedily into
batches whose padded size (examples x the longest one) stays within ``batch_seconds``, and the
batches of the epoch are shuffled. So each epoch holds every example exactly once, batches hold
utterances of similar length (little padding), and a position (epoch, batch) names the same batch
in every run: resuming at a position gives exactly the batches the uninterrupted run had next.

Contents (``Collator``). A batch is a dict of NumPy arrays:
- ``input_values`` float32 (batch, samples): each utterance normalised by the feature extractor
  (zero mean, unit variance over its own samples) and zero-padded on the right;
- ``attention_mask`` int32 (batch, samples), 1 on real samples, when the extractor returns one;
- ``labels``: CTC int64 (batch, longest transcript) padded with -100; classification int64 (batch,);
- ``mask_time_indices`` bool (batch, frames) and ``mask_feature_indices`` bool (batch, hidden) in
  training: SpecAugment masks from ``wav2vec2.spec.masking`` (None when SpecAugment is off);
- pretraining: ``mask_time_indices`` from ``spec.masking.pretraining_mask`` and
  ``sampled_negative_indices`` int32 (batch, frames, num_negatives) from ``spec.negatives``.
Masks are drawn from the ``numpy.random.Generator`` passed in, whose state the trainer keeps in
its checkpoints, so every backend and every resumed run sees the same masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..spec.lengths import feat_extract_output_lengths, frame_attention_mask
from ..spec.masking import pretraining_mask, spec_augment_masks
from ..spec.negatives import sample_negative_indices

LABEL_PAD = -100


@dataclass(frozen=True, order=True)
class Position:
    """Where the data stream is: batch ``batch`` (0-based) of epoch ``epoch`` is the next one."""

    epoch: int = 0
    batch: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    @classmethod
    def from_dict(cls, data: dict) -> "Position":
        return cls(int(data["epoch"]), int(data["batch"]))


class LengthBucketSampler:
    """Batches of example indices by seconds of audio; see the module docstring."""

    def __init__(self, durations: Sequence[float], batch_seconds: float, *, seed: int = 0, window: int = 2000):
        durations = np.asarray(durations, dtype=np.float64)
        if durations.ndim != 1 or durations.size == 0:
            raise ValueError("durations must be a non-empty list of seconds, one per example")
        if not np.isfinite(durations).all() or (durations <= 0).any():
            raise ValueError("every duration must be a positive number of seconds")
        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
        longest = int(durations.argmax())
        if durations[longest] > batch_seconds:
            raise ValueError(
                f"example {longest} lasts {durations[longest]:.2f} s, longer than batch_seconds={batch_seconds}: "
                f"raise batch_seconds or leave such examples out (read_dataset's max_seconds)"
            )
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.durations = durations
        self.batch_seconds = float(batch_seconds)
        self.seed = int(seed)
        self.window = int(window)
        self._cache: Dict[int, List[np.ndarray]] = {}  # the batches of the current epoch

    def epoch_batches(self, epoch: int) -> List[np.ndarray]:
        """The batches of ``epoch``, in training order, as int64 arrays of example indices."""
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.durations.size)
            batches = []
            for start in range(0, order.size, self.window):
                chunk = order[start : start + self.window]
                # A stable sort keeps the shuffled order among equal durations.
                chunk = chunk[np.argsort(self.durations[chunk], kind="stable")]
                batches += pack(chunk, self.durations, self.batch_seconds)
            self._cache = {epoch: [batches[i] for i in rng.permutation(len(batches))]}
        return self._cache[epoch]

    def iterate(self, start: Position = Position()) -> Iterator[Tuple[Position, np.ndarray]]:
        """(position of the batch, its indices) from ``start`` on, epoch after epoch, without end."""
        epoch, skip = start.epoch, start.batch
        while True:
            batches = self.epoch_batches(epoch)
            if skip > len(batches):
                raise ValueError(f"position {start}: epoch {epoch} has only {len(batches)} batches")
            for number in range(skip, len(batches)):
                yield Position(epoch, number), batches[number]
            epoch, skip = epoch + 1, 0

    def after(self, position: Position) -> Position:
        """The position of the batch that follows the one at ``position``."""
        if position.batch + 1 >= len(self.epoch_batches(position.epoch)):
            return Position(position.epoch + 1, 0)
        return Position(position.epoch, position.batch + 1)


def pack(order: np.ndarray, durations: np.ndarray, batch_seconds: float) -> List[np.ndarray]:
    """Consecutive runs of ``order`` (example indices) as batches: a batch grows while its padded
    size (examples x its longest duration) stays within ``batch_seconds``."""
    batches, batch, longest = [], [], 0.0
    for index in order:
        duration = durations[index]
        if batch and max(longest, duration) * (len(batch) + 1) > batch_seconds:
            batches.append(np.asarray(batch, dtype=np.int64))
            batch, longest = [], 0.0
        batch.append(index)
        longest = max(longest, duration)
    if batch:
        batches.append(np.asarray(batch, dtype=np.int64))
    return batches


def sequential_batches(durations: Sequence[float], batch_seconds: float) -> List[np.ndarray]:
    """Batches for evaluation: every example once, by increasing duration, packed as in training."""
    durations = np.asarray(durations, dtype=np.float64)
    return pack(np.argsort(durations, kind="stable"), durations, batch_seconds)


def pad_labels(sequences: Sequence[Sequence[int]], pad: int = LABEL_PAD) -> np.ndarray:
    """Token id sequences -> int64 (batch, longest), padded with ``pad`` (-100: not a target)."""
    longest = max((len(s) for s in sequences), default=0)
    labels = np.full((len(sequences), longest), pad, dtype=np.int64)
    for row, sequence in zip(labels, sequences):
        row[: len(sequence)] = sequence
    return labels


class Collator:
    """Examples -> a batch of NumPy arrays for ``task``; see the module docstring.

    ``tokenizer`` (CTC) encodes the normalised transcripts; ``label2id`` (classification) maps labels.
    """

    def __init__(self, config, feature_extractor, task: str = "ctc", *, tokenizer=None, label2id=None):
        if task == "ctc" and tokenizer is None:
            raise ValueError("a CTC collator needs the tokenizer")
        if task == "sequence-classification" and label2id is None:
            raise ValueError("a classification collator needs label2id")
        self.config = config
        self.feature_extractor = feature_extractor
        self.task = task
        self.tokenizer = tokenizer
        self.label2id = label2id

    def __call__(
        self, examples, *, rng: Optional[np.random.Generator] = None, training: bool = True
    ) -> Dict[str, np.ndarray]:
        """The batch of ``examples``; masks are drawn from ``rng`` when ``training``."""
        from .vocabulary import encode

        sampling_rate = self.feature_extractor.sampling_rate
        audio = [example.load_audio(sampling_rate) for example in examples]
        features = self.feature_extractor(audio, sampling_rate=sampling_rate, padding=True, return_tensors="np")
        batch = {"input_values": features["input_values"].astype(np.float32)}
        if "attention_mask" in features:
            batch["attention_mask"] = features["attention_mask"].astype(np.int32)
        if self.task == "ctc":
            batch["labels"] = pad_labels([encode(self.tokenizer, e.text) for e in examples])
        elif self.task == "sequence-classification":
            batch["labels"] = np.asarray([self.label2id[e.label] for e in examples], dtype=np.int64)
        if training or self.task == "pretraining":
            if rng is None:
                raise ValueError("training batches need rng= (a numpy.random.Generator) for their masks")
            batch.update(self.masks(batch, rng, np.asarray([len(a) for a in audio])))
        return batch

    def masks(self, batch, rng: np.random.Generator, lengths: np.ndarray) -> Dict[str, Optional[np.ndarray]]:
        """SpecAugment masks (or the pretraining mask and negatives) for a padded batch."""
        config = self.config
        size, samples = batch["input_values"].shape
        frames = int(feat_extract_output_lengths(config, samples, add_adapter=False))
        # Frames of padding are never masked; without an attention mask every frame counts.
        sample_mask = (np.arange(samples)[None, :] < lengths[:, None]).astype(np.int32)
        valid = frame_attention_mask(config, sample_mask, frames, add_adapter=False)
        if self.task == "pretraining":
            mask = pretraining_mask(config, size, frames, rng=rng, frame_attention_mask=valid)
            negatives = sample_negative_indices((size, frames), config.num_negatives, rng=rng, mask_time_indices=mask)
            return {"mask_time_indices": mask, "sampled_negative_indices": negatives}
        time_mask, feature_mask = spec_augment_masks(config, size, frames, rng=rng, frame_attention_mask=valid)
        return {"mask_time_indices": time_mask, "mask_feature_indices": feature_mask}
