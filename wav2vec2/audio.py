"""Reading audio files into the mono float32 waveform a wav2vec 2.0 model expects.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis and, from libsndfile 1.1, MP3. Any sample rate is
converted with soxr (a band-limited resampler) and any channel count is averaged down to mono.
Every reader refuses, naming the file, what a model cannot use: a missing or undecodable file, one
with no samples, and one holding NaN or infinite samples (float WAV files can).
"""
from __future__ import annotations

import os

import numpy as np


class AudioError(ValueError):
    """Audio that cannot be used: missing, unreadable, empty or not finite. The message names the file."""


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono (samples,) or multi-channel (samples, channels) waveform with soxr."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return waveform
    import soxr

    return soxr.resample(waveform, orig_sr, target_sr, quality="HQ")


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """(samples,) or (samples, channels) -> (samples,), averaging the channels."""
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"expected a waveform of shape (samples,) or (samples, channels), got {waveform.shape}")
    return waveform.mean(axis=1)


def check_finite(name: str, waveform: np.ndarray, sampling_rate: int, first_sample: int = 0) -> None:
    """Raise AudioError naming ``name`` and the time of the first NaN or infinite sample, if any.

    ``first_sample``: where ``waveform`` starts in the whole input (for a block of a longer file).
    """
    finite = np.isfinite(waveform)
    if finite.all():
        return
    bad = first_sample + int(np.argmin(finite.reshape(finite.shape[0], -1).all(axis=1)))
    raise AudioError(f"{name}: the audio holds NaN or infinite samples (the first at {bad / sampling_rate:.3f} s)")


def _open(path: str, opener, **kwargs):
    """``opener(path, **kwargs)`` (a soundfile function), its errors as AudioError naming the file."""
    import soundfile

    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    try:
        return opener(path, **kwargs)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None


def load_audio(path, sampling_rate: int) -> np.ndarray:
    """Read ``path`` as a mono float32 waveform (samples,) at ``sampling_rate`` Hz.

    Raises AudioError, naming the file, when it is missing, cannot be decoded, holds no samples or
    holds NaN or infinite samples.
    """
    import soundfile

    path = os.fspath(path)
    # always_2d gives (samples, channels) whatever the channel count.
    waveform, file_sr = _open(path, soundfile.read, dtype="float32", always_2d=True)
    if waveform.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    check_finite(path, waveform, int(file_sr))
    # Downmix before resampling: one channel costs the resampler a fraction of several.
    mono = to_mono(waveform)
    mono = resample(mono, int(file_sr), int(sampling_rate))
    return np.ascontiguousarray(mono, dtype=np.float32)


def stream_audio(path, sampling_rate: int, block_seconds: float = 30.0):
    """Yield ``path`` as consecutive mono float32 blocks at ``sampling_rate`` Hz, a few seconds each.

    Memory stays that of one block whatever the file's length. The blocks join up to what
    ``load_audio`` returns (up to the resampler's rounding). Raises AudioError like ``load_audio``,
    when the bad block comes.
    """
    import soundfile

    path = os.fspath(path)
    with _open(path, soundfile.SoundFile) as file:
        file_sr = int(file.samplerate)
        resampler = None
        if file_sr != sampling_rate:
            import soxr

            resampler = soxr.ResampleStream(file_sr, sampling_rate, 1, dtype="float32", quality="HQ")
        blocksize = max(1, int(block_seconds * file_sr))
        read = 0  # samples at the file's rate so far
        try:
            for block in file.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                check_finite(path, block, file_sr, read)
                read += block.shape[0]
                mono = to_mono(block)  # (samples,) at the file's rate
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                if mono.size:
                    yield mono
        except (RuntimeError, soundfile.LibsndfileError) as e:
            raise AudioError(f"{path}: cannot read audio ({e})") from None
        if read == 0:
            raise AudioError(f"{path}: the file holds no audio samples")
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail


def audio_duration(path) -> float:
    """Length of an audio file in seconds, read from its header only (AudioError if it has none)."""
    import soundfile

    info = _open(os.fspath(path), soundfile.info)
    return info.frames / info.samplerate
