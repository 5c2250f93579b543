"""Corpus transcription on Ray Data, on a local Ray (``ray.init(num_cpus=2)``, one session for the module).

The oracle is single-process transcription of the same files into a results file: the Ray run must
give the very same lines (long files chunked the same way, bad files the same error records).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("torch")

from speech_checkpoints import SR, checkpoint, speech_files  # noqa: E402,F401  (fixtures)
from wav2vec2.transcription import transcribe_to_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def lines_by_file(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    by_file = {json.loads(line)["file"]: line for line in lines}
    assert len(by_file) == len(lines), "a file has two records"
    return by_file


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_files):
    """The three sentences, a 10 s file (chunked and, in one process, streamed), a file with a NaN,
    one that is not audio and one that does not exist."""
    import soundfile

    directory = tmp_path_factory.mktemp("corpus")
    files = []
    for path in speech_files:
        files.append(str(directory / os.path.basename(path)))
        shutil.copy(path, files[-1])
    speech = soundfile.read(speech_files[0], dtype="float32")[0]
    soundfile.write(directory / "long.wav", np.resize(speech, 10 * SR), SR, subtype="FLOAT")
    speech[500] = np.nan
    soundfile.write(directory / "nan.wav", speech, SR, subtype="FLOAT")
    (directory / "garbage.wav").write_bytes(b"RIFF not really")
    return files + [str(directory / name) for name in ("long.wav", "nan.wav", "garbage.wav", "missing.wav")]


def test_ray_gives_the_single_process_records_and_two_actors_share_the_work(local_ray, checkpoint, corpus, tmp_path):
    options = dict(batch_size=1, chunk_length_s=4.0, stride_length_s=1.0)
    here = transcribe_to_file(corpus, tmp_path / "here.jsonl", checkpoint[0], **options)
    on_ray = transcribe_to_file(corpus, tmp_path / "ray.jsonl", checkpoint[0], ray=True, actors=2, **options)
    assert lines_by_file(tmp_path / "ray.jsonl") == lines_by_file(tmp_path / "here.jsonl")
    assert (on_ray.done, on_ray.failed, on_ray.skipped) == (here.done, here.failed, here.skipped) == (4, 3, 0)
    assert on_ray.audio_seconds == pytest.approx(here.audio_seconds)
    assert len(on_ray.actors) == 2
    errors = {json.loads(line)["file"]: json.loads(line)["error"]
              for line in lines_by_file(tmp_path / "ray.jsonl").values() if "error" in line}
    assert "NaN or infinite" in errors[corpus[4]] and "cannot read audio" in errors[corpus[5]]
    assert "no such file" in errors[corpus[6]]

    again = transcribe_to_file(corpus, tmp_path / "ray.jsonl", checkpoint[0], ray=True, **options)
    assert (again.done, again.failed, again.skipped) == (0, 0, 7)


def test_a_killed_ray_run_resumes_with_no_duplicate_and_no_cut_line(local_ray, checkpoint, speech_files, tmp_path):
    """SIGKILL the driver (a ``python -m wav2vec2`` process on this Ray cluster) once some records
    are written; a rerun skips them and completes the rest."""
    directory = tmp_path / "many"
    directory.mkdir()
    for i in range(40):
        shutil.copy(speech_files[i % 3], directory / f"{i:02d}.wav")
    output = tmp_path / "results.jsonl"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    driver = subprocess.Popen(
        [sys.executable, "-m", "wav2vec2", "transcribe", "--input-dir", str(directory), "--model", checkpoint[0],
         "--output", str(output), "--ray", local_ray, "--actors", "1", "--batch-size", "1", "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if output.exists() and output.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.02)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()
    written = output.read_bytes()
    assert 3 <= written.count(b"\n") < 40 and written.endswith(b"\n")  # each line went out whole
    before = lines_by_file(output)

    summary = transcribe_to_file(sorted(map(str, directory.iterdir())), output, checkpoint[0], ray=True, batch_size=1)
    after = lines_by_file(output)  # also: every line parses, no file twice
    assert len(after) == 40 and (summary.done, summary.skipped) == (40 - len(before), len(before))
    assert all(after[name] == line for name, line in before.items())


def test_a_model_the_actors_cannot_load_is_one_clear_error(local_ray, checkpoint, corpus, tmp_path):
    from wav2vec2.transcription.ray_data import ModelLoadError

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint[0], broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="the Ray actors cannot load the model: .*model.safetensors"):
        transcribe_to_file(corpus[:2], tmp_path / "results.jsonl", str(broken), ray=True)
    assert (tmp_path / "results.jsonl").read_bytes() == b""
