"""Wav2Vec2Processor against the reference (transformers 4.57.6), and the NumPy-only import."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from wav2vec2 import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

SR = 16000
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8, "H": 9, "L": 10}
TEXTS = ["HELLO THE", "TO", "A LOT"]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture
def vocab_dir(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    return tmp_path


@pytest.fixture
def pair(transformers, vocab_dir):
    ours = Wav2Vec2Processor(
        Wav2Vec2FeatureExtractor(return_attention_mask=True), Wav2Vec2CTCTokenizer(vocab_dir / "vocab.json")
    )
    ref = transformers.Wav2Vec2Processor(
        transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True),
        transformers.Wav2Vec2CTCTokenizer(str(vocab_dir / "vocab.json")),
    )
    return ours, ref


@pytest.fixture
def audio(rng):
    return [rng.normal(size=n) for n in (50, 30, 41)]


def assert_same(got, expected):
    assert sorted(got) == sorted(expected)
    for key in expected:
        if isinstance(expected[key], np.ndarray) or isinstance(expected[key][0], np.ndarray):
            for a, b in zip(got[key], expected[key]):
                np.testing.assert_allclose(a, b, atol=1e-6)
        else:
            assert got[key] == expected[key], key


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": True},
        {"padding": True, "return_tensors": "np"},
        {"padding": "max_length", "max_length": 64, "return_tensors": "np"},
    ],
)
def test_call_matches_reference(pair, audio, kwargs):
    ours, ref = pair
    assert_same(ours(audio=audio, sampling_rate=SR, **kwargs), ref(audio=audio, sampling_rate=SR, **kwargs))
    assert_same(ours(text=TEXTS, **kwargs), ref(text=TEXTS, **kwargs))
    both = ours(audio=audio, text=TEXTS, sampling_rate=SR, **kwargs)
    assert_same(both, ref(audio=audio, text=TEXTS, sampling_rate=SR, **kwargs))
    assert "labels" in both and "input_ids" not in both


def test_pad_matches_reference(pair, rng):
    ours, ref = pair
    features = [{"input_values": rng.normal(size=n).astype(np.float32)} for n in (20, 13)]
    labels = [{"input_ids": ours.tokenizer.encode(t)} for t in TEXTS[:2]]
    got = ours.pad(features, labels=labels, padding=True, return_tensors="np")
    expected = ref.pad(features, labels=labels, padding=True, return_tensors="np")
    assert_same(got, expected)
    assert_same(ours.pad(labels=labels, return_tensors="np"), ref.pad(labels=labels, return_tensors="np"))
    assert_same(ours.pad(input_features=features), ref.pad(input_features=features))


def test_decode_forwards_to_the_tokenizer(pair, rng):
    ours, ref = pair
    ids = rng.integers(0, len(VOCAB), size=(2, 30))
    assert ours.batch_decode(ids) == ref.batch_decode(ids)
    expected = ref.decode(ids[0], output_word_offsets=True).word_offsets
    assert ours.decode(ids[0], output_word_offsets=True).word_offsets == expected
    labels = ours(text=TEXTS[0])["input_ids"]
    assert ours.decode(labels, group_tokens=False) == TEXTS[0]  # "LL" kept: labels are not collapsed


def test_our_files_load_in_reference(pair, transformers, tmp_path, audio):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    files = ["preprocessor_config.json", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    assert sorted(os.listdir(tmp_path)) == files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.Wav2Vec2Processor.from_pretrained(tmp_path)
    assert isinstance(ref.tokenizer, transformers.Wav2Vec2CTCTokenizer)
    assert ref.feature_extractor.return_attention_mask is True
    inputs = dict(audio=audio, text=TEXTS, sampling_rate=SR, padding=True)
    assert_same(ours(**inputs), ref(**inputs))
    for name in ("preprocessor_config.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / name).read_text())["processor_class"] == "Wav2Vec2Processor"


def test_reference_files_load_in_ours(pair, tmp_path, audio):
    _, ref = pair
    ref.save_pretrained(tmp_path)
    ours = Wav2Vec2Processor.from_pretrained(tmp_path)
    assert ours.feature_extractor.return_attention_mask is True
    assert ours.tokenizer.get_vocab() == ref.tokenizer.get_vocab()
    inputs = dict(audio=audio, text=TEXTS, sampling_rate=SR, padding=True)
    assert_same(ours(**inputs), ref(**inputs))
    # Saved again by ours, every file says what the reference wrote.
    ours.save_pretrained(tmp_path / "again")
    for name in os.listdir(tmp_path):
        if name.endswith(".json"):
            assert json.loads((tmp_path / "again" / name).read_text()) == json.loads((tmp_path / name).read_text()), name


def test_errors(pair, audio):
    ours, _ = pair
    with pytest.raises(ValueError, match="audio=, text= or both"):
        ours()
    with pytest.raises(ValueError, match=r"unknown keyword arguments \['sample_rate'\]"):
        ours(audio=audio, sample_rate=SR)
    with pytest.raises(ValueError, match="8000 Hz"):
        ours(audio=audio, sampling_rate=8000)
    with pytest.raises(ValueError, match="input_features=, labels= or both"):
        ours.pad()
    with pytest.raises(ValueError, match="Wav2Vec2FeatureExtractor"):
        Wav2Vec2Processor(ours.tokenizer, ours.tokenizer)
    with pytest.raises(ValueError, match="Wav2Vec2CTCTokenizer"):
        Wav2Vec2Processor(ours.feature_extractor, ours.feature_extractor)


def test_import_needs_numpy_only():
    code = (
        "import sys, wav2vec2\n"
        "from wav2vec2 import Wav2Vec2Processor, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor\n"
        "import wav2vec2.spec.ctc\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'jax', 'flax', 'transformers') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
