"""Wav2Vec2Processor: the feature extractor and the CTC tokenizer behind one object.

Audio goes to the feature extractor, text to the tokenizer; given both, the token ids come back as
``labels`` next to ``input_values``, ready for CTC training. Saves and loads the files of both, as
the reference processor does.
"""
from __future__ import annotations

from typing import List

from .feature_extraction import _HUB_KWARGS, BatchFeature, Wav2Vec2FeatureExtractor
from .tokenization import Wav2Vec2CTCTokenizer

# Keyword arguments of __call__ and where they go (the reference sends the shared ones to both).
_AUDIO_ONLY = ("sampling_rate",)
_SHARED = ("padding", "max_length", "truncation", "pad_to_multiple_of", "return_attention_mask", "return_tensors")


class Wav2Vec2Processor:
    def __init__(self, feature_extractor: Wav2Vec2FeatureExtractor, tokenizer: Wav2Vec2CTCTokenizer):
        if not isinstance(feature_extractor, Wav2Vec2FeatureExtractor):
            raise ValueError(
                f"feature_extractor must be a Wav2Vec2FeatureExtractor, got {type(feature_extractor).__name__}"
            )
        if not isinstance(tokenizer, Wav2Vec2CTCTokenizer):
            raise ValueError(f"tokenizer must be a Wav2Vec2CTCTokenizer, got {type(tokenizer).__name__}")
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    def __repr__(self):
        tokenizer = f"<{type(self.tokenizer).__name__}, {len(self.tokenizer)} tokens>"
        return f"{type(self).__name__}(feature_extractor={self.feature_extractor!r}, tokenizer={tokenizer})"

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @property
    def model_input_names(self) -> List[str]:
        return [*self.feature_extractor.model_input_names, "labels"]

    def __call__(self, audio=None, text=None, **kwargs) -> BatchFeature:
        """``audio`` -> input_values (+ attention_mask); ``text`` -> input_ids; both -> input_values + labels.

        ``sampling_rate`` goes to the feature extractor; padding, max_length, truncation,
        pad_to_multiple_of, return_attention_mask and return_tensors go to both.
        """
        if audio is None and text is None:
            raise ValueError("pass audio=, text= or both")
        unknown = sorted(set(kwargs) - set(_AUDIO_ONLY) - set(_SHARED))
        if unknown:
            raise ValueError(f"unknown keyword arguments {unknown}; accepted: {sorted(_AUDIO_ONLY + _SHARED)}")
        shared = {k: v for k, v in kwargs.items() if k in _SHARED}

        inputs = self.feature_extractor(audio, **kwargs) if audio is not None else None
        encodings = self.tokenizer(text, **shared) if text is not None else None
        return _with_labels(inputs, encodings)

    def pad(self, input_features=None, labels=None, **kwargs) -> BatchFeature:
        """Pad extracted features and/or encoded labels; given both, labels come back under ``labels``."""
        if input_features is None and labels is None:
            raise ValueError("pass input_features=, labels= or both")
        if input_features is not None:
            input_features = self.feature_extractor.pad(input_features, **kwargs)
        if labels is not None:
            label_kwargs = {k: v for k, v in kwargs.items() if k != "truncation"}
            labels = self.tokenizer.pad(labels, **label_kwargs)
        return _with_labels(input_features, labels)

    def decode(self, token_ids, **kwargs):
        """``Wav2Vec2CTCTokenizer.decode``."""
        return self.tokenizer.decode(token_ids, **kwargs)

    def batch_decode(self, sequences, **kwargs):
        """``Wav2Vec2CTCTokenizer.batch_decode``."""
        return self.tokenizer.batch_decode(sequences, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, **kwargs) -> "Wav2Vec2Processor":
        """Load ``preprocessor_config.json`` and the tokenizer files from one directory or hub repo.

        Hub options are used for both; other keywords (``target_lang=``, ...) go to the tokenizer.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(path_or_repo_id, **hub_kwargs)
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(path_or_repo_id, **hub_kwargs, **kwargs)
        return cls(feature_extractor, tokenizer)

    def save_pretrained(self, save_directory) -> List[str]:
        """Write the feature extractor's and the tokenizer's files, both marked with this class."""
        self.feature_extractor.processor_class = self.tokenizer.processor_class = type(self).__name__
        return [self.feature_extractor.save_pretrained(save_directory), *self.tokenizer.save_pretrained(save_directory)]


def _with_labels(features, encodings) -> BatchFeature:
    """The features with the encodings' token ids added as ``labels``; either alone when the other is None."""
    if encodings is None:
        return features
    if features is None:
        return encodings
    features["labels"] = encodings["input_ids"]
    return features
