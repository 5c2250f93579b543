"""scripts/make_corpus.py: spelled-out numbers, distinct sentences, held-out voices, a tiny build."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_corpus  # noqa: E402


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (42, "forty two"), (100, "one hundred"),
    (105, "one hundred and five"), (999, "nine hundred and ninety nine"), (1000, "one thousand"),
    (1005, "one thousand and five"), (2350, "two thousand three hundred and fifty"),
])
def test_number_words(n, words):
    assert make_corpus.number_words(n) == words


def test_ordinals_and_years():
    assert [make_corpus.ordinal_words(n) for n in (1, 2, 3, 5, 12, 20, 21, 31)] == [
        "first", "second", "third", "fifth", "twelfth", "twentieth", "twenty first", "thirty first"]
    assert [make_corpus.year_words(y) for y in (1905, 1900, 1984, 2000, 2007, 2014)] == [
        "nineteen oh five", "nineteen hundred", "nineteen eighty four", "two thousand", "two thousand and seven",
        "twenty fourteen"]


def test_sentences_are_distinct_after_normalisation_and_deterministic():
    a = make_corpus.generate_sentences(500, np.random.default_rng(1))
    assert len({make_corpus.normalized(s) for s in a}) == 500
    assert a == make_corpus.generate_sentences(500, np.random.default_rng(1))
    assert all(s[0].isupper() and s[-1] in ".?" for s in a)


def test_held_out_voices_leave_every_accent_and_variant_in_training():
    train, held = make_corpus.split_voices(np.random.default_rng(0), 0.5)
    assert not set(train) & set(held)
    assert len(train) + len(held) == len(make_corpus.ACCENTS) * len(make_corpus.VARIANTS)
    assert {a for a, _ in train} == set(make_corpus.ACCENTS)
    assert {v for _, v in train} == set(make_corpus.VARIANTS)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_a_tiny_corpus(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    pytest.importorskip("soxr")
    argv = ["--output", str(tmp_path), "--train-sentences", "3", "--eval-sentences", "1", "--test-sentences", "1",
            "--voices-per-sentence", "2", "--jobs", "1"]
    make_corpus.main(argv)
    rows = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "eval", "test")}
    assert [len(rows[s]) for s in ("train", "eval", "test")] == [6, 1, 1]
    texts = {s: {r["text"] for r in rows[s]} for s in rows}
    assert not texts["train"] & (texts["eval"] | texts["test"])
    args = make_corpus.parse_arguments(argv)
    _, train_voices, held_voices = make_corpus.plan(args)
    assert all(tuple(r["voice"].split("+")) in train_voices for r in rows["train"] + rows["eval"])
    assert tuple(rows["test"][0]["voice"].split("+")) in held_voices
    info = soundfile.info(tmp_path / rows["test"][0]["audio"])
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert info.frames / 16000 == pytest.approx(rows["test"][0]["seconds"], abs=1e-3)
    assert "held out for test" in (tmp_path / "README.md").read_text()
