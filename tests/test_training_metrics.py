"""wav2vec2.training.metrics: WER/CER against hand-counted edits, accuracy, greedy CTC decoding."""
import numpy as np
import pytest

pytest.importorskip("jiwer")

from conftest import small_config  # noqa: E402
from wav2vec2.training.metrics import (  # noqa: E402
    accuracy,
    cer,
    ctc_transcripts,
    evaluate_classification,
    evaluate_ctc,
    frame_lengths,
    wer,
)
from wav2vec2.training.vocabulary import build_vocabulary, ctc_tokenizer  # noqa: E402


def test_wer_counts_word_edits_over_reference_words():
    assert wer(["the cat sat"], ["the cat sit"]) == pytest.approx(1 / 3)  # one substitution
    assert wer(["the cat sat"], ["the sat"]) == pytest.approx(1 / 3)  # one deletion
    assert wer(["the cat sat"], ["the black cat sat down"]) == pytest.approx(2 / 3)  # two insertions
    # corpus level: (1 substitution + 1 deletion) / 6 reference words, not the mean of 0 and 1
    assert wer(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)
    assert wer(["a b"], [""]) == 1.0


def test_cer_counts_character_edits_spaces_included():
    assert cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the missing space is one deletion
    assert cer(["hello"], ["hello"]) == 0.0


def test_case_and_punctuation_are_not_errors():
    assert wer(["Hello, World!"], ["hello world"]) == 0.0
    assert cer(["Don't—stop."], ["DON'T STOP"]) == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="reference 1 is empty"):
        cer(["a", "?!"], ["a", "b"])


def test_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 2, 2, 2]) == 0.75
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])


def test_greedy_ctc_transcripts_merge_repeats_and_keep_blank_separated_letters():
    tokenizer = ctc_tokenizer(build_vocabulary(["hello world"]))
    v = tokenizer.get_vocab()
    frames = ["H", "H", "<pad>", "E", "L", "<pad>", "L", "O", "|", "W", "O", "R", "L", "D", "D", "<pad>"]
    logits = np.full((2, len(frames), len(v)), -5.0, dtype=np.float32)
    for t, token in enumerate(frames):
        logits[0, t, v[token]] = 5.0
        logits[1, t, v[token]] = 5.0
    assert ctc_transcripts(logits, [len(frames), 4], tokenizer) == ["HELLO WORLD", "HE"]


def test_evaluate_helpers_score_a_backends_logits():
    config = small_config("stable")
    tokenizer = ctc_tokenizer(build_vocabulary(["ab"]))
    v = tokenizer.get_vocab()
    batch = {"input_values": np.zeros((2, 400), np.float32), "attention_mask": np.ones((2, 400), np.int32)}
    batch["attention_mask"][1, 200:] = 0
    lengths = frame_lengths(config, batch)
    assert lengths.tolist() == [int(n) for n in (lengths[0], lengths[1])] and lengths[0] > lengths[1]

    def logits_fn(b):
        out = np.zeros((2, int(lengths[0]), len(v)))
        out[:, :, v["<pad>"]] = 1.0
        out[:, 0, v["A"]] = out[:, 1, v["B"]] = 2.0
        return out

    result = evaluate_ctc(logits_fn, [batch], [["ab", "a"]], config, tokenizer)
    assert result == {"wer": 0.5, "cer": pytest.approx(1 / 3), "examples": 2}
    scores = evaluate_classification(lambda b: np.array([[0.1, 0.9], [0.8, 0.2]]), [{"labels": np.array([1, 1])}])
    assert scores == {"accuracy": 0.5, "examples": 2}
