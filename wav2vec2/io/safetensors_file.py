"""``model.safetensors`` (and its shards) through ``safetensors.numpy``."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np


def read_safetensors(path) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(os.fspath(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({e})") from None


def write_safetensors(state, path) -> None:
    from safetensors.numpy import save_file

    # transformers only loads safetensors files whose metadata says they hold PyTorch-layout weights.
    save_file({k: np.ascontiguousarray(v) if np.ndim(v) else np.asarray(v) for k, v in state.items()},
              os.fspath(path), metadata={"format": "pt"})
