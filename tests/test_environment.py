"""The project environment runs on current releases (scripts/setup.sh resolves them)."""
import importlib.metadata

import numpy as np
import pytest


def _major_minor(version: str):
    return tuple(int(part) for part in version.split(".")[:2])


def test_numpy_is_2_or_newer():
    assert _major_minor(np.__version__) >= (2, 0)


def test_no_library_dependency_pins_numpy_below_2():
    """pyctcdecode (numpy<2) may be installed as a test oracle, but nothing the library needs may hold it back."""
    requirements = importlib.metadata.requires("wav2vec2") or []
    assert not any(r.lower().startswith("pyctcdecode") for r in requirements)


@pytest.mark.parametrize("package", ["jax", "flax"])
def test_jax_stack_is_current(package):
    pytest.importorskip(package)
    # JAX 0.7.1 was what numpy<2 held the environment back to; anything the set-up resolves now is newer.
    assert _major_minor(importlib.metadata.version(package)) >= ({"jax": (0, 10), "flax": (0, 12)}[package])
