"""Wav2Vec2CTCTokenizer against the reference (transformers 4.57.6): encoding, CTC decoding, offsets, files."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wav2vec2 import Wav2Vec2CTCTokenizer

LETTERS = list("ETAOHLNS'")
STANDARD = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}
# Overlapping multi-letter tokens check that the longest match at the leftmost position wins.
MULTI = {**STANDARD, "AB": 14, "ABC": 15, "BC": 16, "B": 17, "C": 18}
# A community-style vocab: bracketed pad/unk, and no <s>, </s> (the tokenizer adds them with new ids).
BRACKETS = {"[PAD]": 0, "[UNK]": 1, "|": 2, **{c: 3 + i for i, c in enumerate(LETTERS)}}
# IPA: multi-character phones ("aː", "t͡ʃ") in a character tokenizer's vocabulary are matched whole and joined.
IPA = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "aː": 6, "ʃ": 7, "t͡ʃ": 8, "ə": 9, "n": 10, "t": 11}
NESTED = {"eng": STANDARD, "fra": {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "É": 5, "E": 6, "OU": 7, "T": 8}}

VOCABS = {
    "standard": (STANDARD, {}),
    "lower": (STANDARD, {"do_lower_case": True}),
    "multi": (MULTI, {}),
    "brackets": (BRACKETS, {"unk_token": "[UNK]", "pad_token": "[PAD]"}),
    "nested": (NESTED, {"target_lang": "fra"}),
    "delimiter": (STANDARD, {"replace_word_delimiter_char": "_", "clean_up_tokenization_spaces": True}),
    "ipa": (IPA, {}),
}

PIECES = LETTERS + list("abcelt BCÉ|\t!?.,x") + list(IPA) + [
    "  ", "<s>", "</s>", "<unk>", "<pad>", "AB", "ABC", "BC", "ab", "OU", "[UNK]", "[PAD]", " n't", "'s"
]
SETTINGS = ("do_lower_case", "replace_word_delimiter_char", "target_lang", "clean_up_tokenization_spaces", "pad_token", "unk_token")
texts = st.lists(st.sampled_from(PIECES), max_size=15).map("".join)


@pytest.fixture(scope="module")
def ref_cls():
    transformers = pytest.importorskip("transformers")
    return transformers.Wav2Vec2CTCTokenizer


@pytest.fixture(scope="module")
def pairs(ref_cls, tmp_path_factory):
    """name -> (ours, reference), both built from the same vocab.json and settings."""
    built = {}
    for name, (vocab, kwargs) in VOCABS.items():
        path = tmp_path_factory.mktemp(name) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        built[name] = (Wav2Vec2CTCTokenizer(path, **kwargs), ref_cls(str(path), **kwargs))
    return built


def offsets_equal(ours, ref):
    assert ours.text == ref.text
    assert ours.char_offsets == ref.char_offsets
    assert ours.word_offsets == ref.word_offsets


# ------------------------------------------------------------------------------------ encoding
@pytest.mark.parametrize("name", list(VOCABS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_encoding_matches_reference(pairs, name, text):
    ours, ref = pairs[name]
    assert ours.tokenize(text) == ref.tokenize(text)
    assert ours.encode(text) == ref.encode(text)
    assert ours(text)["input_ids"] == ref(text)["input_ids"]


def test_encoding_examples(pairs):
    ours, _ = pairs["standard"]
    assert ours.tokenize("HELLO  TEA") == list("HELLO||TEA")  # each space becomes "|"
    assert ours.encode("HEX") == [STANDARD["H"], STANDARD["E"], STANDARD["<unk>"]]
    lower, _ = pairs["lower"]
    assert lower.encode("hello") == ours.encode("HELLO")


def test_batched_call_matches_reference(pairs):
    ours, ref = pairs["standard"]
    batch = ["HELLO", "TO", "", "A  NOTE"]
    for kwargs in (
        {},
        {"padding": True},
        {"padding": "max_length", "max_length": 9},
        {"padding": True, "pad_to_multiple_of": 4},
        {"truncation": True, "max_length": 3},
        {"return_attention_mask": False},
    ):
        got, expected = ours(batch, **kwargs), ref(batch, **kwargs)
        assert dict(got) == dict(expected), kwargs
    got = ours(batch, padding=True, return_tensors="np")
    np.testing.assert_array_equal(got.input_ids, ref(batch, padding=True, return_tensors="np")["input_ids"])
    single = ours("HELLO", return_tensors="np")
    assert single.input_ids.shape == (1, 5)


def test_pad_matches_reference(pairs):
    ours, ref = pairs["brackets"]
    features = [{"input_ids": ours.encode(t)} for t in ("HELLO", "NO", "A")]
    for kwargs in ({}, {"return_tensors": "np"}, {"pad_to_multiple_of": 8, "return_tensors": "np"}):
        got, expected = ours.pad(features, **kwargs), ref.pad(features, **kwargs)
        for key in expected:
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]))


# ------------------------------------------------------------------------------------ decoding
def id_lists(tokenizer):
    # Ids over the whole vocabulary (blanks and specials included), plus ids it does not have.
    return st.lists(st.integers(0, len(tokenizer) + 1), max_size=30)


@pytest.mark.parametrize("name", list(VOCABS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decoding_matches_reference(pairs, name, data):
    ours, ref = pairs[name]
    ids = data.draw(id_lists(ours))
    group = data.draw(st.booleans())
    assert ours.decode(ids, group_tokens=group) == ref.decode(ids, group_tokens=group)
    assert ours.decode(ids, clean_up_tokenization_spaces=True) == ref.decode(ids, clean_up_tokenization_spaces=True)
    spaced = dict(spaces_between_special_tokens=True, group_tokens=group)
    assert ours.decode(ids, **spaced) == ref.decode(ids, **spaced)
    if ids:  # (the reference returns [] for offsets it was not asked for when there is nothing to decode)
        for chars, words in ((True, False), (False, True), (True, True)):
            offsets_equal(
                ours.decode(ids, output_char_offsets=chars, output_word_offsets=words, group_tokens=group),
                ref.decode(ids, output_char_offsets=chars, output_word_offsets=words, group_tokens=group),
            )


@pytest.mark.parametrize("name", ["standard", "brackets", "multi"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_skip_special_tokens_keeps_the_blank(pairs, name, data):
    """Oracle: the reference decoding the ids with the non-blank specials (and unknown ids) removed.

    The reference itself drops the blank too when skipping specials, which merges repeated letters.
    """
    ours, ref = pairs[name]
    ids = data.draw(id_lists(ours))
    removed = set(ref.all_special_ids) - {ref.pad_token_id}
    kept = [i for i in ids if i not in removed and i < len(ref)]
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(kept)
    got = ours.decode(ids, skip_special_tokens=True, output_char_offsets=True, output_word_offsets=True)
    if kept == ids and ids:
        offsets_equal(got, ref.decode(ids, output_char_offsets=True, output_word_offsets=True))
    # Offsets stay frames of the original sequence: every frame of a character's span is that
    # character, a skipped special or (for merged runs) nothing else.
    for offset in got.char_offsets:
        frames = {ours.convert_ids_to_tokens(ids[t]) for t in range(offset["start_offset"], offset["end_offset"])}
        frames -= set(ours.all_special_tokens) - {ours.pad_token}
        token = ours.word_delimiter_token if offset["char"] == ours.replace_word_delimiter_char else offset["char"]
        assert frames == {token}


def test_repeated_letters_survive(pairs):
    ours, ref = pairs["standard"]
    E, L, O, H, pad, bar = (STANDARD[c] for c in ("E", "L", "O", "H", "<pad>", "|"))
    ids = [H, H, E, pad, L, L, pad, L, O, O, bar, bar, H, pad, pad]
    assert ours.decode(ids) == ref.decode(ids) == "HELLO H"
    assert ours.decode(ids, skip_special_tokens=True) == "HELLO H"
    assert ref.decode(ids, skip_special_tokens=True) == "HELO H"  # the reference bug ours avoids


def test_offsets_example(pairs):
    ours, _ = pairs["standard"]
    E, T, A, pad, bar = (STANDARD[c] for c in ("E", "T", "A", "<pad>", "|"))
    out = ours.decode([bar, E, E, pad, E, bar, bar, T, A, bar], output_char_offsets=True, output_word_offsets=True)
    assert out.text == "EE TA"
    assert [(c["char"], c["start_offset"], c["end_offset"]) for c in out.char_offsets] == [
        (" ", 0, 1), ("E", 1, 3), ("E", 4, 5), (" ", 5, 7), ("T", 7, 8), ("A", 8, 9), (" ", 9, 10)
    ]
    assert out.word_offsets == [
        {"word": "EE", "start_offset": 1, "end_offset": 5}, {"word": "TA", "start_offset": 7, "end_offset": 9}
    ]
    assert out["text"] == out.text


def test_batch_decode_matches_reference(pairs, rng):
    ours, ref = pairs["lower"]
    ids = rng.integers(0, len(ours), size=(3, 25))
    assert ours.batch_decode(ids) == ref.batch_decode(ids)
    got = ours.batch_decode(ids, output_char_offsets=True, output_word_offsets=True)
    expected = ref.batch_decode(ids, output_char_offsets=True, output_word_offsets=True)
    offsets_equal(got, expected)
    torch = pytest.importorskip("torch")
    assert ours.batch_decode(torch.from_numpy(ids)) == ref.batch_decode(ids)
    assert ours.decode(torch.from_numpy(ids[0])) == ref.decode(ids[0])
    assert ours.decode(torch.tensor(STANDARD["E"])) == ours.decode(np.int64(STANDARD["E"])) == "e"


def test_vocabulary_accessors_match_reference(pairs):
    for name, (ours, ref) in pairs.items():
        assert len(ours) == len(ref), name
        assert ours.get_vocab() == ref.get_vocab(), name
        assert ours.vocab_size == ref.vocab_size, name
        for attr in ("pad_token_id", "unk_token_id", "bos_token_id", "eos_token_id", "word_delimiter_token_id"):
            assert getattr(ours, attr) == getattr(ref, attr), (name, attr)
        assert sorted(ours.all_special_ids) == sorted(ref.all_special_ids), name
        tokens = list(ref.get_vocab()) + ["nope"]
        assert ours.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens), name
        ids = list(range(len(ref) + 2))
        assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids), name
        skipped = ref.convert_ids_to_tokens(ids, skip_special_tokens=True)
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == skipped, name


def test_add_tokens_matches_reference(ref_cls, tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(STANDARD))
    ours, ref = Wav2Vec2CTCTokenizer(tmp_path / "vocab.json"), ref_cls(str(tmp_path / "vocab.json"))
    assert ours.add_tokens(["XY", "E"]) == ref.add_tokens(["XY", "E"]) == 1
    assert ours.encode("AXY XYE") == ref.encode("AXY XYE")
    assert ours.get_vocab() == ref.get_vocab()


# ------------------------------------------------------------------------------------ multilingual
def test_set_target_lang_matches_reference(pairs, ref_cls, tmp_path):
    # Compared with a reference built for each language: the reference's own set_target_lang keeps
    # the previous language's multi-letter tokens and goes on matching them (fra's "OU" in eng).
    (tmp_path / "vocab.json").write_text(json.dumps(NESTED, ensure_ascii=False), encoding="utf-8")
    ours = Wav2Vec2CTCTokenizer(tmp_path / "vocab.json", target_lang="fra")
    for lang in ("eng", "fra", "eng"):
        ours.set_target_lang(lang)
        ref = ref_cls(str(tmp_path / "vocab.json"), target_lang=lang)
        assert ours.target_lang == lang
        assert ours.get_vocab() == ref.get_vocab()
        assert ours.encode("OU ÉTÉ HOT") == ref.encode("OU ÉTÉ HOT")
        assert ours.decode(list(range(9))) == ref.decode(list(range(9)))


def test_nested_vocab_errors(tmp_path, pairs):
    (tmp_path / "vocab.json").write_text(json.dumps(NESTED))
    with pytest.raises(ValueError, match="target_lang=.*eng, fra"):
        Wav2Vec2CTCTokenizer(tmp_path / "vocab.json")
    with pytest.raises(ValueError, match="'deu' is not in the vocabulary"):
        Wav2Vec2CTCTokenizer(tmp_path / "vocab.json", target_lang="deu")
    with pytest.raises(ValueError, match="not multilingual"):
        pairs["standard"][0].set_target_lang("eng")
    (tmp_path / "flat.json").write_text(json.dumps(STANDARD))
    with pytest.raises(ValueError, match="target_lang='eng' needs a multilingual vocabulary"):
        Wav2Vec2CTCTokenizer(tmp_path / "flat.json", target_lang="eng")


# ------------------------------------------------------------------------------------ files
SAMPLE_TEXTS = ["HELLO THE NOTE", "ab ABC BC", "<s>TO</s> <unk>", "OU ÉTÉ"]


def assert_same_behaviour(ours, ref, rng):
    assert ours.get_vocab() == ref.get_vocab()
    for text in SAMPLE_TEXTS:
        assert ours.encode(text) == ref.encode(text), text
    ids = rng.integers(0, len(ref) + 1, size=40).tolist()
    assert ours.decode(ids) == ref.decode(ids)


@pytest.mark.parametrize("name", list(VOCABS))
def test_reference_files_load_in_ours(pairs, name, tmp_path, rng):
    _, ref = pairs[name]
    ref.save_pretrained(tmp_path)
    ours = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert_same_behaviour(ours, ref, rng)
    for attr in SETTINGS:
        assert getattr(ours, attr) == getattr(ref, attr), attr


@pytest.mark.parametrize("name", list(VOCABS))
def test_our_files_load_in_reference(pairs, ref_cls, name, tmp_path, rng):
    ours, _ = pairs[name]
    ours.save_pretrained(tmp_path)
    ref = ref_cls.from_pretrained(tmp_path)
    assert_same_behaviour(ours, ref, rng)
    for attr in SETTINGS:
        assert getattr(ours, attr) == getattr(ref, attr), attr
    # And what the reference writes back from them is what ours wrote.
    ref.save_pretrained(tmp_path / "back")
    assert json.loads((tmp_path / "vocab.json").read_text()) == json.loads((tmp_path / "back" / "vocab.json").read_text())
    # (The reference writes special tokens back as {"content": ...} dicts: compare their text.)
    ours_map = json.loads((tmp_path / "special_tokens_map.json").read_text())
    ref_map = json.loads((tmp_path / "back" / "special_tokens_map.json").read_text())
    assert ours_map == {k: v["content"] if isinstance(v, dict) else v for k, v in ref_map.items()}
    ours_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    ref_config = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    assert ours_config == ref_config


def test_added_tokens_survive_both_ways(ref_cls, tmp_path, rng):
    (tmp_path / "vocab.json").write_text(json.dumps(BRACKETS))
    ref = ref_cls(str(tmp_path / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]")
    ref.add_tokens(["XY"])
    ref.save_pretrained(tmp_path / "ref")
    ours = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path / "ref")
    assert ours.encode("AXYB") == ref.encode("AXYB")
    ours.save_pretrained(tmp_path / "ours")
    assert_same_behaviour(ours, ref_cls.from_pretrained(tmp_path / "ours"), rng)


def test_old_style_files_without_tokenizer_config(tmp_path, ref_cls):
    (tmp_path / "vocab.json").write_text(json.dumps(BRACKETS))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]", "pad_token": {"content": "[PAD]"}}))
    ours = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert ours.pad_token == "[PAD]" and ours.pad_token_id == 0 and ours.unk_token_id == 1
    assert ours.encode("A Q") == ref_cls.from_pretrained(tmp_path).encode("A Q")


def test_from_pretrained_overrides(pairs, tmp_path):
    pairs["nested"][0].save_pretrained(tmp_path)
    assert Wav2Vec2CTCTokenizer.from_pretrained(tmp_path).target_lang == "fra"
    assert Wav2Vec2CTCTokenizer.from_pretrained(tmp_path, target_lang="eng").target_lang == "eng"


# ------------------------------------------------------------------------------------ errors
def test_bad_vocab_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="vocab.json: the vocabulary must be a JSON object"):
        Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({"A": "one"}))
    with pytest.raises(ValueError, match="'A' must map to an integer id"):
        Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)


def test_bad_arguments(pairs):
    ours, _ = pairs["standard"]
    with pytest.raises(ValueError, match="text must be a string"):
        ours(["A", 3])
    with pytest.raises(ValueError, match="text must be a string"):
        ours.tokenize(b"bytes")
    with pytest.raises(ValueError, match="1-D sequence of integer token ids"):
        ours.decode([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="1-D sequence of integer token ids"):
        ours.decode([0.5, 1.5])
    with pytest.raises(ValueError, match="needs 'input_ids'"):
        ours.pad({"labels": [[1]]})
    with pytest.raises(ValueError, match="different lengths.*padding=True"):
        ours(["A", "AB"], return_tensors="np")


def test_ipa_tokens_are_joined_as_in_the_reference(pairs):
    ours, ref = pairs["ipa"]
    ids = [IPA[t] for t in ("t͡ʃ", "t͡ʃ", "aː", "<pad>", "aː", "|", "n", "ə", "t")]
    assert ours.decode(ids) == ref.decode(ids) == "t͡ʃaːaː nət"
    assert ours.decode(ids, spaces_between_special_tokens=True) == ref.decode(ids, spaces_between_special_tokens=True)
    assert ours.decode(ids, spaces_between_special_tokens=True) == "t͡ʃ aː aː   n ə t"  # every token, despite the name
    assert ours.batch_decode([ids], spaces_between_special_tokens=True) == [ours.decode(ids, spaces_between_special_tokens=True)]
    # the reference's quirk, kept for matching labels: a multi-character token swallows the spaces beside it
    assert ours.tokenize("t͡ʃaː nət") == ref.tokenize("t͡ʃaː nət") == ["t͡ʃ", "aː", "n", "ə", "t"]


# ------------------------------------------------------------------ no word delimiter
SPACED = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, " ": 4, "a": 5, "b": 6, "|": 7}


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, len(SPACED) + 1), max_size=30))
def test_decoding_without_a_word_delimiter_matches_reference(ref_cls, tmp_path_factory, ids):
    path = tmp_path_factory.mktemp("spaced") / "vocab.json"
    path.write_text(json.dumps(SPACED))
    ours, ref = Wav2Vec2CTCTokenizer(path, word_delimiter_token=None), ref_cls(str(path), word_delimiter_token=None)
    assert ours.word_delimiter_token_id is None is ref.word_delimiter_token_id
    assert ours.decode(ids) == ref.decode(ids)
    if ids:
        offsets_equal(ours.decode(ids, output_char_offsets=True, output_word_offsets=True),
                      ref.decode(ids, output_char_offsets=True, output_word_offsets=True))


def test_encoding_without_a_word_delimiter_keeps_spaces(ref_cls, tmp_path):
    """A deliberate difference (docs/differences.md): the reference writes the string "None" for each space."""
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(SPACED))
    ours, ref = Wav2Vec2CTCTokenizer(path, word_delimiter_token=None), ref_cls(str(path), word_delimiter_token=None)
    assert ours.tokenize("a b") == ["a", " ", "b"] and ours.encode("a b") == [5, 4, 6]
    assert ref.tokenize("a b") == ["a", "N", "o", "n", "e", "b"]


# ------------------------------------------------------------------ phoneme tokenizer
PHONEMES = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "h": 5, "ə": 6, "l": 7, "oʊ": 8, "w": 9, "ɜː": 10,
            "d": 11, "aɪ": 12, "t͡ʃ": 13}
PHONEME_SETTINGS = {"default": {}, "word_delimiter": {"word_delimiter_token": "|"}}
PHONEME_PIECES = [*PHONEMES, " ", "  ", "x", "hə", "\t", " | "]


@pytest.fixture(scope="module")
def phoneme_pairs(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from wav2vec2 import Wav2Vec2PhonemeCTCTokenizer

    path = tmp_path_factory.mktemp("phonemes") / "vocab.json"
    path.write_text(json.dumps(PHONEMES, ensure_ascii=False), encoding="utf-8")
    return {
        name: (Wav2Vec2PhonemeCTCTokenizer(path, do_phonemize=False, **kwargs),
               transformers.Wav2Vec2PhonemeCTCTokenizer(str(path), do_phonemize=False, **kwargs))
        for name, kwargs in PHONEME_SETTINGS.items()
    }


@pytest.mark.parametrize("name", list(PHONEME_SETTINGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(PHONEME_PIECES), max_size=12).map("".join))
def test_phoneme_encoding_matches_reference(phoneme_pairs, name, text):
    ours, ref = phoneme_pairs[name]
    assert ours.tokenize(text) == ref.tokenize(text)
    assert ours(text)["input_ids"] == ref(text)["input_ids"]


@pytest.mark.parametrize("name", list(PHONEME_SETTINGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_phoneme_decoding_matches_reference(phoneme_pairs, name, data):
    ours, ref = phoneme_pairs[name]
    ids = data.draw(st.lists(st.integers(0, len(PHONEMES) + 1), min_size=1, max_size=30))  # the reference fails on []
    for kwargs in ({}, {"group_tokens": False}, {"filter_word_delimiter_token": False}):
        assert ours.decode(ids, **kwargs) == ref.decode(ids, **kwargs), kwargs
        got, expected = ours.decode(ids, output_char_offsets=True, **kwargs), ref.decode(ids, output_char_offsets=True, **kwargs)
        assert (got.text, got.char_offsets) == (expected.text, expected.char_offsets)
    # skip_special_tokens keeps the blank until repeats are merged (see docs/differences.md)
    removed = set(ref.all_special_ids) - {ref.pad_token_id}
    kept = [i for i in ids if i not in removed and i < len(ref)]
    assert ours.decode(ids, skip_special_tokens=True) == (ref.decode(kept) if kept else "")
    assert ours.batch_decode([ids, ids[::-1]]) == ref.batch_decode([ids, ids[::-1]])


def test_phoneme_example(phoneme_pairs):
    ours, _ = phoneme_pairs["word_delimiter"]
    ids = [5, 5, 6, 0, 7, 8, 4, 4, 9, 10, 7, 11, 0]
    assert ours.decode(ids) == "h ə l oʊ w ɜː l d"
    assert ours.decode([]) == "" and ours.decode([0, 0]) == ""
    assert ours.decode(ids, filter_word_delimiter_token=False) == "h ə l oʊ | w ɜː l d"
    out = ours.batch_decode([ids], output_char_offsets=True)
    assert out.char_offsets[0][:2] == [{"char": "h", "start_offset": 0, "end_offset": 2},
                                       {"char": "ə", "start_offset": 2, "end_offset": 3}]
    assert ours.encode("h ə <s> l") == [5, 6, 1, 7]


def test_phoneme_files_load_both_ways(phoneme_pairs, tmp_path):
    transformers = pytest.importorskip("transformers")
    from wav2vec2 import Wav2Vec2PhonemeCTCTokenizer, Wav2Vec2Processor

    ours, ref = phoneme_pairs["word_delimiter"]
    ids = [5, 6, 4, 9, 10, 0, 12, 13]
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "ours")
    assert type(back).__name__ == "Wav2Vec2PhonemeCTCTokenizer"
    assert back.decode(ids) == ref.decode(ids) and back.word_delimiter_token == "|" and not back.do_phonemize
    ref.save_pretrained(tmp_path / "ref")
    loaded = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path / "ref")  # the saved class decides
    assert isinstance(loaded, Wav2Vec2PhonemeCTCTokenizer)
    assert loaded.decode(ids) == ref.decode(ids) and loaded.encode("h ə | w") == ref.encode("h ə | w")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "ref")
    assert isinstance(Wav2Vec2Processor.from_pretrained(tmp_path / "ref").tokenizer, Wav2Vec2PhonemeCTCTokenizer)


def test_phonemizing_needs_the_phonemizer_package_only_to_encode(tmp_path, monkeypatch):
    import sys
    import types

    from wav2vec2 import Wav2Vec2PhonemeCTCTokenizer

    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(PHONEMES, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2PhonemeCTCTokenizer(path, word_delimiter_token="|")  # do_phonemize=True by default
    assert tokenizer.decode([5, 6, 4, 7]) == "h ə l"
    monkeypatch.setitem(sys.modules, "phonemizer", None)
    with pytest.raises(ImportError, match="do_phonemize=False"):
        tokenizer.encode("hello")

    calls = []

    class Backend:  # phonemizer's espeak backend, as far as the tokenizer uses it
        def __init__(self, lang, language_switch):
            calls.append(("backend", lang, language_switch))

        def phonemize(self, texts, separator):
            calls.append(("phonemize", texts, separator))
            return [" h ə l oʊ | w ɜː l d | "]

    fake = types.ModuleType("phonemizer")
    fake.backend = types.SimpleNamespace(BACKENDS={"espeak": Backend})
    fake.separator = types.SimpleNamespace(Separator=lambda **parts: parts)
    monkeypatch.setitem(sys.modules, "phonemizer", fake)
    monkeypatch.setitem(sys.modules, "phonemizer.backend", fake.backend)
    monkeypatch.setitem(sys.modules, "phonemizer.separator", fake.separator)
    assert tokenizer.encode("  Hello World ") == [5, 6, 7, 8, 4, 9, 10, 7, 11, 4]
    assert calls == [("backend", "en-us", "remove-flags"),
                     ("phonemize", ["hello world"], {"phone": " ", "word": "| ", "syllable": ""})]
