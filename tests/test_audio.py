"""Audio loading: formats, resampling, downmixing and clear errors."""
import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from wav2vec2.audio import AudioError, load_audio, resample, to_mono


def tone(freq, rate, seconds=1.0, phase=0.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


# (extension, soundfile format, subtype, tolerance against the written samples)
FORMATS = [
    ("wav", "WAV", "PCM_16", 1e-4),
    ("flac", "FLAC", "PCM_16", 1e-4),
    ("ogg", "OGG", "VORBIS", None),
    ("mp3", "MP3", "MPEG_LAYER_III", None),
]


@pytest.mark.parametrize("ext,fmt,subtype,atol", FORMATS)
def test_formats_read_as_mono_float32(ext, fmt, subtype, atol, tmp_path):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = tmp_path / f"tone.{ext}"
    samples = tone(440, 16000)
    soundfile.write(path, samples, 16000, format=fmt, subtype=subtype)
    waveform = load_audio(path, 16000)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    if atol is not None:  # lossless: the very samples
        np.testing.assert_allclose(waveform, samples, atol=atol)
    else:  # lossy codecs may add or drop a few hundred samples of delay; the tone's level survives
        assert abs(len(waveform) - len(samples)) < 0.1 * len(samples)
        assert abs(np.sqrt(np.mean(waveform**2)) - np.sqrt(np.mean(samples**2))) < 0.05


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_a_tone(orig_sr, tmp_path):
    """A tone written at orig_sr reads back at 16 kHz as the same tone computed at 16 kHz."""
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(300, orig_sr), orig_sr, subtype="FLOAT")
    waveform = load_audio(path, 16000)
    expected = tone(300, 16000)
    assert abs(len(waveform) - len(expected)) <= 1
    middle = slice(800, 15200)  # the filter's edges are not a steady tone
    np.testing.assert_allclose(waveform[middle], expected[middle], atol=2e-3)


def test_channels_are_averaged(tmp_path):
    path = tmp_path / "three.wav"
    channels = np.stack([tone(200, 16000), tone(300, 16000), np.zeros(16000, np.float32)], axis=1)
    soundfile.write(path, channels, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), channels.mean(axis=1), atol=1e-6)
    assert to_mono(channels).shape == (16000,)
    with pytest.raises(ValueError, match="shape"):
        to_mono(np.zeros((2, 3, 4)))


def test_resample_is_identity_at_the_same_rate():
    x = tone(100, 16000)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16000)


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        load_audio(missing, 16000)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"\x00not audio" * 10)
    with pytest.raises(AudioError, match="garbage.mp3: cannot read audio"):
        load_audio(garbage, 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(empty, 16000)
    no_samples = tmp_path / "no_samples.wav"
    soundfile.write(no_samples, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no_samples.wav: the file holds no audio samples"):
        load_audio(no_samples, 16000)
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path, 16000)
