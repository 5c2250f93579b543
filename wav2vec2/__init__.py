"""wav2vec 2.0 in PyTorch, TensorFlow/Keras and JAX/Flax over one NumPy spec layer.

Importing this package needs NumPy only: the framework backends live in ``wav2vec2.backends.torch``,
``wav2vec2.backends.tensorflow`` and ``wav2vec2.backends.flax``, and each imports its framework when
it is imported itself.
"""
from .config import Wav2Vec2Config

__version__ = "0.1.0"

# Resolved on first use, so that importing the package stays cheap.
_LAZY = {
    "Wav2Vec2FeatureExtractor": "feature_extraction",
    "Wav2Vec2CTCTokenizer": "tokenization",
    "Wav2Vec2PhonemeCTCTokenizer": "tokenization",
    "Wav2Vec2Processor": "processing",
    "Wav2Vec2ProcessorWithLM": "processing_with_lm",
    "transcribe": "transcription",
    "convert": "conversion",
    "demo_model_path": "demo",
}

__all__ = ["Wav2Vec2Config", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'wav2vec2' has no attribute {name!r}")
