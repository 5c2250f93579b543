"""The PyTorch trainer through wav2vec2.training.train: CTC, classification and pretraining learn;
resume after an interruption is bit-exact; the output directory is a checkpoint every backend,
transcribe and convert load."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training_helpers import one_torch_thread, tiny_config, write_config, write_corpus  # noqa: E402,F401 (autouse)
from wav2vec2.io import read_state_dict  # noqa: E402
from wav2vec2.training import api, run  # noqa: E402
from wav2vec2.backends.torch.training import TorchTrainer  # noqa: E402

FAST = dict(batch_seconds=4.0, learning_rate=3e-3, warmup_steps=1, log_every=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    return write_corpus(directory, labels=["low", "high"])


def losses(run_dir):
    return [r["loss"] for r in run.read_log(os.path.join(run_dir, "log.jsonl")) if "loss" in r]


@pytest.mark.parametrize("task", ["ctc", "sequence-classification", "pretraining"])
def test_loss_falls(tmp_path, corpus, task):
    overrides = dict(mask_time_prob=0.3) if task == "pretraining" else {}
    config = write_config(tmp_path / "config.json", tiny_config(**overrides))
    # The same batch every update (all utterances fit one batch): the loss must fall on it.
    api.train(corpus, tmp_path / "run", model=config, task=task, max_steps=6, **{**FAST, "batch_seconds": 30.0})
    curve = losses(tmp_path / "run")
    assert len(curve) == 6 and all(np.isfinite(curve))
    assert curve[-1] < curve[0]


def test_output_directory_is_a_checkpoint_for_every_backend(tmp_path, corpus):
    config = write_config(tmp_path / "config.json", tiny_config())
    out = tmp_path / "run"
    api.train(corpus, out, model=config, max_steps=2, **FAST)
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "vocab.json", "preprocessor_config.json", "log.jsonl"} <= names
    assert not any(n.startswith(("optimizer", "trainer_state")) for n in names)
    vocab = json.load(open(out / "vocab.json"))
    assert vocab["<pad>"] == 0 and vocab["|"] == 4 and "O" in vocab  # built from the upper-cased text

    from wav2vec2 import convert, transcribe

    audio = [os.path.join(os.path.dirname(corpus), "0.wav")]
    texts = {}
    for backend in ("torch", "tensorflow", "flax"):
        pytest.importorskip({"torch": "torch", "tensorflow": "tensorflow", "flax": "flax"}[backend])
        texts[backend] = [r["text"] for r in transcribe(audio, str(out), backend=backend)]
    assert len(set(map(tuple, texts.values()))) == 1, texts
    converted = convert(str(out), str(tmp_path / "tf"), to="tensorflow")
    expected = read_state_dict(out)
    got = read_state_dict(converted)
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def test_resume_after_an_interruption_is_bit_exact(tmp_path, corpus, monkeypatch):
    # Dropout and LayerDrop on, SpecAugment on: every random stream must continue exactly.
    config = write_config(tmp_path / "config.json", tiny_config(hidden_dropout=0.1, layerdrop=0.2, mask_time_prob=0.3))
    settings = dict(model=config, max_steps=6, save_every=2, gradient_accumulation_steps=2, **FAST)
    api.train(corpus, tmp_path / "whole", **settings)

    real_step = TorchTrainer.train_step

    def interrupted(self, batches, learning_rate):
        if self.step_count == 4:  # dies in update 5, after the checkpoint at 4
            raise KeyboardInterrupt
        return real_step(self, batches, learning_rate)

    monkeypatch.setattr(TorchTrainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.train(corpus, tmp_path / "split", **settings)
    monkeypatch.setattr(TorchTrainer, "train_step", real_step)
    assert run.latest_checkpoint(tmp_path / "split").name == "checkpoint-4"
    api.train(corpus, tmp_path / "split", resume=True, **settings)

    whole, split = (read_state_dict(tmp_path / d) for d in ("whole", "split"))
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")
    from wav2vec2.io.safetensors_file import read_safetensors

    optimizer = [read_safetensors(tmp_path / d / "checkpoint-6" / "optimizer.safetensors") for d in ("whole", "split")]
    for name in optimizer[0]:
        np.testing.assert_array_equal(optimizer[1][name], optimizer[0][name], err_msg=name)


def test_fine_tuning_a_checkpoint_keeps_its_body_and_vocabulary(tmp_path, corpus):
    config = write_config(tmp_path / "config.json", tiny_config())
    api.train(corpus, tmp_path / "first", model=config, max_steps=1, **FAST)
    api.train(corpus, tmp_path / "second", model=str(tmp_path / "first"), max_steps=1, freeze_feature_encoder=True,
              **FAST)
    first, second = read_state_dict(tmp_path / "first"), read_state_dict(tmp_path / "second")
    conv = [k for k in first if k.startswith("wav2vec2.feature_extractor.")]
    assert conv and all(np.array_equal(first[k], second[k]) for k in conv)  # frozen
    assert not np.array_equal(first["lm_head.weight"], second["lm_head.weight"])  # kept, then trained
    assert open(tmp_path / "first" / "vocab.json").read() == open(tmp_path / "second" / "vocab.json").read()


def test_bf16_trains_with_float32_weights(tmp_path, corpus):
    config = write_config(tmp_path / "config.json", tiny_config())
    api.train(corpus, tmp_path / "run", model=config, max_steps=2, precision="bf16", **FAST)
    assert all(np.isfinite(losses(tmp_path / "run")))
    assert all(v.dtype == np.float32 for v in read_state_dict(tmp_path / "run").values())
