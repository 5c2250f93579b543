"""Shared test helpers: small configs of both architectures, and the reference oracle."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from conformance.cases import small_config  # noqa: E402,F401  (one definition for cases and tests)
from wav2vec2 import Wav2Vec2Config  # noqa: E402
from wav2vec2.spec.names import HEADS  # noqa: E402,F401  (re-exported for the tests)


def reference_config(config: Wav2Vec2Config):
    """The same config as a transformers.Wav2Vec2Config (the oracle); skips when it is absent."""
    transformers = pytest.importorskip("transformers")
    return transformers.Wav2Vec2Config(**config.to_dict())


@pytest.fixture
def rng():
    return np.random.default_rng(0)
