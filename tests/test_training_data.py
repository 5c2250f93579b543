"""wav2vec2.training.data: manifests of each kind, datasets directories, bad rows named by line."""
import json

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from wav2vec2.audio import load_audio  # noqa: E402
from wav2vec2.training.data import DataError, read_dataset  # noqa: E402


def tone(seconds, rate=16000, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    return samples[:, 0] if channels == 1 else samples


@pytest.fixture
def clips(tmp_path):
    """A few audio files next to where the manifests go, of several rates and channel counts."""
    audio = tmp_path / "clips"
    audio.mkdir()
    soundfile.write(audio / "a.wav", tone(0.5), 16000)
    soundfile.write(audio / "b.flac", tone(0.25, 8000, channels=2, seed=1), 8000)
    soundfile.write(audio / "c.wav", tone(0.3, 22050, seed=2), 22050)
    soundfile.write(audio / "short.wav", tone(0.001), 16000)  # 16 samples
    bad = tone(0.2)
    bad[5] = np.nan
    soundfile.write(audio / "nan.wav", bad, 16000, subtype="FLOAT")
    (audio / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    return tmp_path


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_jsonl_manifest_reads_good_rows_and_names_each_bad_one_by_line(clips):
    manifest = write_jsonl(clips / "train.jsonl", [
        {"audio": "clips/a.wav", "text": "Hello there."},                  # 1 ok
        {"audio": "clips/missing.wav", "text": "gone"},                    # 2 missing file
        "",                                                                # 3 blank: not a row
        {"audio": "clips/garbage.wav", "text": "noise"},                   # 4 unreadable
        {"audio": "clips/nan.wav", "text": "nan"},                         # 5 NaN samples
        {"audio": "clips/b.flac", "text": "  ...  "},                      # 6 empty after normalisation
        {"audio": "clips/b.flac"},                                         # 7 no text column
        {"audio": "clips/short.wav", "text": "too short"},                 # 8 shorter than the conv stack
        "{not json",                                                       # 9 not JSON
        "[1, 2]",                                                          # 10 not an object
        {"text": "no audio"},                                              # 11 no audio column
        {"audio": str(clips / "clips" / "c.wav"), "text": "absolute path"},  # 12 ok
    ])
    data = read_dataset(manifest, "ctc", min_samples=400)
    assert [e.where for e in data.examples] == [f"{manifest}:line 1", f"{manifest}:line 12"]
    assert [e.text for e in data.examples] == ["Hello there.", "absolute path"]
    assert data.examples[0].seconds == pytest.approx(0.5)
    reasons = {row.where.rsplit(" ", 1)[1]: row.reason for row in data.bad_rows}
    assert sorted(reasons, key=int) == ["2", "4", "5", "6", "7", "8", "9", "10", "11"]
    assert "no such file" in reasons["2"] and "missing.wav" in reasons["2"]
    assert reasons["4"].startswith("unreadable audio")
    assert "NaN" in reasons["5"]
    assert reasons["6"].startswith("empty text")
    assert reasons["7"] == "missing column 'text'"
    assert reasons["8"].startswith("too short") and "400 samples" in reasons["8"]
    assert reasons["9"].startswith("not valid JSON")
    assert "JSON object" in reasons["10"]
    assert reasons["11"] == "missing column 'audio'"
    summary = data.summary()
    assert "11 rows, 2 used" in summary and "9 skipped" in summary and "1 missing column 'text'" in summary


def test_csv_and_tsv_manifests_count_lines_across_quoted_newlines(clips):
    csv_path = clips / "train.csv"
    csv_path.write_text(
        'audio,text,speaker\n'
        'clips/a.wav,"first, with a comma",x\n'
        'clips/c.wav,"a transcript\nover two lines",y\n'
        'clips/missing.wav,gone,z\n'
        'clips/b.flac,too,many,fields\n'
        'clips/b.flac,last,w\n'
    )
    data = read_dataset(csv_path)
    assert [e.text for e in data.examples] == ["first, with a comma", "a transcript\nover two lines", "last"]
    assert [e.where.rsplit(" ", 1)[1] for e in data.examples] == ["2", "3", "7"]
    assert [(row.where.rsplit(" ", 1)[1], row.reason.split(":")[0]) for row in data.bad_rows] == [
        ("5", "unreadable audio"), ("6", "has 4 fields, the header names 3"),
    ]
    tsv_path = clips / "eval.tsv"
    tsv_path.write_text("label\taudio\nyes\tclips/a.wav\nmaybe\tclips/b.flac\n")
    data = read_dataset(tsv_path, "sequence-classification", labels=["yes", "no"])
    assert [e.label for e in data.examples] == ["yes"]
    assert str(data.bad_rows[0]) == f"{tsv_path}:line 3: unknown label 'maybe' (known: no, yes)"


def test_a_manifest_without_a_needed_column_or_of_unknown_type_is_an_error(clips):
    (clips / "bad.csv").write_text("path,text\nclips/a.wav,hi\n")
    with pytest.raises(DataError, match=r"bad.csv: no column named 'audio'"):
        read_dataset(clips / "bad.csv")
    (clips / "data.txt").write_text("clips/a.wav hi\n")
    with pytest.raises(DataError, match="unknown manifest type"):
        read_dataset(clips / "data.txt")
    with pytest.raises(DataError, match="no such file or directory"):
        read_dataset(clips / "nothing.jsonl")
    (clips / "latin1.jsonl").write_bytes(b'{"audio": "clips/a.wav", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_dataset(clips / "latin1.jsonl")


def test_audio_is_read_as_transcription_reads_it(clips):
    """Any rate and channel count: the same samples as wav2vec2.audio.load_audio."""
    manifest = write_jsonl(clips / "m.jsonl", [{"audio": "clips/b.flac", "text": "x"}, {"audio": "clips/c.wav", "text": "y"}])
    for example, name in zip(read_dataset(manifest).examples, ["b.flac", "c.wav"]):
        expected = load_audio(clips / "clips" / name, 16000)
        np.testing.assert_array_equal(example.load_audio(16000), expected)


def test_pretraining_needs_no_text_column(clips):
    manifest = write_jsonl(clips / "m.jsonl", [{"audio": "clips/a.wav"}, {"audio": "clips/c.wav", "text": ""}])
    assert len(read_dataset(manifest, "pretraining").examples) == 2
    assert [row.reason for row in read_dataset(manifest, "ctc").bad_rows] == ["missing column 'text'", "empty text"]


def test_max_seconds_skips_long_rows(clips):
    manifest = write_jsonl(clips / "m.jsonl", [{"audio": "clips/a.wav", "text": "long"}, {"audio": "clips/c.wav", "text": "ok"}])
    data = read_dataset(manifest, max_seconds=0.4)
    assert [e.text for e in data.examples] == ["ok"]
    assert data.bad_rows[0].reason.startswith("too long: 0.5 s")


# ------------------------------------------------------------------------------------ datasets
datasets = pytest.importorskip("datasets")


def _save(tmp_path, name, columns, features=None):
    # Built from plain columns and cast at the table level: encoding into an Audio feature
    # would need torchcodec, which reading does not.
    dataset = datasets.Dataset.from_dict(columns)
    if features is not None:
        dataset = dataset.cast(datasets.Features(features))
    dataset.save_to_disk(str(tmp_path / name))
    return tmp_path / name


def test_datasets_directory_with_an_audio_feature_of_bytes(clips):
    files = [clips / "clips" / n for n in ("a.wav", "b.flac", "garbage.wav")]
    path = _save(clips, "ds", {
        "audio": [{"bytes": f.read_bytes(), "path": f.name} for f in files],
        "sentence": ["one", "two", "three"],
    }, {"audio": datasets.Audio(), "sentence": datasets.Value("string")})
    data = read_dataset(path, text_column="sentence", min_samples=400)
    assert [e.text for e in data.examples] == ["one", "two"]
    np.testing.assert_array_equal(data.examples[1].load_audio(16000), load_audio(files[1], 16000))
    assert [row.where for row in data.bad_rows] == [f"{path}:row 2"]
    assert "garbage.wav" in data.bad_rows[0].reason


def test_datasets_directory_with_a_path_column_and_splits(clips):
    train = datasets.Dataset.from_dict({"audio": [str(clips / "clips" / "a.wav"), "clips/missing.wav"], "label": ["yes", "no"]})
    split_dir = clips / "splits"
    datasets.DatasetDict({"train": train, "test": train}).save_to_disk(str(split_dir))
    with pytest.raises(DataError, match=r"holds the splits \['test', 'train'\]"):
        read_dataset(split_dir, "sequence-classification")
    data = read_dataset(split_dir, "sequence-classification", split="train")
    assert [e.label for e in data.examples] == ["yes"]
    assert data.bad_rows[0].where == f"{split_dir}:row 1" and "no such file" in data.bad_rows[0].reason
    no_label = _save(clips, "nolabel", {"audio": [str(clips / "clips" / "a.wav")]})
    with pytest.raises(DataError, match=r"no column named 'label'"):
        read_dataset(no_label, "sequence-classification")
