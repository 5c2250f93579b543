"""The three trainers compute the same thing: from the same checkpoint, data and seed (dropout off,
SpecAugment on: its masks come from the spec layer), the losses and gradient norms of the first
updates agree within the tolerance table's float32 "training" row; and each backend's pretraining
loss falls."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conformance.tolerances import TOLERANCES
from training_helpers import one_torch_thread, tiny_config, write_config, write_corpus  # noqa: E402,F401 (autouse)
from wav2vec2.training import api, run

BACKENDS = ("torch", "tensorflow", "flax")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORK = {"torch": "torch", "tensorflow": "tensorflow", "flax": "flax"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), labels=["low", "high", "mid"])


QUICK_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
CLI_NAMES = {"model": "--model", "task": "--task", "max_steps": "--max-steps", "batch_seconds": "--batch-seconds",
             "learning_rate": "--lr", "warmup_steps": "--warmup-steps", "log_every": "--log-every", "seed": "--seed",
             "weight_decay": "--weight-decay"}


def train(corpus, output, backend, **settings):
    """``api.train`` in this process; Flax in a subprocess through the command line, with cheaper
    LLVM passes: compiling the step, not running it, is what costs there (about half the time)."""
    if backend != "flax":
        return api.train(corpus, output, backend=backend, **settings)
    command = [sys.executable, "-m", "wav2vec2", "train", "--backend", "flax", "--train", corpus, "--output",
               str(output), "--no-progress"]
    for name, value in settings.items():
        command += [CLI_NAMES[name], str(value)]
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": QUICK_XLA, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def records(run_dir):
    return [r for r in run.read_log(os.path.join(run_dir, "log.jsonl")) if "loss" in r]


def random_checkpoint(directory, corpus, task):
    """A random checkpoint for ``task`` (weights drawn by torch, head included), with its processor
    files: every backend starts from these canonical weights."""
    pytest.importorskip("torch")
    from wav2vec2.backends.torch.training import new_model
    from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
    from wav2vec2.processing import Wav2Vec2Processor
    from wav2vec2.training.vocabulary import build_vocabulary, ctc_tokenizer, label_vocabulary

    rows = [json.loads(line) for line in open(corpus)]
    tokenizer = ctc_tokenizer(build_vocabulary(r["text"] for r in rows))
    config = tiny_config(vocab_size=len(tokenizer), mask_time_prob=0.2, mask_feature_prob=0.2, mask_feature_length=2,
                         id2label=label_vocabulary(r["label"] for r in rows))
    new_model(task, config, seed=3).save_pretrained(directory)
    api.mark_architecture(directory, task)
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    if task == "ctc":
        Wav2Vec2Processor(extractor, tokenizer).save_pretrained(directory)
    else:
        extractor.save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("task", ["ctc", "sequence-classification"])
def test_first_updates_agree_across_backends(tmp_path, corpus, task):
    checkpoint = random_checkpoint(tmp_path / "start", corpus, task)
    # One batch of every utterance (one shape to compile), with new masks at every update.
    settings = dict(model=checkpoint, task=task, max_steps=3, batch_seconds=30.0, learning_rate=2e-3, warmup_steps=1,
                    log_every=1, seed=5, weight_decay=0.01)
    logs = {}
    for backend in BACKENDS:
        pytest.importorskip(FRAMEWORK[backend])
        train(corpus, tmp_path / backend, backend, **settings)
        logs[backend] = records(tmp_path / backend)
    atol, rtol = TOLERANCES[("float32", "training")]
    reference = logs["torch"]
    assert len(reference) == 3
    for backend in ("tensorflow", "flax"):
        for ours, theirs in zip(logs[backend], reference):
            for key in ("loss", "grad_norm"):
                assert abs(ours[key] - theirs[key]) <= atol + rtol * abs(theirs[key]), (backend, ours, theirs)
    # the control: another seed gives other masks and batches, hence other losses
    api.train(corpus, tmp_path / "reseeded", backend="torch", **{**settings, "seed": 6})
    assert [r["loss"] for r in records(tmp_path / "reseeded")] != [r["loss"] for r in reference]


@pytest.mark.parametrize("backend", ["tensorflow", "flax"])
def test_pretraining_loss_falls(tmp_path, corpus, backend):
    pytest.importorskip(FRAMEWORK[backend])
    config = write_config(tmp_path / "config.json", tiny_config(mask_time_prob=0.3))
    train(corpus, tmp_path / "run", backend, model=config, task="pretraining", max_steps=5, batch_seconds=30.0,
          learning_rate=3e-3, warmup_steps=1, log_every=1)
    curve = [r["loss"] for r in records(tmp_path / "run")]
    assert len(curve) == 5 and all(np.isfinite(curve))
    assert curve[-1] < curve[0]
