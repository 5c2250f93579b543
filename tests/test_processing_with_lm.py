"""Wav2Vec2ProcessorWithLM against the reference (transformers.Wav2Vec2ProcessorWithLM over
pyctcdecode) on the same logits and the same tiny KenLM model, written here as ARPA text. The
decoder itself is compared with pyctcdecode over its options in test_lm_decoder.py."""
import json
import multiprocessing
import os
import types

import numpy as np
import pytest

pytest.importorskip("pyctcdecode")
pytest.importorskip("kenlm")

from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2.processing import Wav2Vec2Processor
from wav2vec2.processing_with_lm import Wav2Vec2ProcessorWithLM, decoder_labels
from wav2vec2.tokenization import Wav2Vec2CTCTokenizer

LETTERS = "abcdefgh"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}
WORDS = ["bad", "cab", "face", "bead", "dead", "fade", "head", "add", "bee", "egg"]

# A bigram model over WORDS: log10 probabilities, back-off weights on the unigrams.
ARPA = "\n".join(
    [
        "\\data\\",
        f"ngram 1={len(WORDS) + 3}",
        "ngram 2=6",
        "",
        "\\1-grams:",
        "-1.5\t<unk>\t0",
        "0\t<s>\t-0.3",
        "-1.0\t</s>\t0",
        *[f"{-0.8 - 0.1 * i:.2f}\t{w}\t-0.25" for i, w in enumerate(WORDS)],
        "",
        "\\2-grams:",
        "-0.2\t<s> bad",
        "-0.3\tbad cab",
        "-0.3\tcab face",
        "-0.4\tface </s>",
        "-0.2\tdead head",
        "-0.5\thead </s>",
        "",
        "\\end\\",
        "",
    ]
)
SENTENCES = ["bad cab face", "dead head", "bee fade egg add", "bad cab"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm")
    arpa = directory / "lm.arpa"
    arpa.write_text(ARPA)
    (directory / "vocab.json").write_text(json.dumps(VOCAB))
    return str(directory)


@pytest.fixture(scope="module")
def ours(files):
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(files)
    return Wav2Vec2ProcessorWithLM.from_kenlm(Wav2Vec2FeatureExtractor(), tokenizer, os.path.join(files, "lm.arpa"))


@pytest.fixture(scope="module")
def reference(files):
    transformers = pytest.importorskip("transformers")
    from pyctcdecode import build_ctcdecoder

    tokenizer = transformers.Wav2Vec2CTCTokenizer(os.path.join(files, "vocab.json"))
    labels = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    decoder = build_ctcdecoder(labels, kenlm_model_path=os.path.join(files, "lm.arpa"))
    return transformers.Wav2Vec2ProcessorWithLM(transformers.Wav2Vec2FeatureExtractor(), tokenizer, decoder)


# The reference's batch_decode forks a new pool per call unless given one, and forking a process
# that runs JAX or TensorFlow threads (other test files import them) can deadlock. pyctcdecode
# decodes in-process when handed a pool with a spawn context, so the oracle gets this stand-in.
IN_PROCESS = types.SimpleNamespace(_ctx=multiprocessing.get_context("spawn"))


def reference_batch_decode(processor, logits, **kwargs):
    return processor.batch_decode(logits, pool=IN_PROCESS, **kwargs)


def noisy_logits(sentence: str, rng, noise: float = 2.5, frames_per_char: int = 3) -> np.ndarray:
    """(frames, vocab) logits that spell ``sentence`` with blanks between letters, plus noise:
    enough noise that the greedy path errs and the language model has something to fix."""
    path = []
    for char in sentence.replace(" ", "|"):
        path += [VOCAB[char]] * frames_per_char + [VOCAB["<pad>"]]
    logits = rng.normal(0.0, noise, size=(len(path), len(VOCAB))).astype(np.float32)
    logits[np.arange(len(path)), path] += 4.0
    logits[:, 1:4] -= 8.0  # <s>, </s> and <unk> are rare in a real model's output
    return logits


def padded_batch(rng):
    """(batch, frames, vocab) logits of SENTENCES, shorter ones padded with the -100 marker."""
    utterances = [noisy_logits(s, rng) for s in SENTENCES]
    batch = np.full((len(utterances), max(len(u) for u in utterances), len(VOCAB)), -100.0, np.float32)
    for row, u in enumerate(utterances):
        batch[row, : len(u)] = u
    return batch


def flat(values):
    """Scores of any nesting (utterance, then n-best) as one flat array."""
    if isinstance(values, (list, tuple)):
        return np.concatenate([flat(v) for v in values]) if values else np.zeros(0)
    return np.asarray([values], dtype=float)


def assert_same_output(ours_out, ref_out, with_offsets=True):
    assert ours_out.text == ref_out.text
    np.testing.assert_allclose(flat(ours_out.logit_score), flat(ref_out.logit_score), rtol=1e-6)
    np.testing.assert_allclose(flat(ours_out.lm_score), flat(ref_out.lm_score), rtol=1e-6)
    if with_offsets:
        assert ours_out.word_offsets == ref_out.word_offsets


def test_labels_follow_the_vocabulary_ids(files):
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(files)
    assert decoder_labels(tokenizer) == list(VOCAB)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_decode_matches_reference(ours, reference, seed):
    logits = padded_batch(np.random.default_rng(seed))
    out = ours.batch_decode(logits, output_word_offsets=True)
    assert_same_output(out, reference_batch_decode(reference, logits, output_word_offsets=True))
    assert all(text != "" for text in out.text)


def test_decode_options_match_reference(ours, reference):
    logits = noisy_logits(SENTENCES[2], np.random.default_rng(5), noise=3.0)
    options = dict(beam_width=8, beam_prune_logp=-8.0, token_min_logp=-4.0, hotwords=["cab"], hotword_weight=5.0)
    for n_best in (1, 3):
        out = ours.decode(logits, output_word_offsets=True, n_best=n_best, **options)
        assert_same_output(out, reference.decode(logits, output_word_offsets=True, n_best=n_best, **options))
    for n_best in (1, 2):
        batch = padded_batch(np.random.default_rng(6))
        out = ours.batch_decode(batch, output_word_offsets=True, n_best=n_best, **options)
        assert_same_output(out, reference_batch_decode(reference, batch, output_word_offsets=True, n_best=n_best, **options))


def test_logits_keep_their_dtype_and_padding_rows_go_as_in_the_reference(ours, reference):
    """float64 logits are not rounded to float32 first; a frame holding -100 anywhere is padding."""
    batch = padded_batch(np.random.default_rng(8)).astype(np.float64)
    batch[0, 2, 5] = -100.0
    out = ours.batch_decode(batch, output_word_offsets=True)
    assert_same_output(out, reference_batch_decode(reference, batch, output_word_offsets=True))
    assert_same_output(ours.decode(batch[1], n_best=2), reference.decode(batch[1], n_best=2), with_offsets=False)


def test_thread_pool_decodes_as_in_process(ours):
    from multiprocessing.pool import ThreadPool

    logits = padded_batch(np.random.default_rng(4))
    with ThreadPool(2) as pool:
        assert_same_output(ours.batch_decode(logits, pool=pool, output_word_offsets=True),
                           ours.batch_decode(logits, output_word_offsets=True))


def test_lm_weights_change_the_result_like_the_reference(ours, reference):
    logits = padded_batch(np.random.default_rng(3))
    try:
        for alpha, beta in [(0.0, 0.0), (2.0, 3.0)]:
            out = ours.batch_decode(logits, alpha=alpha, beta=beta)
            assert_same_output(out, reference_batch_decode(reference, logits, alpha=alpha, beta=beta), with_offsets=False)
            assert ours.language_model.alpha == alpha
    finally:
        ours.batch_decode(logits[:1], alpha=0.5, beta=1.5)  # pyctcdecode's defaults, for the other tests
        reference_batch_decode(reference, logits[:1], alpha=0.5, beta=1.5)


# Forking a process that has JAX or TensorFlow threads running can deadlock, and other test files
# import them, so the pools run in a fresh interpreter that imports neither.
POOL_SCRIPT = """
import json, multiprocessing, sys
import numpy as np
from wav2vec2.processing_with_lm import Wav2Vec2ProcessorWithLM

processor = Wav2Vec2ProcessorWithLM.from_pretrained(sys.argv[1])
logits = np.load(sys.argv[2])
with multiprocessing.get_context("fork").Pool(2) as pool:
    user_pool = processor.batch_decode(logits, pool=pool, output_word_offsets=True)
first = processor.batch_decode(logits, num_processes=2, output_word_offsets=True)
kept = processor._pool
second = processor.batch_decode(logits, num_processes=2, output_word_offsets=True)
same_pool = kept is not None and processor._pool is kept
processor.close()
print(json.dumps({"outputs": [vars(o) for o in (user_pool, first, second)],
                  "same_pool": same_pool, "closed": processor._pool is None}))
"""


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="pyctcdecode pools need fork")
def test_user_pool_and_kept_pool(ours, tmp_path):
    import subprocess
    import sys

    from wav2vec2.processing_with_lm import Wav2Vec2DecoderWithLMOutput

    logits = padded_batch(np.random.default_rng(4))
    expected = ours.batch_decode(logits, output_word_offsets=True)  # in-process, checked against the reference above
    ours.save_pretrained(tmp_path / "processor")
    np.save(tmp_path / "logits.npy", logits)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", POOL_SCRIPT, str(tmp_path / "processor"), str(tmp_path / "logits.npy")],
        capture_output=True, text=True, cwd=root, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same_pool"] and result["closed"]  # one kept pool served both calls
    for output in result["outputs"]:
        output["word_offsets"] = [[dict(w) for w in words] for words in output["word_offsets"]]
        assert_same_output(Wav2Vec2DecoderWithLMOutput(**output), expected)


def test_files_load_in_the_reference_and_back(ours, reference, tmp_path):
    transformers = pytest.importorskip("transformers")
    logits = padded_batch(np.random.default_rng(7))
    expected = reference_batch_decode(reference, logits, output_word_offsets=True)

    ours.save_pretrained(tmp_path / "ours")
    assert sorted(os.listdir(tmp_path / "ours" / "language_model")) == ["attrs.json", "lm.arpa", "unigrams.txt"]
    loaded_by_reference = transformers.Wav2Vec2ProcessorWithLM.from_pretrained(str(tmp_path / "ours"))
    assert_same_output(reference_batch_decode(loaded_by_reference, logits, output_word_offsets=True), expected)

    reference.save_pretrained(str(tmp_path / "reference"))
    loaded = Wav2Vec2ProcessorWithLM.from_pretrained(str(tmp_path / "reference"))
    assert_same_output(loaded.batch_decode(logits, output_word_offsets=True), expected)
    assert loaded.feature_extractor.sampling_rate == 16000


def test_bad_input_is_a_clear_error(ours, files, tmp_path):
    with pytest.raises(ValueError, match="shape"):
        ours.decode(np.zeros((5, len(VOCAB) + 1), np.float32))
    with pytest.raises(ValueError, match="n_best"):
        ours.decode(np.zeros((5, len(VOCAB)), np.float32), n_best=0)
    with pytest.raises(ValueError, match="no such KenLM"):
        Wav2Vec2ProcessorWithLM.from_kenlm(ours.feature_extractor, ours.tokenizer, tmp_path / "none.arpa")
    Wav2Vec2Processor(ours.feature_extractor, ours.tokenizer).save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no language model"):
        Wav2Vec2ProcessorWithLM.from_pretrained(str(tmp_path / "plain"))
    short = Wav2Vec2CTCTokenizer(vocab={k: v for k, v in VOCAB.items() if k != "h"} | {"x": 12})
    with pytest.raises(ValueError, match="alphabet"):
        Wav2Vec2ProcessorWithLM(ours.feature_extractor, short, ours.decoder)
    with pytest.raises(ValueError, match="BeamSearchDecoder"):  # e.g. a pyctcdecode decoder
        Wav2Vec2ProcessorWithLM(ours.feature_extractor, ours.tokenizer, object())
    with pytest.raises(ValueError, match="score_boundary"):
        ours.decode(np.zeros((5, len(VOCAB)), np.float32), lm_score_boundary="yes")
