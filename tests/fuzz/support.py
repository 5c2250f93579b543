"""What the differential fuzz tests share: comparable summaries of loaded objects, the properties every
reader must have, and a worker process for oracles (and readers) that might crash or hang.

A summary turns a loaded object into plain tuples: tensors (torch or NumPy) become
("tensor", dtype, shape, contiguous little-endian bytes), so a torch result and ours compare with ==.
"""
from __future__ import annotations

import math
import os
import pickle
import signal
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def fuzz_settings(max_examples: int):
    """Bounded and reproducible: the same examples on every run (CI), no deadline, no database.

    For longer runs, ``WAV2VEC2_FUZZ_SCALE=20`` multiplies the examples and ``WAV2VEC2_FUZZ_RANDOM=1``
    draws new ones each run (docs/reliability.md)."""
    scale = float(os.environ.get("WAV2VEC2_FUZZ_SCALE", "1"))
    return settings(max_examples=max(1, int(max_examples * scale)), deadline=None, database=None,
                    derandomize=os.environ.get("WAV2VEC2_FUZZ_RANDOM", "") in ("", "0"),
                    suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------------ summaries
def _array_summary(array: np.ndarray):
    array = np.ascontiguousarray(array).reshape(array.shape)  # (ascontiguousarray makes 0-d arrays 1-d)
    if array.dtype == np.bool_:
        array = array.view(np.uint8) != 0  # any non-zero byte is True, as torch reads it
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return ("tensor", array.dtype.name, tuple(array.shape), array.tobytes())


def _tensor_summary(tensor):
    import torch

    tensor = tensor.detach()
    name = str(tensor.dtype).removeprefix("torch.")
    data = torch.empty(tensor.shape, dtype=tensor.dtype).copy_(tensor).reshape(-1)  # fresh strides, even for size-1 dims
    if tensor.dtype == torch.bool:
        data = data.to(torch.uint8)
    raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return ("tensor", name, tuple(tensor.shape), raw)


def summarize(obj, _enclosing=None):
    """A comparable form of a loaded object: containers by kind, tensors by dtype/shape/bytes."""
    enclosing = set() if _enclosing is None else _enclosing
    if isinstance(obj, (np.ndarray, np.generic)):
        return _array_summary(np.asarray(obj))
    if type(obj).__module__.startswith("torch") and type(obj).__name__ in ("Tensor", "Parameter"):
        return _tensor_summary(obj)
    if isinstance(obj, (bool, type(None), str, bytes)):
        return (type(obj).__name__, obj)
    if isinstance(obj, int):
        return ("int", obj)
    if isinstance(obj, float):
        return ("float", struct.pack("<d", obj) if not math.isnan(obj) else "nan")
    if isinstance(obj, (dict, list, tuple, set, frozenset)):
        if id(obj) in enclosing:
            return ("cycle",)
        enclosing.add(id(obj))
        try:
            if isinstance(obj, dict):
                return ("dict", tuple((summarize(k, enclosing), summarize(v, enclosing)) for k, v in obj.items()))
            if isinstance(obj, (set, frozenset)):
                return ("set", tuple(sorted(repr(summarize(v, enclosing)) for v in obj)))
            return ("list" if isinstance(obj, list) else "tuple", tuple(summarize(v, enclosing) for v in obj))
        finally:
            enclosing.discard(id(obj))
    return ("opaque",)  # globals, storages: named differently by torch and by us


# ----------------------------------------------------------------------------- reader properties
class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """A reader that runs longer than this hangs (pure-Python loops notice the alarm)."""
    def alarm(*_):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def refusal_or_result(read, path, seconds: float = 20.0):
    """("ok", result) or ("refused", message): the reader may raise only a ValueError naming the file
    (or FileNotFoundError), and must finish in time."""
    try:
        with time_limit(seconds):
            return "ok", read(path)
    except (ValueError, FileNotFoundError) as e:
        assert str(path) in str(e), f"the error does not name the file: {e}"
        return "refused", str(e)


def assert_inside_buffers(obj, limit: int):
    """Every array in ``obj`` lies inside the buffer it views, and the buffers together hold no more
    than ``limit`` bytes (what the file could hold): nothing was read from outside the file."""
    from numpy.lib.array_utils import byte_bounds

    buffers = {}

    def visit(node, depth=0):
        if isinstance(node, np.ndarray):
            if node.size == 0:
                return
            root = node
            while True:  # down to the array over the bytes read (as_strided puts a wrapper between)
                base = root.base
                base = base.base if not isinstance(base, np.ndarray) and isinstance(getattr(base, "base", None), np.ndarray) else base
                if not isinstance(base, np.ndarray):
                    break
                root = base
            low, high = byte_bounds(node)
            root_low, root_high = byte_bounds(root)
            assert root_low <= low and high <= root_high, "an array reaches outside its buffer"
            buffers[root_low] = root_high - root_low
        elif isinstance(node, dict) and depth < 200:
            for value in node.values():
                visit(value, depth + 1)
        elif isinstance(node, (list, tuple)) and depth < 200:
            for value in node:
                visit(value, depth + 1)

    visit(obj)
    assert sum(buffers.values()) <= limit, f"arrays hold {sum(buffers.values())} bytes, more than {limit}"


# ---------------------------------------------------------------------------------------- worker
class Worker:
    """Runs functions of ``tests/fuzz/oracles.py`` in a long-lived subprocess, so that an oracle or
    reader that crashes (a C library on a mutated file) or hangs is reported, not fatal."""

    def __init__(self):
        self._process = None

    def _start(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
        self._process = subprocess.Popen([sys.executable, "-m", "fuzz.oracles"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, cwd=ROOT)

    def call(self, function: str, *args, timeout: float = 60.0):
        """(status, value): status "ok" or "error" from the function, "crash" or "hang" otherwise."""
        if self._process is None or self._process.poll() is not None:
            self._start()
        message = pickle.dumps((function, args))
        try:
            self._process.stdin.write(struct.pack("<Q", len(message)) + message)
            self._process.stdin.flush()
            with time_limit(timeout):
                header = self._process.stdout.read(8)
                reply = self._process.stdout.read(struct.unpack("<Q", header)[0]) if len(header) == 8 else b""
        except Hang:
            self.close()
            return "hang", None
        except (BrokenPipeError, struct.error):
            reply = b""
        if not reply:
            returncode = self._process.wait()
            self._process = None
            return "crash", returncode
        return pickle.loads(reply)

    def close(self):
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
