"""Shared by the transcription tests: a tiny CTC checkpoint saved by the reference, spoken test
sentences (espeak-ng) and the reference's greedy transcript of them.

The checkpoint is random (nothing can be downloaded), so what it "hears" in the sentences is noise:
expected texts and word times come from the reference run on the same weights and samples.
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import reference_config, small_config
from wav2vec2.cli import main as cli_main
from wav2vec2.transcription import CTCModel

SR = 16000
LETTERS = "abcdefgh"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a wizard's job is to vex chumps quickly in fog",
    "pack my box with five dozen liquor jugs",
]


def tiny_config(arch="stable", **overrides):
    """A model with a 320-sample frame (as real checkpoints) and a 325-sample receptive field."""
    values = dict(
        vocab_size=len(VOCAB), conv_dim=(8, 8, 8), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
        hidden_dropout=0.0, pad_token_id=0,
    )
    values.update(overrides)
    return small_config(arch, **values)


# ---------------------------------------------------------------------------------------- fixtures
def save_reference_checkpoint(directory, local: bool, arch: str = "stable"):
    """A random reference CTC model and processor saved to ``directory``; returns (model, processor).

    The head is scaled and biased so that greedy decoding yields letters, blanks and word breaks
    (an untouched random head predicts one token everywhere). ``local=True`` zeroes the attention
    output projections: every frame then depends only on nearby samples, so chunked inference
    must reproduce the unchunked frames exactly. arch="base" (group norm) checkpoints take no
    attention mask, as in the reference.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(reference_config(tiny_config(arch))).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
        model.lm_head.bias[VOCAB["<pad>"]] += 5.0
        model.lm_head.bias[VOCAB["|"]] += 4.5
        model.lm_head.bias[1:4] -= 100.0  # <s>, </s>, <unk> never win
        if local:
            for layer in model.wav2vec2.encoder.layers:
                layer.attention.out_proj.weight.zero_()
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump(VOCAB, f)
    tokenizer = transformers.Wav2Vec2CTCTokenizer(os.path.join(directory, "vocab.json"))
    extractor = transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=SR, return_attention_mask=arch == "stable", do_normalize=True
    )
    processor = transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    model.save_pretrained(directory)
    return model, processor


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ctc"))
    model, processor = save_reference_checkpoint(directory, local=False)
    return directory, model, processor


@pytest.fixture(scope="module")
def local_checkpoint(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ctc_local"))
    model, processor = save_reference_checkpoint(directory, local=True)
    return directory, model, processor


def speak(text: str) -> tuple:
    """espeak-ng's rendering of ``text``: (samples float32, 22050 Hz); skips without espeak-ng."""
    import tempfile

    import soundfile

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-w", path, text], check=True, capture_output=True)
        samples, rate = soundfile.read(path, dtype="float32")
    return samples, rate


def to_16k(samples, rate):
    soxr = pytest.importorskip("soxr")
    return soxr.resample(samples, rate, SR).astype(np.float32)


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory):
    """Three spoken sentences written as 16 kHz float wav files."""
    import soundfile

    directory = tmp_path_factory.mktemp("speech")
    paths = []
    for i, sentence in enumerate(SENTENCES):
        path = str(directory / f"sentence{i}.wav")
        soundfile.write(path, to_16k(*speak(sentence)), SR, subtype="FLOAT")
        paths.append(path)
    return paths


def reference_record(model, processor, waveform):
    """Text and word times from the reference's greedy decode of one 16 kHz waveform."""
    import torch

    inputs = processor(waveform, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        logits = model(inputs.input_values, attention_mask=inputs.get("attention_mask")).logits
    decoded = processor.batch_decode(logits.argmax(-1), output_word_offsets=True)
    seconds_per_frame = model.config.inputs_to_logits_ratio / SR
    words = [
        {"word": w["word"], "start": w["start_offset"] * seconds_per_frame, "end": w["end_offset"] * seconds_per_frame}
        for w in decoded.word_offsets[0]
    ]
    return {"text": decoded.text[0], "words": words}


def assert_same_transcript(record, expected):
    assert record["text"] == expected["text"]
    assert [w["word"] for w in record["words"]] == [w["word"] for w in expected["words"]]
    np.testing.assert_allclose([w["start"] for w in record["words"]], [w["start"] for w in expected["words"]], atol=1e-6)
    np.testing.assert_allclose([w["end"] for w in record["words"]], [w["end"] for w in expected["words"]], atol=1e-6)


def reference_ctc_model(directory, model):
    """Our pipeline around the reference model's forward: tests the pipeline without our backends."""
    import torch

    from wav2vec2 import Wav2Vec2Config
    from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
    from wav2vec2.tokenization import Wav2Vec2CTCTokenizer

    def forward(input_values, attention_mask):
        mask = None if attention_mask is None else torch.from_numpy(attention_mask)
        with torch.no_grad():
            return model(torch.from_numpy(input_values), attention_mask=mask).logits.numpy()

    return CTCModel(
        Wav2Vec2Config.from_pretrained(directory),
        Wav2Vec2FeatureExtractor.from_pretrained(directory),
        Wav2Vec2CTCTokenizer.from_pretrained(directory),
        forward,
    )


def fp32_unless_given(argv) -> list:
    """The oracles are fp32: the default precision (auto) is bf16 on an AMX CPU, which moves near-tied
    frames of these random-weight models (the demo model's tests cover the default)."""
    return list(argv) if "--precision" in argv else [*argv, "--precision", "fp32"]


def run_cli(capsys, *argv):
    code = cli_main(["transcribe", *fp32_unless_given(argv), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err
