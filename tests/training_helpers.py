"""Shared by the trainer tests: a few spoken sentences (espeak-ng) as a manifest, and a tiny config."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import small_config

PHRASES = ["one two three", "four five", "six seven eight", "nine ten", "a big red bed", "a bad dog"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch on one thread in each test module that imports this fixture: tiny models run 10-20x faster
    on one thread than on two oversubscribed ones."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(arch="stable", **overrides):
    """About 5,000 parameters; 320 samples a frame (50 frames a second), as real checkpoints."""
    values = dict(conv_dim=(8, 8, 8), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), hidden_dropout=0.0,
                  attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
                  mask_time_prob=0.1, mask_time_length=2, ctc_loss_reduction="mean", ctc_zero_infinity=True)
    values.update(overrides)
    return small_config(arch, **values)


def write_config(path, config):
    with open(path, "w") as f:
        json.dump(config.to_dict(), f)
    return str(path)


def write_corpus(directory, phrases=PHRASES, labels=None):
    """Each phrase spoken by espeak-ng at 16 kHz into ``directory``; returns train.jsonl's path."""
    import soundfile
    import soxr

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    os.makedirs(directory, exist_ok=True)
    rows = []
    for i, text in enumerate(phrases):
        wav = os.path.join(directory, f"{i}.raw.wav")
        subprocess.run(["espeak-ng", "-s", "220", "-w", wav, text], check=True, capture_output=True)
        samples, rate = soundfile.read(wav, dtype="float32")
        os.remove(wav)
        soundfile.write(os.path.join(directory, f"{i}.wav"), soxr.resample(samples, rate, 16000), 16000)
        row = {"audio": f"{i}.wav", "text": text}
        if labels is not None:
            row["label"] = labels[i % len(labels)]
        rows.append(row)
    path = os.path.join(directory, "train.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path
