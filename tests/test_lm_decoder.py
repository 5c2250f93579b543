"""wav2vec2.lm's beam search against the reference decoder (pyctcdecode, the oracle) on the same
logits and the same KenLM model (an ARPA file written here): every beam's text, word frames and
scores, over the option space, in every kind of step (the compiled kernel when numba is
installed, Python and NumPy), and the files both ways."""
import json
import logging
import multiprocessing.pool
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("kenlm")
pyctcdecode = pytest.importorskip("pyctcdecode")

from wav2vec2.lm import BeamSearchDecoder, LanguageModel, build_alphabet, load_decoder, save_decoder  # noqa: E402
from wav2vec2.lm import search  # noqa: E402
from wav2vec2.lm.alphabet import spellings_are_unique  # noqa: E402
from wav2vec2.lm.language_model import CharTrie, Hotwords  # noqa: E402

logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # its notes on small vocabularies

LETTERS = "abcdefgh"
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *LETTERS]
# Long words too: prefixes past six characters are scored by length.
WORDS = ["bad", "cab", "face", "bead", "dead", "fade", "head", "add", "bee", "egg", "beachhead", "deadhead"]
SENTENCES = ["bad cab face", "dead head", "bee fade egg add", "beachhead bad", "deadhead egg cab"]


def bigram_arpa(words) -> str:
    """A bigram model over ``words`` (log10 probabilities, back-off weights on the unigrams)."""
    known = {"<s>", "</s>", *words}
    bigrams = [line for line in ["-0.2\t<s> bad", "-0.3\tbad cab", "-0.3\tcab face", "-0.4\tface </s>",
                                 "-0.2\tdead head", "-0.5\thead </s>", "-0.3\tbeachhead bad", "-0.2\tab cab"]
               if set(line.split("\t")[1].split()) <= known]
    return "\n".join([
        "\\data\\", f"ngram 1={len(words) + 3}", f"ngram 2={len(bigrams)}", "", "\\1-grams:",
        "-1.5\t<unk>\t0", "0\t<s>\t-0.3", "-1.0\t</s>",
        *[f"{-0.8 - 0.1 * i:.2f}\t{w}\t-0.25" for i, w in enumerate(words)],
        "", "\\2-grams:", *bigrams, "", "\\end\\", "",
    ])


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    path.write_text(bigram_arpa(WORDS))
    return str(path)


STEPS = ["compiled", "fallback"]


@pytest.fixture(params=STEPS)
def steps(request, monkeypatch):
    """Each test with this fixture runs with the compiled kernel and with the Python/NumPy steps."""
    if request.param == "compiled" and search.kernel is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(search, "COMPILED", request.param == "compiled")
    return request.param


def decoders(kenlm_path, vocab=VOCAB, unigrams=None, **weights):
    """(ours, reference) for the same vocabulary, KenLM file, unigrams and weights."""
    reference = pyctcdecode.build_ctcdecoder(
        vocab, kenlm_path, unigrams=unigrams, **weights,
    )
    attributes = {("score_boundary" if k == "lm_score_boundary" else k): v for k, v in weights.items()}
    ours = BeamSearchDecoder(build_alphabet(vocab), LanguageModel.from_file(kenlm_path, unigrams, **attributes))
    assert ours.labels == reference._alphabet.labels
    return ours, reference


def noisy_logits(sentence, rng, noise=2.0, peak=4.0, vocab=VOCAB, dtype=np.float32):
    """(frames, vocab) logits spelling ``sentence`` (1-3 frames a letter, blanks between, "|" for
    spaces) with Gaussian noise on every logit: enough that the language model has work to do."""
    path = []
    for char in sentence.replace(" ", "|"):
        path += [vocab.index(char)] * int(rng.integers(1, 4)) + [0] * int(rng.integers(0, 2))
    logits = rng.normal(0.0, noise, size=(len(path), len(vocab)))
    logits[np.arange(len(path)), path] += peak
    return logits.astype(dtype)


def reference_beams(reference, logits, **options):
    return [(text, frames, logit, lm) for text, _, frames, logit, lm in reference.decode_beams(logits, **options)]


def our_beams(beams):
    return [(b.text, b.word_frames, b.logit_score, b.lm_score) for b in beams]


def assert_same_beams(ours, reference):
    assert [b[:2] for b in ours] == [b[:2] for b in reference]  # texts and word frames, every beam
    np.testing.assert_allclose([b[2:] for b in ours], [b[2:] for b in reference], rtol=1e-9, atol=1e-9)


def random_options(rng):
    hotwords = [None, ["cab"], ["he", "fad egg"], ["deadhead", "zzz"]][int(rng.integers(4))]
    return dict(
        beam_width=int(rng.choice([1, 4, 16, 100])), beam_prune_logp=float(rng.choice([-10.0, -4.0, -25.0])),
        token_min_logp=float(rng.choice([-5.0, -2.5, -9.0])), prune_history=bool(rng.integers(2)),
        hotwords=hotwords, hotword_weight=float(rng.choice([10.0, 2.5, -3.0])),
    )


@pytest.mark.parametrize("seed", range(16))
def test_beams_match_the_reference_over_the_options(arpa, seed, steps):
    rng = np.random.default_rng(seed)
    weights = dict(alpha=float(rng.choice([0.5, 0.0, 2.0])), beta=float(rng.choice([1.5, 0.0, -1.0])),
                   unk_score_offset=float(rng.choice([-10.0, -3.0])), lm_score_boundary=bool(rng.integers(2)))
    ours, reference = decoders(arpa, **weights)
    for sentence in SENTENCES[seed % 3:][:2]:
        logits = noisy_logits(sentence, rng, noise=float(rng.choice([1.0, 2.0, 3.0])))
        options = random_options(rng)
        assert_same_beams(our_beams(ours.decode_beams(logits, **options)), reference_beams(reference, logits, **options))


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # the oracle, 0 frames
@pytest.mark.parametrize("numpy_min_pairs", [None, 0, 10**9], ids=["compiled", "numpy-steps", "python-steps"])
def test_a_batch_is_decoded_as_each_utterance_alone(arpa, monkeypatch, numpy_min_pairs):
    """Utterances of different lengths decode together, by the compiled kernel (with tables that
    start tiny, so that they grow), or every frame by NumPy, or every one by Python."""
    if numpy_min_pairs is None:
        if search.kernel is None:
            pytest.skip("numba is not installed")
        monkeypatch.setattr(search.kernel, "INITIAL_SIZE", 4)
    else:
        monkeypatch.setattr(search, "COMPILED", False)
    ours, reference = decoders(arpa)
    rng = np.random.default_rng(7)
    batch = [noisy_logits(s, rng, noise=n) for s, n in zip(SENTENCES, [0.5, 1.5, 2.5, 2.0, 3.0])] + [
        np.zeros((0, len(VOCAB)), np.float32)]
    monkeypatch.setattr(search, "NUMPY_MIN_PAIRS", numpy_min_pairs or 0)
    for options in [dict(), dict(beam_width=8, prune_history=True, hotwords=["egg", "bea"], token_min_logp=-7.0)]:
        beams = ours.decode_beams_batch(batch, **options)
        for logits, utterance_beams in zip(batch, beams):
            assert_same_beams(our_beams(utterance_beams), reference_beams(reference, logits, **options))


def test_probabilities_and_dtypes_keep_the_reference_arithmetic(arpa, steps):
    """Rows that sum to 1 are probabilities (their dtype is kept: float32 sums stay float32);
    logits of any float dtype go through a float64 log-softmax."""
    ours, reference = decoders(arpa)
    rng = np.random.default_rng(3)
    logits = noisy_logits(SENTENCES[0], rng, noise=2.0)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # Dyadic probabilities: float32 rows that sum to exactly 1.
    dyadic = np.full(logits.shape, 2.0 ** -6, np.float32)
    dyadic[np.arange(len(logits)), logits.argmax(axis=1)] += 1 - dyadic.sum(axis=1)
    for x in [logits.astype(np.float64), logits.astype(np.float16), probabilities.astype(np.float64), dyadic]:
        assert_same_beams(our_beams(ours.decode_beams(x, beam_width=20)), reference_beams(reference, x, beam_width=20))
    assert ours.decode_beams(dyadic)[0].lm_score == float(np.float32(ours.decode_beams(dyadic)[0].lm_score))


def test_unigrams_given_or_none(arpa, tmp_path, steps):
    """No unigram list (a KenLM file the reference does not read words from): every word in progress
    is unknown; a shorter list: the others count as unknown words."""
    not_arpa = str(tmp_path / "lm.klm")  # KenLM reads ARPA text whatever the name
    shutil.copy(arpa, not_arpa)
    rng = np.random.default_rng(11)
    for path, unigrams in [(not_arpa, None), (arpa, WORDS[:5]), (arpa, ["bad", "notinlm"])]:
        ours, reference = decoders(path, unigrams=unigrams)
        for sentence in SENTENCES[:3]:
            logits = noisy_logits(sentence, rng)
            assert_same_beams(our_beams(ours.decode_beams(logits)), reference_beams(reference, logits))


def test_labels_spelled_more_than_one_way(tmp_path):
    """With "ab" as well as "a" and "b", a prefix has several spellings: they merge as one beam."""
    vocab = ["<pad>", "|", "a", "b", "ab", "ba", "c"]
    assert not spellings_are_unique(build_alphabet(vocab))
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(bigram_arpa(["ab", "abc", "cab", "bab", "ca"]))
    ours, reference = decoders(str(arpa), vocab=vocab)
    rng = np.random.default_rng(5)
    for tokens in [["ab", "|", "c", "a", "b"], ["b", "a", "b", "|", "c", "ab", "c", "|", "ba"]]:
        path = [vocab.index(t) for token in tokens for t in [token] * int(rng.integers(1, 3)) + ["<pad>"]]
        logits = rng.normal(0.0, 2.0, size=(len(path), len(vocab))).astype(np.float32)
        logits[np.arange(len(path)), path] += 3.0
        for options in [dict(), dict(beam_width=6, prune_history=True)]:
            assert_same_beams(our_beams(ours.decode_beams(logits, **options)), reference_beams(reference, logits, **options))


@pytest.mark.parametrize("vocab", [
    ["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b"],
    ["[PAD]", "[UNK]", "|", "a", "b"],
    ["_", "a", "b", " "],
    ["a", "b", "|"],  # no blank: one is appended
    ["<PAD>", "|", " ", "a"],  # a space of its own: "|" stays a letter
])
def test_alphabet_as_the_reference_builds_it(vocab):
    assert build_alphabet(vocab) == pyctcdecode.Alphabet.build_alphabet(vocab).labels


def test_word_pieces_and_bad_labels_are_refused():
    for vocab in [["<pad>", "▁a", "b"], ["<pad>", "##a", "b"], ["<pad>", "a", "a"]]:
        with pytest.raises(ValueError):
            build_alphabet(vocab)


def test_unique_spellings():
    assert spellings_are_unique(["", " ", "a", "b", "<s>", "</s>"])
    assert spellings_are_unique(["a", "ab", "bb"])  # a prefix code read backwards is still unique
    assert not spellings_are_unique(["a", "b", "ab"])
    assert not spellings_are_unique(["a", "ab", "ba"])  # "aba" = a.ba = ab.a
    assert not spellings_are_unique(["a", "b c"])  # a space inside a label joins two words


@pytest.mark.skipif(search.kernel is None, reason="numba is not installed")
def test_the_kernel_and_the_python_steps_give_the_same_bits(arpa, monkeypatch):
    """Many random cases (options, LM weights, unigram lists, dtypes, batches), every beam's
    text, word frames and scores equal to the bit; the kernel's tables start tiny, grow, and are
    cleared between the utterances of a batch."""
    monkeypatch.setattr(search.kernel, "INITIAL_SIZE", 8)
    monkeypatch.setattr(search.kernel, "MAX_PARTS", 40)
    rng = np.random.default_rng(21)
    for case in range(12):
        unigrams = [None, WORDS[:6], WORDS + ["ghost"]][case % 3]
        weights = dict(alpha=float(rng.choice([0.5, 1.5])), beta=float(rng.choice([1.5, -0.5])),
                       unk_score_offset=float(rng.choice([-10.0, -4.0])), score_boundary=bool(rng.integers(2)))
        ours = BeamSearchDecoder(build_alphabet(VOCAB), LanguageModel.from_file(arpa, unigrams, **weights))
        batch = [noisy_logits(s, rng, noise=float(rng.choice([0.5, 1.5, 2.5]))) for s in SENTENCES[: 1 + case % 4]]
        if case % 4 == 1:  # probabilities: float32 sums stay float32
            batch = [(np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)).astype(np.float32) for x in batch]
        options = random_options(rng)
        results = []
        for compiled in [True, False]:
            monkeypatch.setattr(search, "COMPILED", compiled)
            results.append([our_beams(b) for b in ours.decode_beams_batch(batch, **options)])
        assert results[0] == results[1], (case, options)


def test_trie_knows_the_prefixes_of_its_words():
    rng = np.random.default_rng(0)
    words = {"".join(rng.choice(list("abcd"), size=rng.integers(1, 6))) for _ in range(60)}
    trie = CharTrie(words)
    labels = ["a", "b", "c", "d", "x", "ab", "ca"]
    codes, _ = trie.label_codes(labels)
    prefixes, states = [""], np.array([0])
    for _ in range(3):  # every prefix extended by every label, three times
        parents = np.repeat(states, len(labels))
        children = trie.walk(parents, np.tile(codes, (len(states), 1)))
        extended = [(p + label, label) for p in prefixes for label in labels]
        for (prefix, label), state, parent in zip(extended, children.tolist(), parents.tolist()):
            begun = [w for w in words if w.startswith(prefix)]
            assert (state >= 0) == bool(begun), prefix
            assert trie.step(parent, [trie.codes.get(c, -1) for c in label]) == state
            if begun:
                assert trie.shortest[state] == min(map(len, begun))
        prefixes = [p for (p, _), s in zip(extended, children.tolist()) if s >= 0]
        states = children[children >= 0]


def test_hotword_prefix_scores_as_the_reference():
    from pyctcdecode.language_model import HotwordScorer

    phrases = ["deadhead", "bead", "be fade", "cafe bee"]
    ours, reference = Hotwords(phrases, 7.0), HotwordScorer.build_scorer(phrases, weight=7.0)
    prefixes = ["b", "be", "bea", "bead", "beads", "d", "dead", "f", "fade", "x", "c", "cafe"]
    states = ours.trie.walk(np.zeros(len(prefixes), np.int64), ours.trie.label_codes(prefixes)[0])
    scores = ours.prefix_scores(np.array([len(p) for p in prefixes]), states)
    for prefix, score in zip(prefixes, scores.tolist()):
        expected = reference.score_partial_token(prefix) if prefix in reference else None
        assert (None if np.isnan(score) else score) == expected, prefix


def test_pools_decode_as_in_process(arpa):
    ours, _ = decoders(arpa)
    rng = np.random.default_rng(9)
    batch = [noisy_logits(s, rng) for s in SENTENCES]
    expected = our_beams_of(ours.decode_beams_batch(batch, beam_width=10))
    import concurrent.futures

    with multiprocessing.pool.ThreadPool(2) as pool:
        assert our_beams_of(ours.decode_beams_batch(batch, pool=pool, beam_width=10)) == expected
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert our_beams_of(ours.decode_beams_batch(batch, pool=pool, beam_width=10)) == expected
    with pytest.raises(ValueError, match="pool"):
        ours.decode_beams_batch(batch, pool=object())


def our_beams_of(batch):
    return [our_beams(beams) for beams in batch]


def test_model_logits_match_the_reference(arpa, steps):
    """Log-softmax logits of a (random, tiny) CTC model on spoken words, as ``transcribe --lm`` decodes them."""
    torch = pytest.importorskip("torch")
    from conftest import small_config

    from wav2vec2.backends.torch import Wav2Vec2ForCTC

    torch.manual_seed(0)
    config = small_config("stable", vocab_size=len(VOCAB), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                          hidden_dropout=0.0, pad_token_id=0)
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)  # a random head is flat: sharpen it, so that frames disagree
        model.lm_head.bias[0] += 4.0
    audio = np.random.default_rng(0).normal(0, 0.3, (3, 16000)).astype(np.float32)
    if shutil.which("espeak-ng"):  # speech if it can be had (the model knows none: its text is noise)
        audio = np.stack([spoken(sentence, 16000) for sentence in ["bad cab face", "dead head", "bee fade"]])
    audio = torch.from_numpy(audio)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(audio).logits, -1).numpy()
    ours, reference = decoders(arpa)
    for utterance in log_probs:
        assert_same_beams(our_beams(ours.decode_beams(utterance, beam_width=32)),
                          reference_beams(reference, utterance, beam_width=32))


def spoken(sentence: str, samples: int) -> np.ndarray:
    """espeak-ng saying ``sentence`` at 16 kHz, cut or padded to ``samples``."""
    import subprocess
    import tempfile

    import soundfile
    import soxr

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-w", path, sentence], check=True, capture_output=True)
        speech, rate = soundfile.read(path, dtype="float32")
    speech = soxr.resample(speech, rate, 16000).astype(np.float32)
    return np.pad(speech, (0, max(0, samples - len(speech))))[:samples]


# ---------------------------------------------------------------------------------------- files
def test_files_load_in_the_reference_and_back(arpa, tmp_path):
    ours, reference = decoders(arpa, alpha=0.7, beta=2.0, unk_score_offset=-8.0)
    rng = np.random.default_rng(2)
    logits = noisy_logits(SENTENCES[1], rng)
    expected = reference_beams(reference, logits)

    written = save_decoder(ours, tmp_path / "ours")
    assert sorted(os.listdir(tmp_path / "ours")) == ["alphabet.json", "language_model"]
    assert sorted(os.listdir(tmp_path / "ours" / "language_model")) == ["attrs.json", "lm.arpa", "unigrams.txt"]
    assert written == [str(tmp_path / "ours" / "alphabet.json"), str(tmp_path / "ours" / "language_model")]
    loaded_by_reference = pyctcdecode.BeamSearchDecoderCTC.load_from_dir(str(tmp_path / "ours"))
    assert reference_beams(loaded_by_reference, logits) == expected

    (tmp_path / "reference").mkdir()
    reference.save_to_dir(str(tmp_path / "reference"))
    loaded = load_decoder(tmp_path / "reference")
    assert loaded.language_model.attributes == dict(alpha=0.7, beta=2.0, unk_score_offset=-8.0, score_boundary=True)
    assert_same_beams(our_beams(loaded.decode_beams(logits)), expected)

    save_decoder(loaded, tmp_path / "reference")  # over the files it was loaded from
    assert_same_beams(our_beams(load_decoder(tmp_path / "reference").decode_beams(logits)), expected)
    assert sorted(os.listdir(tmp_path / "reference")) == ["alphabet.json", "language_model"]


def test_bad_files_name_the_file(arpa, tmp_path):
    ours, _ = decoders(arpa)
    save_decoder(ours, tmp_path)
    lm_directory = tmp_path / "language_model"

    def broken(path, text):
        original = path.read_bytes()
        path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
        try:
            with pytest.raises(ValueError, match=str(path.name)):
                load_decoder(tmp_path)
        finally:
            path.write_bytes(original)

    alphabet = tmp_path / "alphabet.json"
    broken(alphabet, "{not json")
    broken(alphabet, json.dumps({"labels": ["a"]}))
    broken(alphabet, json.dumps({"labels": "ab", "is_bpe": False}))
    broken(alphabet, json.dumps({"labels": ["▁a", "b"], "is_bpe": True}))
    broken(alphabet, json.dumps({"labels": ["a", "a", ""], "is_bpe": False}))
    attrs = lm_directory / "attrs.json"
    broken(attrs, json.dumps({"alpha": 0.5, "beta": 1.5}))
    broken(attrs, json.dumps({"alpha": "0.5", "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True}))
    broken(attrs, json.dumps({"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": 1}))
    broken(lm_directory / "unigrams.txt", b"\xff\xfe bad")
    broken(lm_directory / "lm.arpa", "not a language model")
    (lm_directory / "extra.txt").write_text("")
    with pytest.raises(ValueError, match="language_model"):
        load_decoder(tmp_path)
    (lm_directory / "extra.txt").unlink()
    (lm_directory / ".hidden").write_text("")  # ignored, as by the reference
    load_decoder(tmp_path)


def test_a_failed_save_keeps_the_previous_files(arpa, tmp_path):
    ours, _ = decoders(arpa)
    save_decoder(ours, tmp_path)
    before = {p: (tmp_path / p).read_bytes() for p in ["alphabet.json", "language_model/attrs.json"]}
    other = BeamSearchDecoder(ours.labels[::-1], LanguageModel.from_file(arpa))
    other.language_model.path = str(tmp_path / "missing.arpa")  # the copy fails half-way
    with pytest.raises(OSError):
        save_decoder(other, tmp_path)
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["alphabet.json", "language_model"]


# ---------------------------------------------------------------------------------------- errors
def test_bad_input_is_a_clear_error(arpa):
    ours, _ = decoders(arpa)
    good = np.zeros((5, len(VOCAB)), np.float32)
    for logits, message in [(np.zeros((5, len(VOCAB) + 1)), "shape"), (np.zeros(5), "shape"),
                            (np.full((5, len(VOCAB)), np.nan), "NaN"), (good.astype(str), "numbers")]:
        with pytest.raises(ValueError, match=message):
            ours.decode_beams(logits)
    for options, message in [(dict(beam_width=0), "beam_width"), (dict(beam_prune_logp=1.0), "beam_prune_logp"),
                             (dict(hotwords="cab"), "hotwords")]:
        with pytest.raises(ValueError, match=message):
            ours.decode_beams(good, **options)
    with pytest.raises(ValueError, match="alpha"):
        ours.language_model.set_attributes(alpha="high")
    with pytest.raises(ValueError, match="no such KenLM"):
        LanguageModel.from_file(arpa + ".missing")
