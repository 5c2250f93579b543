"""wav2vec2.training.run and .loop: log.jsonl, TensorBoard files, atomic checkpoints, exact resume."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import small_config
from test_training_batching import Clip
from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2.io.safetensors_file import read_safetensors, write_safetensors
from wav2vec2.training import run
from wav2vec2.training.batching import Collator
from wav2vec2.training.data import Dataset
from wav2vec2.training.loop import TrainSettings, fit
from wav2vec2.training.schedule import OptimizerSettings
from wav2vec2.training.vocabulary import build_vocabulary, ctc_tokenizer


def write_model(directory, value):
    write_safetensors({"w": np.full(3, value, np.float32)}, directory / "model.safetensors")
    (directory / "config.json").write_text("{}")


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_are_listed_by_step_and_pruned(tmp_path):
    for step in (5, 10, 100, 20):
        run.save_checkpoint(tmp_path, step, lambda d, s=step: write_model(d, s), {"note": step}, keep_last=3)
    assert [p.name for p in run.list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-20", "checkpoint-100"]
    assert run.latest_checkpoint(tmp_path).name == "checkpoint-100"
    assert run.load_trainer_state(tmp_path / "checkpoint-20") == {"format_version": 1, "step": 20, "note": 20}
    assert run.resolve_resume(tmp_path, True) == tmp_path / "checkpoint-100"
    assert run.resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-100"
    assert run.resolve_resume(tmp_path, tmp_path / "checkpoint-10") == tmp_path / "checkpoint-10"
    assert run.resolve_resume(tmp_path / "fresh", True) is None
    assert run.resolve_resume(tmp_path, False) is None
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        run.resolve_resume(tmp_path, tmp_path / "checkpoint-5")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-100", "checkpoint-20"]


def test_a_failure_mid_write_leaves_the_previous_checkpoint_intact(tmp_path):
    run.save_checkpoint(tmp_path, 10, lambda d: write_model(d, 1.0), {}, keep_last=1)

    def fails_halfway(directory):
        write_model(directory, 2.0)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.save_checkpoint(tmp_path, 20, fails_halfway, {}, keep_last=1)
    assert os.listdir(tmp_path) == ["checkpoint-10"]  # no half-written checkpoint-20, no staging
    np.testing.assert_array_equal(read_safetensors(tmp_path / "checkpoint-10" / "model.safetensors")["w"], [1, 1, 1])


def test_a_crash_before_the_rename_is_cleaned_up_by_the_next_save(tmp_path, monkeypatch):
    run.save_checkpoint(tmp_path, 10, lambda d: write_model(d, 1.0), {})
    real_replace = os.replace

    def crash_on_rename(src, dst):
        if str(dst).endswith("checkpoint-20"):
            raise KeyboardInterrupt  # as if the process died here
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_rename)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(tmp_path, 20, lambda d: write_model(d, 2.0), {})
    monkeypatch.setattr(os, "replace", real_replace)
    assert run.latest_checkpoint(tmp_path).name == "checkpoint-10"
    run.save_checkpoint(tmp_path, 20, lambda d: write_model(d, 2.0), {})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-20"]


def test_saving_a_step_again_replaces_it_whole(tmp_path):
    run.save_checkpoint(tmp_path, 10, lambda d: (write_model(d, 1.0), (d / "extra.txt").write_text("old")), {})
    run.save_checkpoint(tmp_path, 10, lambda d: write_model(d, 2.0), {})
    assert sorted(os.listdir(tmp_path / "checkpoint-10")) == ["config.json", "model.safetensors", "trainer_state.json"]
    np.testing.assert_array_equal(read_safetensors(tmp_path / "checkpoint-10" / "model.safetensors")["w"], [2, 2, 2])


def test_generator_state_survives_json():
    rng = np.random.default_rng(1234)
    rng.random(10)
    state = json.loads(json.dumps(run.generator_state(rng)))
    np.testing.assert_array_equal(run.restore_generator(state).random(5), rng.random(5))
    with pytest.raises(ValueError, match="unknown random bit generator"):
        run.restore_generator({"bit_generator": "os.system"})


# ------------------------------------------------------------------------------------ log and TensorBoard
def test_log_appends_and_resume_drops_records_past_the_checkpoint(tmp_path):
    with run.RunLog(tmp_path) as log:
        for step in (10, 20, 30):
            log.write({"step": step, "loss": np.float32(1.5), "grad_norm": float("nan")})
    assert run.read_log(tmp_path / "log.jsonl")[0] == {"step": 10, "loss": 1.5, "grad_norm": None}
    with pytest.raises(FileExistsError, match="resume the run"):
        run.RunLog(tmp_path)
    with run.RunLog(tmp_path, resume_step=20) as log:
        log.write({"step": 30, "loss": 0.5})
    assert [(r["step"], r["loss"]) for r in run.read_log(tmp_path / "log.jsonl")] == [(10, 1.5), (20, 1.5), (30, 0.5)]
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 40, "lo')  # a crash mid-line
    assert len(run.read_log(tmp_path / "log.jsonl")) == 3


def read_tfrecords(path):
    """TFRecord framing: uint64 length, uint32 crc, payload, uint32 crc (read here, not by TensorBoard)."""
    records, data = [], open(path, "rb").read()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        records.append(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
    return records


def test_tensorboard_scalars_without_a_framework(tmp_path):
    pytest.importorskip("tensorboard")
    script = (
        "import sys; from wav2vec2.training.run import TensorBoardWriter\n"
        f"w = TensorBoardWriter({str(tmp_path)!r}); w.add_scalars(7, {{'loss': 2.5, 'eval/wer': 0.25}}); w.close()\n"
        "assert not {'tensorflow', 'torch', 'jax'} & set(sys.modules), 'a framework was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    from tensorboard.compat.proto import event_pb2

    (name,) = os.listdir(tmp_path)
    events = [event_pb2.Event.FromString(r) for r in read_tfrecords(tmp_path / name)]
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 7
    assert {v.tag: v.simple_value for v in events[1].summary.value} == {"loss": 2.5, "eval/wer": 0.25}


# ------------------------------------------------------------------------------------ the loop
class NumpyTrainer:
    """A Trainer in NumPy: a linear model on batch statistics, SGD with momentum, and a dropout
    Generator of its own, so that resume is exact only if the loop restores everything."""

    backend = "numpy"

    def init(self, model, settings):
        self.w = np.array(model, dtype=np.float64)
        self.momentum = np.zeros_like(self.w)
        self.dropout = np.random.default_rng(99)
        self.settings = settings

    def features(self, batch):
        values = batch["input_values"]
        masked = batch["mask_time_indices"].mean(-1)
        return np.stack([values.mean(-1), values.std(-1), masked, np.ones(len(values))], -1)

    def train_step(self, batches, learning_rate):
        grads, losses = [], []
        for batch in batches:
            x, y = self.features(batch), (batch["labels"] >= 0).sum(-1) / 10.0
            err = x @ self.w - y
            keep = self.dropout.random(self.w.shape) > 0.2
            grads.append(2 * x.T @ err / len(y) * keep)
            losses.append(float(np.mean(err**2)))
        grad = np.mean(grads, axis=0)
        norm = float(np.linalg.norm(grad))
        grad *= min(1.0, self.settings.optimizer.max_grad_norm / max(norm, 1e-12))
        self.momentum = 0.9 * self.momentum + grad
        self.w -= learning_rate * self.momentum
        return {"loss": float(np.mean(losses)), "grad_norm": norm}

    def logits(self, batch):
        return self.features(batch) @ self.w

    def state_dict(self):
        # PCG64's 128-bit state and increment as four uint64 words
        state = self.dropout.bit_generator.state["state"]
        words = [(state[k] >> shift) & (2**64 - 1) for k in ("state", "inc") for shift in (64, 0)]
        return {"momentum": self.momentum, "dropout": np.array(words, dtype=np.uint64)}

    def load_state_dict(self, state):
        self.momentum = state["momentum"]
        hi, lo, inc_hi, inc_lo = (int(w) for w in state["dropout"])
        full = self.dropout.bit_generator.state
        full["state"] = {"state": hi << 64 | lo, "inc": inc_hi << 64 | inc_lo}
        self.dropout.bit_generator.state = full

    def save_model(self, directory):
        write_safetensors({"w": self.w}, directory / "model.safetensors")
        (directory / "config.json").write_text("{}")

    def load_model(self, directory):
        self.w = read_safetensors(directory / "model.safetensors")["w"]


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    words = ["one", "two", "three", "four", "five six", "seven eight nine"]
    examples = [
        Clip((rng.standard_normal(int(rng.integers(400, 1600))) * rng.uniform(0.5, 2)).astype(np.float32),
             words[i % len(words)], where=f"m.jsonl:line {i + 1}")
        for i in range(40)
    ]
    data = Dataset("m.jsonl", examples, [])
    config = small_config("stable", mask_time_prob=0.3, mask_time_length=2)
    tokenizer = ctc_tokenizer(build_vocabulary(e.text for e in examples))
    collator = Collator(config, Wav2Vec2FeatureExtractor(return_attention_mask=True), "ctc", tokenizer=tokenizer)
    settings = TrainSettings(
        max_steps=12, batch_seconds=0.25, seed=3, log_every=2, eval_every=4, save_every=3, keep_last=2,
        optimizer=OptimizerSettings(learning_rate=0.05, warmup_steps=3, total_steps=12, gradient_accumulation_steps=2),
    )
    return data, collator, settings


def make_trainer(settings):
    trainer = NumpyTrainer()
    trainer.init(np.zeros(4), settings)
    return trainer


def evaluate(trainer):
    return {"w0": float(trainer.w[0])}


def comparable(records):
    return [{k: v for k, v in r.items() if k != "audio_seconds_per_second"} for r in records]


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, setup):
    data, collator, settings = setup
    whole = make_trainer(settings)
    fit(whole, settings, data, collator, tmp_path / "whole", evaluate=evaluate)

    # the same run stopped after 7 updates (its last checkpoint is at 6), then resumed in a new trainer
    stopped = TrainSettings(**{**settings.__dict__, "max_steps": 7})
    fit(make_trainer(settings), stopped, data, collator, tmp_path / "split", evaluate=evaluate)
    assert run.latest_checkpoint(tmp_path / "split").name == "checkpoint-7"
    for name in ("checkpoint-7",):
        (tmp_path / "split" / name / "trainer_state.json").unlink()  # pretend it died before saving 7
    resumed = make_trainer(settings)
    fit(resumed, settings, data, collator, tmp_path / "split", evaluate=evaluate, resume=True)

    np.testing.assert_array_equal(resumed.w, whole.w)
    np.testing.assert_array_equal(resumed.momentum, whole.momentum)
    whole_log, split_log = (run.read_log(tmp_path / d / "log.jsonl") for d in ("whole", "split"))
    assert comparable(split_log) == comparable(whole_log)
    assert [r["step"] for r in whole_log] == [2, 4, 4, 6, 8, 8, 10, 12, 12]
    assert [p.name for p in run.list_checkpoints(tmp_path / "whole")] == ["checkpoint-9", "checkpoint-12"]
    # the run directory itself holds the final model
    np.testing.assert_array_equal(read_safetensors(tmp_path / "whole" / "model.safetensors")["w"], whole.w)
    assert not (tmp_path / "whole" / "optimizer.safetensors").exists()


def test_resume_refuses_other_data_or_batch_settings(tmp_path, setup):
    data, collator, settings = setup
    fit(make_trainer(settings), settings, data, collator, tmp_path)
    other = Dataset("m.jsonl", data.examples[:-1], [])
    with pytest.raises(ValueError, match="training data differs"):
        fit(make_trainer(settings), settings, other, collator, tmp_path, resume=True)
    reseeded = TrainSettings(**{**settings.__dict__, "seed": 4})
    with pytest.raises(ValueError, match="seed=3, now 4"):
        fit(make_trainer(settings), reseeded, data, collator, tmp_path, resume=True)
    with pytest.raises(FileExistsError):
        fit(make_trainer(settings), settings, data, collator, tmp_path)
