"""`wav2vec2 transcribe` on the command line: exit statuses, one-line errors, never a traceback.

2 for a bad option or model (before anything runs), 1 for a bad input or an output that cannot be
written (the good files are still transcribed and printed), 0 otherwise; checked through
``main([...])`` and, for a few, through ``python -m wav2vec2`` in a subprocess.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from speech_checkpoints import SR, checkpoint, fp32_unless_given, speech_files  # noqa: F401  (fixtures)
from wav2vec2.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(capsys, *argv):
    code = main(["transcribe", *fp32_unless_given(argv), "--no-progress"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def run_process(*argv, stdout=subprocess.PIPE):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "wav2vec2", "transcribe", *fp32_unless_given(argv), "--no-progress"], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=300)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout, done.stderr


def summary_of(err: str) -> dict:
    match = re.search(r"(\d+) done, (\d+) failed, (\d+) skipped; ([\d.]+) h of audio", err)
    assert match, err
    done, failed, skipped, hours = match.groups()
    return dict(done=int(done), failed=int(failed), skipped=int(skipped), hours=float(hours))


@pytest.fixture
def nan_file(tmp_path, speech_files):
    import soundfile

    samples = soundfile.read(speech_files[0], dtype="float32")[0]
    samples[100] = np.nan
    path = str(tmp_path / "nan.wav")
    soundfile.write(path, samples, SR, subtype="FLOAT")
    return path


# ---------------------------------------------------------------------------------------- bad options and models: 2
BAD_OPTIONS = [
    (["--chunk-length-s", "inf"], "argument --chunk-length-s: must be a finite number >= 0, got 'inf'"),
    (["--chunk-length-s", "nan"], "argument --chunk-length-s: must be a finite number >= 0, got 'nan'"),
    (["--chunk-length-s", "-2"], "argument --chunk-length-s: must be a finite number >= 0, got '-2'"),
    (["--stride-length-s", "-1"], "argument --stride-length-s: must be a finite number >= 0"),
    (["--chunk-length-s", "2", "--stride-length-s", "1"], "chunk_length_s=2.0 must exceed twice stride_length_s=1.0"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got '0'"),
    (["--batch-size", "1.5"], "argument --batch-size: must be a positive integer, got '1.5'"),
    (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
    (["--precision", "int8", "--backend", "flax"], "precision 'int8' has no Flax path"),
    (["--device", "bogus"], "device 'bogus' cannot be used with the torch backend"),
    (["--ray"], "--ray writes its records to a results file: give --output"),
    (["--actors", "2"], "--actors, --gpus-per-actor and --cpus-per-actor need --ray"),
    (["--output", "{tmp}/r.jsonl", "--format", "srt"], "--output writes JSON lines; --format srt is for the standard output"),
    (["--output", "{tmp}/r.jsonl", "--ray", "--actors", "0"], "argument --actors: must be a positive integer"),
]


@pytest.mark.parametrize("extra, message", BAD_OPTIONS)
def test_bad_options_exit_2_with_one_line(extra, message, checkpoint, speech_files, capsys, tmp_path):
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    code, out, err = run_main(capsys, speech_files[0], "--model", checkpoint[0], *extra)
    assert (code, out) == (2, "")
    assert err.startswith("wav2vec2 transcribe: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "r.jsonl")


def test_bad_models_exit_2(checkpoint, speech_files, capsys, tmp_path):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in ("config.json", "preprocessor_config.json", "vocab.json", "tokenizer_config.json"):
        (no_weights / name).write_bytes(open(os.path.join(checkpoint[0], name), "rb").read())
    for model in (str(tmp_path / "missing"), str(no_weights)):
        code, out, err = run_main(capsys, speech_files[0], "--model", model)
        assert (code, out) == (2, "") and model in err and len(err.splitlines()) == 1
    code, _, err = run_main(capsys, "--model", checkpoint[0])
    assert code == 2 and "no audio: give audio files, --manifest FILE or --input-dir DIR" in err


# ---------------------------------------------------------------------------------------- bad inputs: 1
def test_bad_audio_exits_1_and_the_others_are_printed(checkpoint, speech_files, nan_file, capsys):
    import soundfile

    code, out, err = run_main(capsys, speech_files[0], nan_file, speech_files[1], "--model", checkpoint[0])
    assert code == 1
    assert f"wav2vec2 transcribe: error: {nan_file}: the audio holds NaN or infinite samples" in err
    assert len(out.splitlines()) == 2
    summary = summary_of(err)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    seconds = sum(soundfile.info(path).duration for path in speech_files[:2])
    assert summary["hours"] == pytest.approx(seconds / 3600, abs=1e-4)


def test_bad_manifests_and_directories_exit_1(checkpoint, capsys, tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('a.wav\n{"audio_filepath": 3}\n')
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("not audio")
    cases = [
        (["--manifest", str(tmp_path / "missing.txt")], "missing.txt: cannot read the manifest"),
        (["--manifest", str(bad_json)], "bad.jsonl: line 2 has no \"audio_filepath\" or \"file\" string"),
        (["--input-dir", str(empty_dir)], "empty: no audio files in it"),
        (["--input-dir", str(tmp_path / "nowhere")], "nowhere: not a directory"),
    ]
    for extra, message in cases:
        code, out, err = run_main(capsys, "--model", checkpoint[0], *extra)
        assert (code, out) == (1, "") and message in err and len(err.splitlines()) == 1


def test_an_output_that_cannot_be_written_exits_1(checkpoint, speech_files, capsys, tmp_path):
    code, _, err = run_main(capsys, speech_files[0], "--model", checkpoint[0], "--output", "/dev/full")
    assert code == 1 and "error: cannot write /dev/full: No space left on device" in err
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text("my own notes\n")
    code, _, err = run_main(capsys, speech_files[0], "--model", checkpoint[0], "--output", str(foreign))
    assert code == 1 and "notes.jsonl: line 1 is not JSON" in err
    assert foreign.read_text() == "my own notes\n"  # left as it was


# ---------------------------------------------------------------------------------------- manifests, directories, results
def test_manifest_and_input_dir_into_a_results_file_then_resumed(checkpoint, speech_files, capsys, tmp_path):
    from wav2vec2.transcription import transcribe

    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# the first two\n{speech_files[0]}\n\n" + json.dumps({"audio_filepath": speech_files[1]}) + "\n")
    output = tmp_path / "results.jsonl"
    code, out, err = run_main(capsys, "--manifest", str(manifest), "--model", checkpoint[0], "--output", str(output))
    assert (code, out) == (0, "") and summary_of(err)["done"] == 2
    # --input-dir lists all three; the two already done are skipped.
    code, _, err = run_main(capsys, "--input-dir", os.path.dirname(speech_files[0]), "--model", checkpoint[0],
                            "--output", str(output))
    assert code == 0 and (summary_of(err)["done"], summary_of(err)["skipped"]) == (1, 2)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    expected = transcribe(speech_files, model=checkpoint[0])
    assert [{k: v for k, v in r.items() if k != "sha256"} for r in records] == expected


def test_precision_bf16_from_the_command_line(checkpoint, speech_files, capsys):
    code, out, err = run_main(capsys, *speech_files, "--model", checkpoint[0], "--precision", "bf16", "--format", "json")
    assert code == 0, err
    assert [json.loads(line)["file"] for line in out.splitlines()] == speech_files


# ---------------------------------------------------------------------------------------- as a process
def test_exit_statuses_of_the_process(checkpoint, speech_files, nan_file):
    """One case of each kind as a real process (the other cases run in this process above)."""
    model = checkpoint[0]
    code, out, err = run_process(speech_files[0], "--model", model, "--chunk-length-s", "inf")
    assert (code, out) == (2, "") and "--chunk-length-s: must be a finite number" in err
    code, _, err = run_process(speech_files[0], "--model", os.path.join(model, "missing"))
    assert code == 2 and "missing" in err
    code, out, err = run_process(nan_file, speech_files[1], "--model", model)
    assert code == 1 and nan_file in err and len(out.splitlines()) == 1
    with open("/dev/full", "w") as full:
        code, _, err = run_process(speech_files[0], "--model", model, stdout=full)
    assert code == 1 and "cannot write to the standard output: No space left on device" in err
    assert "Exception ignored" not in err


def test_tensorflow_start_up_notes_stay_off_stderr():
    """TensorFlow's native libraries print notes while loading, before TF_CPP_MIN_LOG_LEVEL applies: the CLI
    sets the level (3 unless the user chose one) and the backend filters those notes by it, line by line."""
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    code = "\n".join([
        "import contextlib, io, os",
        "from wav2vec2.cli import main",
        "with contextlib.redirect_stdout(io.StringIO()):",
        "    main(['transcribe', '--help'])",  # the CLI starting up: sets the level
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])",
        "import wav2vec2.backends.tensorflow",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3"] and done.stderr == ""

    from wav2vec2.backends import _shown

    info = "I0000 00:00:1796226932.057062    4494 cudart_stub.cc:31] Could not find cuda drivers\n"
    warning = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    error = "E0000 00:00:1796226938.989315    4494 cuda_platform.cc:52] failed call to cuInit\n"
    assert [_shown(line, 1) for line in (info, warning, error, "a Python warning\n")] == [False, True, True, True]
    assert [_shown(line, 2) for line in (info, warning, error)] == [False, False, True]
    assert [_shown(line, 3) for line in (info, warning, error)] == [False, False, False]
