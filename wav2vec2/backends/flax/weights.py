"""The Flax parameter tree <-> the canonical (reference PyTorch) state dict.

The tree already uses the canonical module names, so the mapping is three rules:
- a list element is a module ``layers_3`` here and ``layers.3`` there (conv_layers, layers, tdnn);
- Dense and Conv weights are ``kernel`` here, stored (in, out) and (kernel, in, out): the canonical
  ``weight`` transposed, (out, in) and (out, in, kernel);
- LayerNorm and GroupNorm weights are ``scale`` here.
Everything else (biases, weight_g / weight_v of the positional conv, codevectors, masked_spec_embed,
layer_weights, the x-vector objective's weight) keeps its name and layout.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ...spec.names import normalize_key

_LIST_ELEMENT = re.compile(r"^(conv_layers|layers|tdnn)_(\d+)$")
_CANONICAL_LIST_ELEMENT = re.compile(r"^(conv_layers|layers|tdnn)\.(\d+)$")


def _kernel_to_weight(kernel: np.ndarray) -> np.ndarray:
    # Dense (in, out) -> (out, in); Conv (kernel, in, out) -> (out, in, kernel). Both are self-inverse.
    return kernel.T if kernel.ndim == 2 else kernel.transpose(2, 1, 0)


def canonical_name(path: Tuple[str, ...]) -> Tuple[str, bool]:
    """Canonical key of a tree path, and whether the array is a kernel (needs a transpose)."""
    *modules, leaf = path
    modules = [_LIST_ELEMENT.sub(r"\1.\2", m) for m in modules]
    is_kernel = leaf == "kernel"
    if leaf in ("kernel", "scale"):
        leaf = "weight"
    return ".".join(modules + [leaf]), is_kernel


def to_canonical(params) -> Dict[str, np.ndarray]:
    state = {}
    for path, value in flatten_dict(params).items():
        name, is_kernel = canonical_name(path)
        value = np.asarray(value)
        state[name] = np.ascontiguousarray(_kernel_to_weight(value)) if is_kernel else value
    return state


def canonical_shapes(param_shapes) -> Dict[str, Tuple[int, ...]]:
    """Canonical key -> shape, from a tree of arrays or ShapeDtypeStructs."""
    shapes = {}
    for path, value in flatten_dict(param_shapes).items():
        name, is_kernel = canonical_name(path)
        shape = tuple(value.shape)
        shapes[name] = shape[::-1] if is_kernel else shape  # both kernel transposes reverse the axes
    return shapes


def from_canonical(state: Dict[str, np.ndarray], param_shapes, source: str = "state dict"):
    """The parameter tree (float32 NumPy arrays) for a canonical state dict.

    param_shapes: the tree the module expects (e.g. from jax.eval_shape of init). The key sets must
    match exactly and every shape must agree, else ValueError naming the keys.
    """
    state = {normalize_key(key): value for key, value in state.items()}  # PyTorch-2 weight-norm spelling
    expected = {}
    for path, value in flatten_dict(param_shapes).items():
        name, is_kernel = canonical_name(path)
        expected[name] = (path, is_kernel, tuple(value.shape))

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise ValueError(f"{source}: " + "; ".join(problems))

    flat = {}
    for name, (path, is_kernel, shape) in expected.items():
        value = np.asarray(state[name], dtype=np.float32)
        if is_kernel:
            value = _kernel_to_weight(value)
        if value.shape != shape:
            want = shape[::-1] if is_kernel else shape
            raise ValueError(f"{source}: {name} has shape {tuple(state[name].shape)}, expected {want}")
        flat[path] = np.ascontiguousarray(value)
    return unflatten_dict(flat)
