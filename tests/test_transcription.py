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

import numpy as np
import pytest

from speech_checkpoints import (  # noqa: F401  (checkpoint, local_checkpoint, speech_files: fixtures)
    SENTENCES, SR, assert_same_transcript, checkpoint, local_checkpoint, reference_ctc_model, reference_record,
    run_cli, save_reference_checkpoint, speak, speech_files, tiny_config, to_16k,
)
from wav2vec2.audio import AudioError
from wav2vec2.spec.lengths import feat_extract_output_lengths
from wav2vec2.transcription import chunk_bounds, format_record, subtitle_cues, transcribe


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
    model, processor = save_reference_checkpoint(directory, local=False, arch="base")
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


# ---------------------------------------------------------------------------------------- normalisation of long files
def test_block_statistics_match_the_whole_waveform(rng):
    """Merged per-block statistics equal the whole waveform's, even for a loud offset that a
    sum of squares minus the squared mean would lose in cancellation."""
    from wav2vec2.transcription.inputs import block_statistics

    waveform = (100.0 + 0.01 * rng.standard_normal(100_003)).astype(np.float32)
    stats = block_statistics(np.split(waveform, [1, 7000, 7001, 50_000]))
    whole = waveform.astype(np.float64)
    assert stats.count == waveform.size
    assert stats.mean.dtype == stats.variance.dtype == np.float32
    np.testing.assert_allclose(stats.mean, whole.mean(), rtol=1e-7)
    np.testing.assert_allclose(stats.variance, whole.var(), rtol=1e-5)


def test_streamed_chunks_are_the_whole_files_normalised_samples(checkpoint, tmp_path):
    """A streamed file's chunks hold the whole file's normalised samples (float64 oracle), and a
    worker that reads the file whole (read_normalised, the Ray path) gets exactly those samples."""
    import soundfile

    from wav2vec2.transcription.inputs import (
        ChunkPlan, probe, read_normalised, should_stream, streamed_chunks, streamed_statistics,
    )

    directory, model, _ = checkpoint
    ctc = reference_ctc_model(directory, model)
    waveform = np.resize(to_16k(*speak(SENTENCES[0])), 11 * SR) * 3.0 + 0.05  # loud, with an offset
    path = str(tmp_path / "long.wav")
    soundfile.write(path, waveform, SR, subtype="FLOAT")
    plan = ChunkPlan.from_seconds(ctc, 4.0, 1.0)
    source = probe(0, path, SR)
    assert should_stream(source, plan, SR)
    chunks = list(streamed_chunks(ctc, plan, source, streamed_statistics(path, SR)))

    whole = waveform.astype(np.float64)
    expected = (whole - whole.mean()) / np.sqrt(whole.var() + 1e-7)
    read_whole = read_normalised(ctc, plan, source)
    assert len(chunks) == len(plan.bounds(waveform.size)) > 2
    for chunk, (start, stop, keep) in zip(chunks, plan.bounds(waveform.size)):
        assert chunk.keep == keep and chunk.values.dtype == np.float32
        np.testing.assert_allclose(chunk.values, expected[start:stop], atol=2e-6)
        np.testing.assert_array_equal(chunk.values, read_whole[start:stop])


# ---------------------------------------------------------------------------------------- bad audio, bad options
def test_nan_or_inf_audio_is_a_bad_input_named_in_its_record(checkpoint, speech_files, tmp_path):
    """NaN/Inf samples: in a short file, in a long (streamed) one past its first chunks, in an
    array and in a (waveform, rate) pair. Each is an error record naming it; the others are
    transcribed as they are alone."""
    import soundfile

    directory, model, _ = checkpoint
    ctc = reference_ctc_model(directory, model)
    speech = soundfile.read(speech_files[0], dtype="float32")[0]
    short = speech.copy()
    short[1234] = np.nan
    soundfile.write(tmp_path / "nan.wav", short, SR, subtype="FLOAT")
    long = np.resize(speech, 10 * SR)
    long[8 * SR] = np.inf
    soundfile.write(tmp_path / "inf_long.wav", long, SR, subtype="FLOAT")
    bad_pair = (np.where(np.arange(speech.size) == 99, -np.inf, speech), SR)
    inputs = [str(tmp_path / "nan.wav"), speech_files[1], str(tmp_path / "inf_long.wav"), short, bad_pair, speech_files[2]]

    records = transcribe(inputs, model=ctc, chunk_length_s=4.0, errors="return")
    good = transcribe([speech_files[1], speech_files[2]], model=ctc, chunk_length_s=4.0)
    assert [records[1], records[5]] == good
    for index, where in [(0, "nan.wav"), (2, "inf_long.wav"), (3, "<array 3>"), (4, "<array 4>")]:
        assert set(records[index]) == {"file", "error"}
        assert where in records[index]["error"] and "NaN or infinite" in records[index]["error"]
    assert "8.000 s" in records[2]["error"]  # where the bad sample is
    with pytest.raises(AudioError, match="nan.wav: the audio holds NaN"):
        transcribe(inputs, model=ctc, chunk_length_s=4.0)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(chunk_length_s=float("inf")), "chunk_length_s must be a finite number"),
        (dict(chunk_length_s=float("nan")), "chunk_length_s must be a finite number"),
        (dict(chunk_length_s=-1.0), "chunk_length_s must be a finite number"),
        (dict(chunk_length_s=4.0, stride_length_s=float("inf")), "stride_length_s must be a finite number"),
        (dict(chunk_length_s=4.0, stride_length_s=2.0), "must exceed twice stride_length_s"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=2.5), "batch_size must be a positive integer"),
        (dict(batch_size=True), "batch_size must be a positive integer"),
    ],
)
def test_bad_options_are_refused_by_name(options, message, checkpoint, speech_files):
    directory, model, _ = checkpoint
    with pytest.raises(ValueError, match=message):
        transcribe(speech_files[0], model=reference_ctc_model(directory, model), **options)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(backend="mxnet"), "unknown backend 'mxnet'"),
        (dict(precision="fp16"), "unknown precision 'fp16'"),
        (dict(backend="flax", precision="int8"), "'int8' has no Flax path"),
        (dict(precision="int8", device="cuda"), "int8.*CPU only"),
        (dict(device="bogus"), "device 'bogus' cannot be used with the torch backend"),
        (dict(backend="tensorflow", device="bogus"), "device 'bogus' cannot be used with the tensorflow backend"),
        (dict(backend="tensorflow", device="/GPU:7"), "no GPU device here"),
        (dict(backend="flax", device="bogus"), "device 'bogus' cannot be used with the flax backend"),
    ],
)
def test_bad_models_backends_and_devices_are_refused_by_name(options, message, checkpoint):
    from wav2vec2.transcription import load_ctc_model

    backend = options.get("backend", "torch")
    if backend in BACKEND_MODULES:
        pytest.importorskip(BACKEND_MODULES[backend])
    with pytest.raises(ValueError, match=message):
        load_ctc_model(checkpoint[0], **options)


# ---------------------------------------------------------------------------------------- reduced precision
@pytest.mark.parametrize("backend, precision", [
    ("torch", "bf16"), ("torch", "int8"), ("tensorflow", "bf16"), ("flax", "bf16"),
])
def test_reduced_precision_agrees_with_fp32(backend, precision, checkpoint, speech_files):
    """bf16 and int8 greedy ids agree with fp32 on at least 97% of the frames of the test speech,
    and wherever they differ fp32's best two labels were within 1.0 of each other (near-ties:
    the random test model has many). Identical transcripts with a trained model, TensorFlow int8
    included: tests/test_demo_model.py."""
    _require_backend(backend)
    from wav2vec2.transcription import load_ctc_model
    from wav2vec2.transcription.inputs import ChunkPlan, probe, read_normalised

    directory = checkpoint[0]
    full = load_ctc_model(directory, backend)
    reduced = load_ctc_model(directory, backend, precision=precision)
    values = [read_normalised(full, ChunkPlan(full.config, None), probe(0, path, SR)) for path in speech_files]
    batch = full.feature_extractor.pad({"input_values": values}, return_attention_mask=True, return_tensors="np")
    expected = full.forward(batch["input_values"], batch["attention_mask"])  # one shape: one compilation
    logits = reduced.forward(batch["input_values"], batch["attention_mask"])
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    frames = feat_extract_output_lengths(full.config, np.asarray([v.size for v in values]))
    valid = np.arange(expected.shape[1])[None, :] < frames[:, None]  # (batch, frames)
    expected, logits = expected[valid], logits[valid]  # (valid frames, vocab)
    top2 = np.sort(expected, axis=-1)[:, -2:]
    differ = expected.argmax(-1) != logits.argmax(-1)
    assert np.all(top2[differ, 1] - top2[differ, 0] < 1.0)
    assert 1 - differ.mean() >= 0.97


# ---------------------------------------------------------------------------------------- results files
def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines()]


def _sha256(path):
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_results_file_is_resumed_without_duplicates_or_cut_lines(checkpoint, speech_files, tmp_path):
    """A rerun skips files done (same path, same bytes), drops a line cut short, redoes a file
    whose bytes changed, and keeps error records as done."""
    import shutil

    from wav2vec2.transcription import transcribe_to_file

    directory, model, _ = checkpoint
    ctc = reference_ctc_model(directory, model)
    files = [str(tmp_path / f"{i}.wav") for i in range(3)]
    for source, copy in zip(speech_files, files):
        shutil.copy(source, copy)
    missing = str(tmp_path / "missing.wav")
    output = tmp_path / "results.jsonl"

    first = transcribe_to_file([files[0], missing, files[1]], output, ctc)
    assert (first.done, first.failed, first.skipped) == (2, 1, 0)
    expected = transcribe([files[0], missing, files[1]], model=ctc, errors="return")
    assert _records(output) == [
        {**expected[0], "sha256": _sha256(files[0])},
        {**expected[1], "sha256": None},
        {**expected[2], "sha256": _sha256(files[1])},
    ]
    with open(output, "ab") as f:  # what a kill in the middle of a write would leave
        f.write(b'{"file": "' + files[2].encode() + b'", "text": "ab')
    shutil.copy(speech_files[2], files[0])  # the first file's audio changes

    second = transcribe_to_file([missing, *files, files[1]], output, ctc)
    assert (second.done, second.failed, second.skipped) == (2, 0, 2)
    records = _records(output)  # parses: the cut line is gone
    assert len(records) == 5
    assert {(r["file"], r["sha256"]) for r in records[3:]} == {(files[0], _sha256(files[0])), (files[2], _sha256(files[2]))}
    assert [r for r in records[3:] if r["file"] == files[2]] == [{**transcribe(files[2], model=ctc)[0], "sha256": _sha256(files[2])}]


def test_results_file_refuses_foreign_files_a_second_writer_and_undoes_a_failed_write(tmp_path, monkeypatch):
    import errno

    from wav2vec2.transcription import ResultsFile, ResultsFileError

    foreign = tmp_path / "notes.jsonl"
    foreign.write_bytes(b'{"file": "a.wav", "sha256": null}\n[1, 2]\n')
    with pytest.raises(ResultsFileError, match="notes.jsonl: line 2 is not a record"):
        ResultsFile(foreign)
    assert foreign.read_bytes() == b'{"file": "a.wav", "sha256": null}\n[1, 2]\n'

    path = tmp_path / "results.jsonl"
    with ResultsFile(path) as results:
        results.append({"file": "a.wav", "text": "a", "words": [], "sha256": "00"})
        with pytest.raises(ResultsFileError, match="another run is writing"):
            ResultsFile(path)
        real_write = os.write

        def half_then_full(fd, data):  # the disk fills up in the middle of a line
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(ResultsFileError, match="cannot write .*results.jsonl: No space left on device"):
            results.append({"file": "b.wav", "text": "b", "words": [], "sha256": "01"})
        monkeypatch.undo()
        assert path.read_bytes() == b'{"file": "a.wav", "text": "a", "words": [], "sha256": "00"}\n'
        assert results.is_done("a.wav", "00") and not results.is_done("b.wav", "01")
    with ResultsFile(path) as again:  # the lock went with the first
        assert again.is_done(os.path.abspath("a.wav"), "00")


def test_ray_and_the_frameworks_are_imported_only_when_used():
    """The transcription package and its command line import neither Ray nor a framework by themselves."""
    import subprocess
    import sys

    code = (
        "import sys, wav2vec2.transcription, wav2vec2.transcription.cli; "
        "print(sorted(m for m in ('ray', 'torch', 'tensorflow', 'jax') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.stdout.strip() == "[]"


def test_inputs_that_are_not_waveforms_are_named_error_records(checkpoint, speech_files):
    directory, model, _ = checkpoint
    ctc = reference_ctc_model(directory, model)
    odd = [{"samples": 1}, (np.zeros(4000), "fast"), (np.zeros(4000), -8000), np.zeros((3, 4000)), np.zeros(0), np.zeros(100)]
    records = transcribe([*odd, speech_files[0]], model=ctc, errors="return")
    for index, record in enumerate(records[:-1]):
        assert set(record) == {"file", "error"} and record["error"].startswith(f"<array {index}>: ")
    assert "receptive field" in records[5]["error"]
    assert records[-1] == transcribe(speech_files[0], model=ctc)[0]


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_is_bf16_on_a_cpu_with_amx(amx, monkeypatch):
    import torch

    from wav2vec2.transcription import model
    from wav2vec2.transcription.model import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    on_cpu = "bf16" if amx else "fp32"
    for backend, device in (("torch", None), ("torch", "cpu"), ("flax", "cpu"), ("tensorflow", "/CPU:0"),
                            ("tensorflow", "/device:CPU:0")):
        assert resolve_precision("auto", backend, device) == on_cpu
    for backend, device in (("torch", "cuda"), ("torch", "cuda:1"), ("tensorflow", "/GPU:0"), ("flax", "gpu"),
                            ("onnxruntime", None)):
        assert resolve_precision("auto", backend, device) == "fp32"
    monkeypatch.setattr(model, "_runs_on_cpu", lambda backend, device: False)  # e.g. TensorFlow seeing a GPU
    assert resolve_precision("auto", "tensorflow") == "fp32"
    for precision in ("fp32", "bf16", "int8"):
        assert resolve_precision(precision, "torch") == precision


def test_amx_is_read_from_cpuinfo_without_torch(monkeypatch, tmp_path):
    import builtins

    from wav2vec2.transcription import model

    real_import, real_open = builtins.__import__, builtins.open
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "torch" else real_import(name, *a, **k))
    for flags, expected in (("fpu avx512f amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", False)):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
        assert model._cpu_has_amx() is expected
