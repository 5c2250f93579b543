"""Wav2Vec2FeatureExtractor against the reference (transformers 4.57.6) and its file format."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wav2vec2 import Wav2Vec2FeatureExtractor
from wav2vec2.feature_extraction import BatchFeature

SR = 16000


@pytest.fixture(scope="module")
def ref_cls():
    transformers = pytest.importorskip("transformers")
    return transformers.Wav2Vec2FeatureExtractor


def assert_batches_equal(ours, expected, atol=1e-6):
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-6)


def padded_oracle(ref, waveforms, pad_to, cut, padding_value, side="right"):
    """The reference run on each utterance alone (its normalisation then sees no padding), then padded."""
    out = []
    for w in waveforms:
        w = w[:cut] if cut is not None else w
        (alone,) = ref(w, sampling_rate=SR)["input_values"]
        missing = max((pad_to or 0) - len(alone), 0)
        out.append(np.pad(alone, (0, missing) if side == "right" else (missing, 0), constant_values=padding_value))
    return out


batches = st.lists(st.integers(1, 40), min_size=1, max_size=4)
paddings = st.sampled_from([False, True, "longest", "max_length", "do_not_pad"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=batches,
    padding=paddings,
    max_length=st.integers(1, 45),
    truncation=st.booleans(),
    multiple=st.sampled_from([None, 1, 4, 7]),
    scale=st.sampled_from([1e-3, 1.0, 3e3]),
    padding_value=st.sampled_from([0.0, -1.5]),
    side=st.sampled_from(["right", "left"]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(ref_cls, lengths, padding, max_length, truncation, multiple, scale, padding_value, side, seed):
    rng = np.random.default_rng(seed)
    waveforms = [rng.normal(size=n) * scale + rng.normal() for n in lengths]
    settings_ = dict(padding_value=padding_value, padding_side=side)
    call = dict(padding=padding, max_length=max_length, truncation=truncation, pad_to_multiple_of=multiple)
    ours = Wav2Vec2FeatureExtractor(**settings_)
    ref = ref_cls(**settings_)

    def round_up(n):
        return -(-n // multiple) * multiple if multiple else n

    cut = round_up(max_length) if truncation else None
    kept = [min(n, cut) if cut is not None else n for n in lengths]
    pad_to = {"max_length": round_up(max_length), "do_not_pad": None, False: None}.get(padding, round_up(max(kept)))
    # Each utterance normalised alone then padded: what ours returns with or without a mask.
    oracle = padded_oracle(ref, waveforms, pad_to, cut, padding_value, side)
    def all_ones(w, sampling_rate):  # stands in for the reference: the mask of an unpadded utterance
        return {"input_values": [np.ones(len(w), np.int32)]}

    oracle_mask = padded_oracle(all_ones, waveforms, pad_to, cut, 0, side)

    got = ours(waveforms, sampling_rate=SR, return_attention_mask=True, **call)
    assert_batches_equal(got["attention_mask"], oracle_mask)
    assert_batches_equal(got["input_values"], oracle)
    ragged = len({len(x) for x in oracle}) > 1
    if side == "right" and not (ragged and pad_to is not None):
        # With a mask and right padding the reference normalises over the real samples only too.
        # (Left-padded, it normalises the padding instead of the speech; and it fails on a batch
        # that padding='max_length' leaves ragged: two reference bugs.)
        expected = ref(waveforms, sampling_rate=SR, return_attention_mask=True, **call)
        assert_batches_equal(got["input_values"], expected["input_values"])
        assert_batches_equal(got["attention_mask"], expected["attention_mask"])

    # Without a mask ours still normalises each utterance over its own samples (see the module doc).
    got = ours(waveforms, sampling_rate=SR, **call)
    assert "attention_mask" not in got
    assert_batches_equal(got["input_values"], oracle)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=batches, seed=st.integers(0, 2**16))
def test_without_normalisation_matches_reference(ref_cls, lengths, seed):
    rng = np.random.default_rng(seed)
    waveforms = [rng.normal(size=n) for n in lengths]
    got = Wav2Vec2FeatureExtractor(do_normalize=False)(waveforms, sampling_rate=SR, padding=True)
    expected = ref_cls(do_normalize=False)(waveforms, sampling_rate=SR, padding=True)
    assert_batches_equal(got["input_values"], list(expected["input_values"]))


def test_normalisation_formula(rng):
    x = rng.normal(size=100).astype(np.float32) * 5 + 2
    (got,) = Wav2Vec2FeatureExtractor()(x, sampling_rate=SR)["input_values"]
    np.testing.assert_allclose(got, (x - x.mean()) / np.sqrt(x.var() + 1e-7), rtol=1e-5, atol=1e-6)
    assert abs(got.mean()) < 1e-5 and abs(got.std() - 1) < 1e-4
    # A constant signal has no variance: it maps to zeros, not NaN.
    (flat,) = Wav2Vec2FeatureExtractor()(np.full(10, 3.0), sampling_rate=SR)["input_values"]
    np.testing.assert_array_equal(flat, np.zeros(10, np.float32))


def test_padding_does_not_change_normalised_values(rng):
    short, long = rng.normal(size=30), rng.normal(size=80)
    fe = Wav2Vec2FeatureExtractor()
    (alone,) = fe(short, sampling_rate=SR)["input_values"]
    batch = fe([short, long], sampling_rate=SR, padding=True, return_tensors="np")["input_values"]
    np.testing.assert_array_equal(batch[0, :30], alone)
    np.testing.assert_array_equal(batch[0, 30:], 0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,  # 1-D array
        lambda x: x.tolist(),  # list of floats
        lambda x: [x],  # list of arrays
        lambda x: [x.tolist()],  # list of lists
        lambda x: x[None, :],  # 2-D batch
        lambda x: (x.astype(np.float32),),  # tuple of float32 arrays
    ],
)
def test_accepted_input_forms(ref_cls, make, rng):
    x = rng.normal(size=50)
    got = Wav2Vec2FeatureExtractor()(make(x), sampling_rate=SR, return_tensors="np")
    expected = ref_cls()(x, sampling_rate=SR, return_tensors="np")
    assert got["input_values"].shape == (1, 50)
    np.testing.assert_allclose(got.input_values, expected["input_values"], atol=1e-6)


def test_integer_pcm_is_accepted(rng):
    pcm = (rng.normal(size=200) * 3000).astype(np.int16)
    (got,) = Wav2Vec2FeatureExtractor()(pcm, sampling_rate=SR)["input_values"]
    (expected,) = Wav2Vec2FeatureExtractor()(pcm.astype(np.float32), sampling_rate=SR)["input_values"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["np", "pt", "tf", "jax"])
def test_return_tensors(kind, rng):
    module = {"np": "numpy", "pt": "torch", "tf": "tensorflow", "jax": "jax"}[kind]
    pytest.importorskip(module)
    waveforms = [rng.normal(size=20), rng.normal(size=12)]
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    out = fe(waveforms, sampling_rate=SR, padding=True, return_tensors=kind)
    assert type(out.input_values).__module__.split(".")[0] in (module, "jaxlib")
    values, mask = np.asarray(out.input_values), np.asarray(out.attention_mask)
    assert values.shape == mask.shape == (2, 20) and values.dtype == np.float32
    assert mask.sum(-1).tolist() == [20, 12]


def test_torch_input(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=40).astype(np.float32)
    (got,) = Wav2Vec2FeatureExtractor()(torch.from_numpy(x), sampling_rate=SR)["input_values"]
    (expected,) = Wav2Vec2FeatureExtractor()(x, sampling_rate=SR)["input_values"]
    np.testing.assert_array_equal(got, expected)
    # bfloat16 has no NumPy dtype: it is widened on the way in.
    half = torch.from_numpy(x).to(torch.bfloat16)
    (got,) = Wav2Vec2FeatureExtractor()([half], sampling_rate=SR)["input_values"]
    (expected,) = Wav2Vec2FeatureExtractor()(half.float().numpy(), sampling_rate=SR)["input_values"]
    np.testing.assert_array_equal(got, expected)


def test_pad_matches_reference(ref_cls, rng):
    features = [{"input_values": rng.normal(size=n).astype(np.float32)} for n in (9, 4, 6)]
    options = ({}, {"return_attention_mask": True}, {"pad_to_multiple_of": 4}, {"padding": "max_length", "max_length": 12})
    for kwargs in options:
        got = Wav2Vec2FeatureExtractor().pad(features, **kwargs)
        expected = ref_cls().pad(features, **kwargs)
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
            assert isinstance(got[key], np.ndarray)


def test_pad_keeps_framework(rng):
    torch = pytest.importorskip("torch")
    features = {"input_values": [torch.randn(5), torch.randn(3)]}
    out = Wav2Vec2FeatureExtractor().pad(features, return_attention_mask=True)
    assert isinstance(out.input_values, torch.Tensor) and out.input_values.shape == (2, 5)
    assert out.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0]]


# ------------------------------------------------------------------------------------ files
def test_ours_loads_in_reference(ref_cls, tmp_path, rng):
    ours = Wav2Vec2FeatureExtractor(sampling_rate=8000, padding_value=0.25, return_attention_mask=True, do_normalize=False)
    ours.save_pretrained(tmp_path)
    ref = ref_cls.from_pretrained(tmp_path)
    for name in ("sampling_rate", "padding_value", "return_attention_mask", "do_normalize", "feature_size", "padding_side"):
        assert getattr(ref, name) == getattr(ours, name), name
    waveforms = [rng.normal(size=10), rng.normal(size=7)]
    np.testing.assert_array_equal(
        ours(waveforms, sampling_rate=8000, padding=True, return_tensors="np").input_values,
        ref(waveforms, sampling_rate=8000, padding=True, return_tensors="np")["input_values"],
    )


def test_reference_loads_in_ours(ref_cls, tmp_path):
    ref = ref_cls(sampling_rate=22050, padding_value=-1.0, return_attention_mask=True, do_normalize=False)
    ref.save_pretrained(tmp_path)
    ours = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)
    for name in ("sampling_rate", "padding_value", "return_attention_mask", "do_normalize", "feature_size", "padding_side"):
        assert getattr(ours, name) == getattr(ref, name), name
    # Written back, the file says the same thing (unknown keys included).
    ours.save_pretrained(tmp_path / "again")
    before = json.loads((tmp_path / "preprocessor_config.json").read_text())
    after = json.loads((tmp_path / "again" / "preprocessor_config.json").read_text())
    assert after == before


def test_unknown_keys_survive_a_round_trip(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "chunk_length_s": 8}))
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)
    fe.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["chunk_length_s"] == 8
    assert Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "out" / "preprocessor_config.json").sampling_rate == 16000


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 2}))
    with pytest.raises(ValueError, match="preprocessor_config.json: feature_size must be 1"):
        Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "raw, kwargs, message",
    [
        (np.zeros(100), {"sampling_rate": 44100}, r"44100 Hz.*expects 16000 Hz"),
        (np.zeros((48000, 2)), {}, r"multi-channel.*mean\(axis=1\)"),
        ([np.zeros((2, 100))], {}, r"utterance 0.*\(2, 100\).*Downmix"),
        (np.zeros((2, 3, 100)), {}, r"mono"),
        (np.zeros(0), {}, r"empty"),
        ([np.ones(5), np.zeros(0)], {}, r"utterance 1.*empty"),
        ([], {}, r"at least one utterance"),
        (np.array([0.0, np.nan, 1.0]), {}, r"NaN or infinite"),
        ([np.ones(3), np.array([1.0, np.inf])], {}, r"utterance 1.*NaN or infinite"),
        ("speech.wav", {}, r"soundfile"),
        (None, {}, r"got NoneType"),
        ([{"array": [1.0]}], {}, r"got dict"),
        (np.array([1 + 2j, 3j]), {}, r"real numbers"),
        ([0.5, np.ones(3)], {}, r"mixes numbers and sequences"),
        (np.ones(10), {"padding": "max_length"}, r"max_length"),
        (np.ones(10), {"truncation": True}, r"truncation=True needs max_length"),
        (np.ones(10), {"padding": "shortest"}, r"padding must be"),
        (np.ones(10), {"return_tensors": "torch"}, r"return_tensors must be one of"),
        ([np.ones(10), np.ones(5)], {"return_tensors": "np"}, r"different lengths.*padding=True"),
        (np.ones(10), {"pad_to_multiple_of": 0}, r"pad_to_multiple_of"),
    ],
)
def test_bad_input_is_a_clear_value_error(raw, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Wav2Vec2FeatureExtractor()(raw, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"feature_size": 2}, "feature_size"),
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"padding_side": "middle"}, "padding_side"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Wav2Vec2FeatureExtractor(**kwargs)


def test_batch_feature_attribute_access():
    batch = BatchFeature(input_values=[1])
    assert batch.input_values == [1]
    with pytest.raises(AttributeError, match="input_values"):
        batch.attention_mask
