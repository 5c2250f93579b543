"""`wav2vec2 train` and `wav2vec2 evaluate`: exit statuses, bad rows named, metrics as JSON."""
import json
import os

import pytest

pytest.importorskip("torch")

from training_helpers import one_torch_thread, tiny_config, write_config, write_corpus  # noqa: E402,F401 (autouse)
from wav2vec2.cli import main  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A name that is no preset would be looked up on the hub: fail at once instead of retrying."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    manifest = write_corpus(tmp_path_factory.mktemp("corpus"))
    with open(manifest, "a") as f:  # two bad rows: a missing file, and no text
        f.write(json.dumps({"audio": "missing.wav", "text": "gone"}) + "\n")
        f.write(json.dumps({"audio": "0.wav"}) + "\n")
    return manifest


def train_args(tmp_path, corpus, *extra):
    config = write_config(tmp_path / "config.json", tiny_config())
    return ["train", "--model", config, "--train", corpus, "--output", str(tmp_path / "run"), "--max-steps", "2",
            "--batch-seconds", "4", "--lr", "1e-3", "--no-progress", *extra]


def test_train_names_bad_rows_then_evaluate_prints_metrics(tmp_path, corpus, capsys):
    assert main(train_args(tmp_path, corpus, "--eval", corpus, "--eval-every", "1")) == 0
    err = capsys.readouterr().err
    assert "train.jsonl:line 7: unreadable audio" in err and "missing.wav" in err
    assert "train.jsonl:line 8: missing column 'text'" in err
    assert "8 rows, 6 used" in err
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [r["step"] for r in log if "eval/wer" in r] == [1, 2]
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", corpus]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "ctc" and metrics["examples"] == 6
    assert 0 <= metrics["cer"] and 0 <= metrics["wer"]
    # the same numbers as the last evaluation in the log (same weights, same greedy decoding)
    assert metrics["wer"] == pytest.approx(log[-1]["eval/wer"]) and metrics["cer"] == pytest.approx(log[-1]["eval/cer"])


@pytest.mark.parametrize(
    "change, status, message",
    [
        (lambda a: a[:2] + ["no-such-preset"] + a[3:], 2, "not a preset"),
        (lambda a: a[:4] + ["missing.jsonl"] + a[5:], 1, "no such file"),
        (lambda a: a + ["--max-steps", "0"], 2, "positive integer"),
        (lambda a: a + ["--vocab", "missing-vocab.json"], 2, "vocabulary"),
        (lambda a: a + ["--fsdp", "--backend", "tensorflow"], 2, "fsdp is for the torch backend"),
        (lambda a: a + ["--fsdp", "--layerdrop", "0.1"], 2, "--layerdrop 0"),
    ],
    ids=["model", "data", "option", "vocab", "fsdp-backend", "fsdp-layerdrop"],
)
def test_bad_input_exit_statuses(tmp_path, corpus, capsys, change, status, message):
    assert main(change(train_args(tmp_path, corpus))) == status
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert message in err.splitlines()[-1] and err.splitlines()[-1].startswith("wav2vec2 train: error: ")


def test_an_existing_run_needs_resume(tmp_path, corpus, capsys):
    assert main(train_args(tmp_path, corpus)) == 0
    capsys.readouterr()
    assert main(train_args(tmp_path, corpus)) == 2
    assert "resume the run" in capsys.readouterr().err
    assert main(train_args(tmp_path, corpus, "--resume")) == 0  # already at --max-steps: nothing to do
    assert sorted(p for p in os.listdir(tmp_path / "run") if p.startswith("checkpoint-")) == ["checkpoint-2"]


def test_the_demo_model_says_when_it_is_not_there(tmp_path, corpus, capsys, monkeypatch):
    import wav2vec2
    from wav2vec2 import demo

    monkeypatch.setattr(demo, "DEMO_DIRECTORY", tmp_path / "no-demo")
    with pytest.raises(FileNotFoundError, match="scripts/train_demo.sh"):
        wav2vec2.demo_model_path()
    args = train_args(tmp_path, corpus)
    args[2] = "demo"
    assert main(args) == 2
    assert "the demo model is not in this installation" in capsys.readouterr().err
    (tmp_path / "no-demo").mkdir()
    (tmp_path / "no-demo" / "config.json").write_text("{}")
    assert wav2vec2.demo_model_path() == tmp_path / "no-demo"
