"""wav2vec2.training.vocabulary: text normalisation, vocab.json built from text, labels."""
import json

import pytest

from conftest import small_config
from wav2vec2.tokenization import Wav2Vec2CTCTokenizer
from wav2vec2.training.vocabulary import (
    build_vocabulary,
    check_tokenizer,
    ctc_tokenizer,
    encode,
    label_vocabulary,
    normalize_text,
    unknown_characters,
)


@pytest.mark.parametrize("text, expected", [
    ("Hello, world!", "HELLO WORLD"),
    ("Don't stop—believing.", "DON'T STOP BELIEVING"),
    ("Nadia\u2019s well-known caf\u00e9", "NADIA'S WELL KNOWN CAF\u00c9"),
    ("'quoted' and \u2018curly\u2019", "QUOTED AND CURLY"),
    ("rock 'n' roll", "ROCK N ROLL"),
    ("\ufb01ne  \t spaces\n", "FINE SPACES"),  # ligature, runs of whitespace
    ("room 42/b", "ROOM 42 B"),
    ("\u00a1Qu\u00e9? \u00bfC\u00f3mo?", "QU\u00c9 C\u00d3MO"),
    ("...", ""),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_vocabulary_layout_and_encoding():
    vocab = build_vocabulary(["The cat.", "a DOG's tail"])
    assert list(vocab.items())[:5] == [("<pad>", 0), ("<s>", 1), ("</s>", 2), ("<unk>", 3), ("|", 4)]
    assert list(vocab)[5:] == sorted("'ACDEGHILOST")
    assert sorted(vocab.values()) == list(range(len(vocab)))
    tokenizer = ctc_tokenizer(vocab)
    assert len(tokenizer) == len(vocab)  # no token added on top
    assert encode(tokenizer, "the dog!") == [vocab[c] for c in "THE|DOG"]
    assert encode(tokenizer, "the zebra") [4] == tokenizer.unk_token_id
    assert unknown_characters(tokenizer, ["the zebra", "Zoo"]) == {"Z": 2, "B": 1, "R": 1}


def test_a_built_vocabulary_saves_as_the_reference_layout(tmp_path):
    tokenizer = ctc_tokenizer(build_vocabulary(["hi there"]))
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "vocab.json").read_text())
    assert saved == build_vocabulary(["hi there"])
    reloaded = Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    assert reloaded.decode(encode(reloaded, "hi there")) == "HI THERE"


def test_check_tokenizer_against_the_model():
    tokenizer = ctc_tokenizer(build_vocabulary(["abc"]))
    check_tokenizer(tokenizer, small_config("base", vocab_size=len(tokenizer)))
    with pytest.raises(ValueError, match="more than the model's vocab_size=5"):
        check_tokenizer(tokenizer, small_config("base", vocab_size=5))
    with pytest.raises(ValueError, match="CTC blank"):
        check_tokenizer(tokenizer, small_config("base", vocab_size=len(tokenizer), pad_token_id=3))
    with pytest.raises(ValueError, match="lacks '<unk>'"):
        ctc_tokenizer({"<pad>": 0, "|": 1, "A": 2})


def test_label_vocabulary_is_sorted():
    assert label_vocabulary(["yes", "no", "yes", "maybe"]) == {0: "maybe", 1: "no", 2: "yes"}
