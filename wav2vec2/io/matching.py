"""Fit a checkpoint's state dict to the keys a model expects, and say what happened to every key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from ..spec.names import BODY_PREFIX, OPTIONAL_BODY_KEYS, head_of_key, normalize_key


@dataclass
class LoadReport:
    state: Dict[str, np.ndarray]  # the checkpoint's weights under the expected names, in expected order
    loaded: List[str] = field(default_factory=list)  # expected keys the checkpoint provides
    missing: List[str] = field(default_factory=list)  # head (or optional) keys it lacks: initialise them
    discarded: List[str] = field(default_factory=list)  # its keys of other heads (or optional ones), unused
    prefix: str = "kept"  # "kept", "added" (bare checkpoint into a head) or "stripped" (head into bare)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} weights"]
        if self.missing:
            parts.append(f"newly initialised: {self.missing}")
        if self.discarded:
            parts.append(f"discarded: {self.discarded}")
        return "; ".join(parts)


def _is_optional(key: str) -> bool:
    return key.removeprefix(BODY_PREFIX) in OPTIONAL_BODY_KEYS


def match_state_dict(state, expected_shapes) -> LoadReport:
    """Rename ``state`` to fit ``expected_shapes`` (e.g. ``canonical_shapes(config, head)``).

    Adds the ``wav2vec2.`` prefix to a bare-model checkpoint loaded into a head and strips it from a head
    checkpoint loaded into a bare model; maps the PyTorch-2 weight-norm spelling. Head keys the
    checkpoint lacks are reported ``missing``; its keys that belong to other heads are ``discarded``.
    Raises ValueError listing shape mismatches, unknown keys, or missing body keys.
    """
    state = {normalize_key(k): v for k, v in state.items()}
    expects_head = any(k.startswith(BODY_PREFIX) for k in expected_shapes)
    has_head = any(k.startswith(BODY_PREFIX) for k in state)

    prefix = "kept"
    other_head_keys = set()  # keys outside the body in the checkpoint
    if expects_head and not has_head:
        state = {BODY_PREFIX + k: v for k, v in state.items()}
        prefix = "added"
    elif has_head:
        other_head_keys = {k for k in state if not k.startswith(BODY_PREFIX)}
        if not expects_head:
            state = {k.removeprefix(BODY_PREFIX): v for k, v in state.items()}
            prefix = "stripped"

    mismatched: List[Tuple[str, tuple, tuple]] = []
    unknown: List[str] = []
    report = LoadReport(state={}, prefix=prefix)
    for key, value in state.items():
        if key in expected_shapes and (key not in other_head_keys or expects_head):
            shape = tuple(np.shape(value))
            if shape != tuple(expected_shapes[key]):
                mismatched.append((key, tuple(expected_shapes[key]), shape))
            report.loaded.append(key)
        elif _is_optional(key) or (key in other_head_keys and head_of_key(key) is not None):
            report.discarded.append(key)
        else:
            unknown.append(key)
    if mismatched:
        lines = "; ".join(f"{k}: expected {e}, got {g}" for k, e, g in mismatched)
        raise ValueError(f"checkpoint weights have the wrong shape: {lines}")
    if unknown:
        raise ValueError(f"checkpoint has {len(unknown)} key(s) this model does not know: {sorted(unknown)}")

    loaded = set(report.loaded)
    absent = [k for k in expected_shapes if k not in loaded]
    body_missing = [k for k in absent if (k.startswith(BODY_PREFIX) or not expects_head) and not _is_optional(k)]
    if body_missing:
        raise ValueError(f"checkpoint lacks {len(body_missing)} weight(s) of the wav2vec2 body: {body_missing}")
    report.missing = absent
    report.state = {k: state[k] for k in expected_shapes if k in loaded}
    return report
