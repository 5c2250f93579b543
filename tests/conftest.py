"""Shared test helpers: small configs of both architectures, and the reference oracle."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# The tests' graphs are tiny and compiled once each: XLA's cheap compile settings halve JAX's and
# TensorFlow's compile times and change no test's tolerance.
_XLA_FLAGS = ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (pyproject's addopts): each worker computes on one thread,
    # so the workers do not oversubscribe the cores. Set before any framework is imported.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_name, "1")
    _XLA_FLAGS += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
os.environ.setdefault("XLA_FLAGS", " ".join(_XLA_FLAGS))

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


def padded_batch(lengths, seed=0, mask_dtype=np.int64):
    """Random waveforms of ``lengths`` samples, zero-padded to the longest (batch, samples), and their mask."""
    generator = np.random.default_rng(seed)
    values = np.zeros((len(lengths), max(lengths)), np.float32)
    mask = np.zeros(values.shape, mask_dtype)
    for row, n in enumerate(lengths):
        values[row, :n] = generator.standard_normal(n)
        mask[row, :n] = 1
    return values, mask


def utterances_with_own_statistics(samples, rng):
    """Two random waveforms (2, samples), the second at another scale and offset: every per-utterance
    statistic (the feature encoder's GroupNorm) differs between them."""
    x = rng.standard_normal((2, samples)).astype(np.float32)
    x[1] = 7.0 * x[1] + 3.0
    return x


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4 (each imports every framework)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
