"""The three backends: ``wav2vec2.backends.torch``, ``.tensorflow`` and ``.flax``."""
from __future__ import annotations

import os
import re
import sys
import tempfile

# glog's line prefix: severity letter, then MMDD
_NATIVE_LOG_LINE = re.compile(r"^(?:([IWEF])\d{4} |(WARNING): All log messages before absl::InitializeLog)")
_SEVERITIES = "IWEF"  # TF_CPP_MIN_LOG_LEVEL 1 hides I, 2 hides W too, 3 hides E too


def import_tensorflow():
    """``import tensorflow``, with what its native libraries print on stderr while they load (before
    TensorFlow's own filter is set up, so TF_CPP_MIN_LOG_LEVEL does not reach it) filtered by
    TF_CPP_MIN_LOG_LEVEL as TensorFlow filters its later lines: the CUDA-stub notes of a CPU-only
    machine go, anything else it prints stays. Imports once; later calls return the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL") or 0)
    except ValueError:
        level = 0
    if level <= 0:
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if _shown(line, level)))
            sys.stderr.flush()
    return tensorflow


def _shown(line: str, level: int) -> bool:
    match = _NATIVE_LOG_LINE.match(line)
    if match is None:
        return True
    severity = match.group(1) or "W"
    return _SEVERITIES.index(severity) >= level
