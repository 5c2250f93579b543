"""Transcription: the pipeline, the command line and the library API against the reference.

The checkpoint is a tiny random CTC model (nothing can be downloaded), so what it "hears" in the
espeak-ng sentences is noise: the expected text and word times come from the reference
(transformers Wav2Vec2ForCTC + Wav2Vec2Processor greedy decoding with word offsets) run on the
same weights and the same samples, never from the spoken words.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import reference_config, small_config
from wav2vec2.audio import AudioError
from wav2vec2.cli import main as cli_main
from wav2vec2.spec.lengths import feat_extract_output_lengths
from wav2vec2.transcription import CTCModel, chunk_bounds, format_record, subtitle_cues, transcribe

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
def _save_reference_checkpoint(directory, local: bool, arch: str = "stable"):
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
    model, processor = _save_reference_checkpoint(directory, local=False)
    return directory, model, processor


@pytest.fixture(scope="module")
def local_checkpoint(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ctc_local"))
    model, processor = _save_reference_checkpoint(directory, local=True)
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


def run_cli(capsys, *argv):
    code = cli_main(["transcribe", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------- chunk plan (NumPy only)
@pytest.mark.parametrize("num_samples", [400, 16000, 48000 + 123, 160000 - 1])
@pytest.mark.parametrize("chunk_frames,context_frames", [(10, 0), (37, 5), (50, 25)])
def test_chunks_tile_the_frames_of_the_whole_input(num_samples, chunk_frames, context_frames):
    config = tiny_config()
    ratio = config.inputs_to_logits_ratio
    total = feat_extract_output_lengths(config, num_samples)
    kept = []
    for start, stop, keep in chunk_bounds(num_samples, config, chunk_frames, context_frames):
        assert start % ratio == 0 and 0 <= start < stop <= num_samples
        frames = feat_extract_output_lengths(config, stop - start)
        first = start // ratio  # the chunk's frame t is frame first + t of the whole input
        assert 0 <= keep.start < keep.stop <= frames
        assert keep.stop - keep.start <= chunk_frames
        assert keep.start <= context_frames and frames - keep.stop <= context_frames
        kept.extend(range(first + keep.start, first + keep.stop))
    assert kept == list(range(total))


# ---------------------------------------------------------------------------------------- pipeline vs reference
def test_pipeline_matches_reference_greedy_decode(checkpoint, speech_files):
    import soundfile

    directory, model, processor = checkpoint
    ctc = reference_ctc_model(directory, model)
    records = transcribe(speech_files, model=ctc, batch_size=2)
    assert [r["file"] for r in records] == speech_files
    for record, path in zip(records, speech_files):
        expected = reference_record(model, processor, soundfile.read(path, dtype="float32")[0])
        assert expected["words"], "the test model should produce words"
        assert_same_transcript(record, expected)


def test_maskless_checkpoint_batches_only_equal_lengths(tmp_path, speech_files):
    """Group-norm checkpoints take no attention mask, so padding would change their output: inputs of
    different lengths must not share a batch, and each must match the reference run alone."""
    import soundfile

    directory = str(tmp_path / "base")
    model, processor = _save_reference_checkpoint(directory, local=False, arch="base")
    ctc = reference_ctc_model(directory, model)
    assert not ctc.takes_attention_mask
    shapes = []
    forward = ctc.forward
    ctc.forward = lambda values, mask: shapes.append((values.shape, mask)) or forward(values, mask)
    waveform = soundfile.read(speech_files[0], dtype="float32")[0]
    records = transcribe([*speech_files, waveform], model=ctc, batch_size=4)
    assert all(mask is None for _, mask in shapes)
    assert sorted(shape for shape, _ in shapes) == sorted(
        [(2, waveform.size)] + [(1, soundfile.info(p).frames) for p in speech_files[1:]]
    )
    for record, path in zip(records, [*speech_files, speech_files[0]]):
        assert_same_transcript(record, reference_record(model, processor, soundfile.read(path, dtype="float32")[0]))


def test_long_input_chunked_agrees_with_unchunked(local_checkpoint):
    """30 s of speech in 5 s chunks with 1 s of context gives the unchunked frames, so the same words."""
    directory, model, processor = local_checkpoint
    pieces = []
    for sentence in SENTENCES * 3:
        pieces += [to_16k(*speak(sentence)), np.zeros(SR // 2, np.float32)]
    waveform = np.concatenate(pieces)
    waveform = np.resize(waveform, 30 * SR)  # exactly 30 s (wraps around if the speech is short)
    expected = reference_record(model, processor, waveform)

    ctc = reference_ctc_model(directory, model)
    calls = []
    forward = ctc.forward
    ctc.forward = lambda values, mask: calls.append(values.shape) or forward(values, mask)
    (record,) = transcribe([waveform], model=ctc, chunk_length_s=5.0, stride_length_s=1.0, batch_size=4)

    assert max(shape[1] for shape in calls) <= 5 * SR + 400  # no forward pass saw the whole input
    assert_same_transcript(record, expected)
    assert all(0 <= w["start"] < w["end"] <= 30.0 for w in record["words"])


def test_stereo_22k_file_is_downmixed_and_resampled(checkpoint, tmp_path):
    import soundfile

    directory, model, processor = checkpoint
    speech, rate = speak(SENTENCES[0])
    stereo = np.stack([speech, 0.5 * speech[::-1]], axis=1)  # two different channels
    path = str(tmp_path / "stereo.wav")
    soundfile.write(path, stereo, rate, subtype="FLOAT")
    soxr = pytest.importorskip("soxr")
    mono_16k = soxr.resample(stereo.mean(axis=1), rate, SR).astype(np.float32)
    expected = reference_record(model, processor, mono_16k)
    (record,) = transcribe(path, model=reference_ctc_model(directory, model))
    assert_same_transcript(record, expected)


def test_transcribe_api_accepts_arrays_and_rate_pairs(checkpoint, speech_files):
    import soundfile

    directory, model, processor = checkpoint
    waveform = soundfile.read(speech_files[0], dtype="float32")[0]
    ctc = reference_ctc_model(directory, model)
    records = transcribe([waveform, (waveform, SR), speech_files[0]], model=ctc)
    assert [r["file"] for r in records] == ["<array 0>", "<array 1>", speech_files[0]]
    expected = reference_record(model, processor, waveform)
    for record in records:
        assert_same_transcript(record, expected)


def test_transcribe_api_errors(checkpoint, speech_files, tmp_path):
    directory, model, _ = checkpoint
    ctc = reference_ctc_model(directory, model)
    missing = str(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="missing.wav"):
        transcribe([speech_files[0], missing], model=ctc)
    records = transcribe([missing, speech_files[0]], model=ctc, errors="return")
    assert "missing.wav" in records[0]["error"] and records[1]["text"] is not None
    with pytest.raises(ValueError, match="stride_length_s"):
        transcribe(speech_files[0], model=ctc, chunk_length_s=1.0, stride_length_s=0.5)


# ---------------------------------------------------------------------------------------- formats
WORDS = [{"word": f"w{i}", "start": 0.7 * i, "end": 0.7 * i + 0.5} for i in range(20)]


def test_subtitle_cues_cover_the_words_in_order():
    cues = subtitle_cues(WORDS, max_seconds=3.0)
    assert " ".join(text for _, _, text in cues) == " ".join(w["word"] for w in WORDS)
    assert all(end - start <= 3.0 for start, end, _ in cues)
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:]))


def test_srt_and_vtt_are_well_formed():
    record = {"file": "x.wav", "text": " ".join(w["word"] for w in WORDS), "words": WORDS}
    srt = format_record(record, "srt").strip().split("\n\n")
    for number, block in enumerate(srt, start=1):
        index, times, text = block.split("\n")
        assert index == str(number) and text
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", times)
    vtt = format_record(record, "vtt")
    assert vtt.startswith("WEBVTT\n\n")
    times = re.findall(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})", vtt)
    assert len(times) == len(srt)
    last_end = times[-1][4:]
    assert int(last_end[2]) * 1000 + int(last_end[3]) == round(WORDS[-1]["end"] * 1000)


# ---------------------------------------------------------------------------------------- command line, every backend
BACKEND_MODULES = {"torch": "torch", "tensorflow": "tensorflow", "flax": "flax"}


def _require_backend(backend):
    pytest.importorskip(BACKEND_MODULES[backend])
    try:
        importlib.import_module(f"wav2vec2.backends.{backend}").Wav2Vec2ForCTC
    except (ImportError, AttributeError):
        pytest.skip(f"wav2vec2.backends.{backend} has no Wav2Vec2ForCTC yet")


@pytest.mark.parametrize("backend", ["torch", "tensorflow", "flax"])
def test_cli_json_matches_reference_in_every_backend(backend, checkpoint, speech_files, capsys):
    import soundfile

    _require_backend(backend)
    directory, model, processor = checkpoint
    code, out, err = run_cli(capsys, *speech_files, "--model", directory, "--backend", backend, "--format", "json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == speech_files
    for record, path in zip(records, speech_files):
        assert set(record) == {"file", "text", "words"}
        assert_same_transcript(record, reference_record(model, processor, soundfile.read(path, dtype="float32")[0]))


def test_cli_bad_files_are_reported_and_the_others_printed(checkpoint, speech_files, tmp_path, capsys):
    import soundfile

    _require_backend("torch")
    directory, _, _ = checkpoint
    missing = str(tmp_path / "missing.wav")
    garbage = str(tmp_path / "garbage.wav")
    with open(garbage, "w") as f:
        f.write("not audio at all")
    empty = str(tmp_path / "empty.flac")
    open(empty, "wb").close()
    silent = str(tmp_path / "no_samples.wav")
    soundfile.write(silent, np.zeros(0, np.float32), SR)
    files = [missing, speech_files[0], garbage, empty, speech_files[1], silent]

    code, out, err = run_cli(capsys, *files, "--model", directory, "--format", "txt")
    assert code != 0
    for bad in (missing, garbage, empty, silent):
        assert bad in err
    good = transcribe(speech_files[:2], model=directory)
    assert out.splitlines() == [r["text"] for r in good]


@pytest.mark.parametrize("fmt", ["srt", "vtt", "txt"])
def test_cli_formats(fmt, checkpoint, speech_files, capsys):
    _require_backend("torch")
    directory, _, _ = checkpoint
    code, out, err = run_cli(capsys, speech_files[0], "--model", directory, "--format", fmt)
    assert code == 0, err
    (record,) = transcribe(speech_files[:1], model=directory)
    assert out == format_record(record, fmt)


# ---------------------------------------------------------------------------------------- language model
ARPA_WORDS = ["bad", "cab", "face", "bead", "dead", "fade", "head", "add", "bee", "egg"]
ARPA = "\n".join(
    ["\\data\\", f"ngram 1={len(ARPA_WORDS) + 3}", "ngram 2=2", "", "\\1-grams:"]
    + ["-1.5\t<unk>\t0", "0\t<s>\t-0.3", "-1.0\t</s>\t0"]
    + [f"{-0.8 - 0.1 * i:.2f}\t{w}\t-0.2" for i, w in enumerate(ARPA_WORDS)]
    + ["", "\\2-grams:", "-0.2\t<s> bad", "-0.3\tbad cab", "", "\\end\\", ""]
)


def test_cli_with_kenlm_matches_reference_beam_search(checkpoint, speech_files, tmp_path, capsys):
    """--lm: beam search on the log-softmax of the logits, as the reference processor decodes it."""
    pytest.importorskip("kenlm")
    pytest.importorskip("pyctcdecode")
    _require_backend("torch")
    import soundfile
    import torch
    import transformers
    from pyctcdecode import build_ctcdecoder

    directory, model, processor = checkpoint
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(ARPA)
    code, out, err = run_cli(capsys, *speech_files, "--model", directory, "--lm", str(arpa),
                             "--beam-width", "16", "--format", "json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]

    labels = [t for t, _ in sorted(processor.tokenizer.get_vocab().items(), key=lambda item: item[1])]
    reference = transformers.Wav2Vec2ProcessorWithLM(
        processor.feature_extractor, processor.tokenizer, build_ctcdecoder(labels, kenlm_model_path=str(arpa))
    )
    seconds_per_frame = model.config.inputs_to_logits_ratio / SR
    for record, path in zip(records, speech_files):
        inputs = processor(soundfile.read(path, dtype="float32")[0], sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values, attention_mask=inputs.attention_mask).logits[0]
        decoded = reference.decode(torch.log_softmax(logits, -1).numpy(), beam_width=16, output_word_offsets=True)
        expected = {
            "text": decoded.text,
            "words": [
                {"word": w["word"], "start": w["start_offset"] * seconds_per_frame, "end": w["end_offset"] * seconds_per_frame}
                for w in decoded.word_offsets
            ],
        }
        assert_same_transcript(record, expected)
        greedy = reference_record(model, processor, soundfile.read(path, dtype="float32")[0])
        assert record["text"] != greedy["text"]  # the language model did something


def test_long_file_is_streamed_and_agrees_with_unchunked(local_checkpoint, tmp_path, monkeypatch):
    """A long file on disk is read in blocks (never whole) and chunked; the words are the unchunked ones."""
    import soundfile

    from wav2vec2 import audio

    directory, model, processor = local_checkpoint
    speech, rate = speak(" ".join(SENTENCES))
    waveform = np.resize(speech, 20 * rate)  # 20 s at 22.05 kHz: resampled while streaming
    path = str(tmp_path / "long.wav")
    soundfile.write(path, waveform, rate, subtype="FLOAT")
    expected = reference_record(model, processor, to_16k(waveform, rate))

    def no_whole_reads(*args, **kwargs):
        raise AssertionError("the long file was read whole")

    monkeypatch.setattr(audio, "load_audio", no_whole_reads)
    (record,) = transcribe(path, model=reference_ctc_model(directory, model), chunk_length_s=4.0, stride_length_s=1.0)
    assert_same_transcript(record, expected)
    assert record["words"][-1]["end"] <= 20.0
