"""Reading audio files into the mono float32 waveform a wav2vec 2.0 model expects.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis and, from libsndfile 1.1, MP3. Any sample rate is
converted with soxr (a band-limited resampler) and any channel count is averaged down to mono.
"""
from __future__ import annotations

import os

import numpy as np


class AudioError(ValueError):
    """An audio file that cannot be used: missing, unreadable or empty. The message names the file."""


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


def load_audio(path, sampling_rate: int) -> np.ndarray:
    """Read ``path`` as a mono float32 waveform (samples,) at ``sampling_rate`` Hz.

    Raises AudioError, naming the file, when it is missing, cannot be decoded or holds no samples.
    """
    import soundfile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    try:
        # always_2d gives (samples, channels) whatever the channel count.
        waveform, file_sr = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    if waveform.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    # Downmix before resampling: one channel costs the resampler a fraction of several.
    mono = to_mono(waveform)
    mono = resample(mono, int(file_sr), int(sampling_rate))
    return np.ascontiguousarray(mono, dtype=np.float32)


def stream_audio(path, sampling_rate: int, block_seconds: float = 30.0):
    """Yield ``path`` as consecutive mono float32 blocks at ``sampling_rate`` Hz, a few seconds each.

    Memory stays that of one block whatever the file's length. The blocks join up to what
    ``load_audio`` returns (up to the resampler's rounding). Raises AudioError like ``load_audio``.
    """
    import soundfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    try:
        file = soundfile.SoundFile(path)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    with file:
        file_sr = int(file.samplerate)
        resampler = None
        if file_sr != sampling_rate:
            import soxr

            resampler = soxr.ResampleStream(file_sr, sampling_rate, 1, dtype="float32", quality="HQ")
        blocksize = max(1, int(block_seconds * file_sr))
        try:
            for block in file.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                mono = to_mono(block)  # (samples,) at the file's rate
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                if mono.size:
                    yield mono
        except (RuntimeError, soundfile.LibsndfileError) as e:
            raise AudioError(f"{path}: cannot read audio ({e})") from None
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail


def audio_duration(path) -> float:
    """Length of an audio file in seconds, read from its header only."""
    import soundfile

    info = soundfile.info(os.fspath(path))
    return info.frames / info.samplerate
