"""``model.safetensors`` (and its shards) through ``safetensors.numpy``.

The safetensors library checks the header against the bytes (offsets, shapes, dtypes, overlaps);
this module adds the dtypes NumPy can hold and errors that name the file and the tensor.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np


# safetensors dtype -> what NumPy reads it as (BF16 through ml_dtypes, which names it for NumPy)
_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "C64")


def read_safetensors(path) -> Dict[str, np.ndarray]:
    import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy, which safetensors asks for by name)
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():
                dtype = f.get_slice(key).get_dtype()
                if dtype not in _DTYPES:
                    raise ValueError(f"{path}: tensor {key!r} has dtype {dtype}, which NumPy cannot hold")
            return f.get_tensors()
    except SafetensorError as e:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    except IsADirectoryError as e:
        raise ValueError(f"{path}: not a file ({e})") from None


def write_safetensors(state, path) -> None:
    from safetensors.numpy import save_file

    # transformers only loads safetensors files whose metadata says they hold PyTorch-layout weights.
    save_file({k: np.ascontiguousarray(v) if np.ndim(v) else np.asarray(v) for k, v in state.items()},
              os.fspath(path), metadata={"format": "pt"})
