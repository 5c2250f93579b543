"""`wav2vec2 conformance`: run every case through every installed backend, device and dtype, and
compare each stage with the baseline (the reference implementation when installed, else PyTorch).

Exit status 0 only when every comparison agrees within conformance/tolerances.py.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from wav2vec2.spec.names import canonical_shapes

from .backends import ALL_BACKENDS
from .cases import Case, builtin_cases
from .tolerances import TOLERANCES, compared, stage_kind


def random_weights(config, head: str, seed: int = 0) -> dict:
    """Canonical weights for ``config`` drawn in NumPy: every backend gets the very same tensors.

    Not an initialisation recipe: just values of a sensible scale, with norms near one, so that every
    stage carries signal.
    """
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in canonical_shapes(config, head).items():
        if name.endswith(("norm.weight", "layer_norm.weight")) or name.endswith(".weight_g"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            value = 0.1 * rng.standard_normal(shape)
        state[name] = value.astype(np.float32)
    return state


@dataclass
class Result:
    case: str
    backend: str
    device: str
    dtype: str
    status: str  # "ok", "FAIL", "ERROR", "skipped"
    first_failure: str = ""  # the first stage, in forward order, outside its tolerance
    detail: str = ""
    worst_ratio: float = 0.0  # max over stages of error / allowed error
    stages: dict = field(default_factory=dict)  # stage -> {"max_abs_err", "allowed"}
    seconds: float = 0.0


def compare(baseline: dict, other: dict, dtype: str, head: str = ""):
    """Per-stage errors in forward order; returns (stages, first failing stage or "", worst ratio)."""
    stages, first, worst = {}, "", 0.0
    for stage, expected in baseline.items():
        if not compared(head, dtype, stage):
            continue
        if stage not in other:
            stages[stage] = {"missing": True}
            first = first or stage
            continue
        got = other[stage]
        if got.shape != expected.shape:
            stages[stage] = {"shape": [list(got.shape), list(expected.shape)]}
            first = first or stage
            continue
        atol, rtol = TOLERANCES[(dtype, stage_kind(stage))]
        allowed = atol + rtol * float(np.max(np.abs(expected), initial=0.0))
        err = float(np.max(np.abs(got - expected), initial=0.0))
        if not np.all(np.isfinite(got)):
            err = float("inf")
        ratio = err / allowed if allowed > 0 else (0.0 if err == 0 else float("inf"))
        stages[stage] = {"max_abs_err": err, "allowed": allowed}
        worst = max(worst, ratio)
        if ratio > 1.0 and not first:
            first = stage
    return stages, first, worst


def run_matrix(cases, backends, *, devices=None, dtypes=("float32", "bfloat16"), seed=0,
               perturb=None, progress=None) -> list:
    """Run ``cases`` through ``backends`` (instances); the first backend is the baseline.

    ``perturb`` names a backend whose weights get a small change in the last encoder layer's
    feed-forward, a self-check that the runner can fail and names the right stage.
    """
    results = []
    baseline_backend, others = backends[0], backends
    plan = []
    for case in cases:
        for backend in others:
            for device in backend.devices():
                if devices and not any(device.startswith(d) for d in devices):
                    continue
                for dtype in dtypes:
                    if backend is baseline_backend and (device, dtype) == ("cpu", "float32"):
                        continue
                    plan.append((case, backend, device, dtype))
    total = len(plan)
    baselines = {}
    for i, (case, backend, device, dtype) in enumerate(plan, 1):
        if progress:
            progress(i, total, case.name, backend.name, device, dtype)
        started = time.perf_counter()
        if dtype not in backend.dtypes(device):
            results.append(Result(case.name, backend.name, device, dtype, "skipped", detail=f"{backend.name} runs no {dtype}"))
            continue
        try:
            if case.name not in baselines:
                state = case.weights if case.weights is not None else random_weights(case.config, case.head, seed)
                inputs = case.make_inputs(seed)
                baselines[case.name] = (state, inputs, baseline_backend.run(case, state, inputs, "cpu", "float32"))
            state, inputs, expected = baselines[case.name]
            if perturb == backend.name:
                state = dict(state)
                key = _perturb_key(state, case.config)
                state[key] = state[key] * 1.01
            got = backend.run(case, state, inputs, device, dtype)
            stages, first, worst = compare(expected, got, dtype, case.head)
            status = "FAIL" if first else "ok"
            detail = _describe(stages[first]) if first else ""
            results.append(Result(case.name, backend.name, device, dtype, status, first, detail, worst, stages,
                                  time.perf_counter() - started))
        except Exception as e:  # a backend that crashes is a failed comparison, reported by name
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            results.append(Result(case.name, backend.name, device, dtype, "ERROR", detail=tb,
                                  seconds=time.perf_counter() - started))
    return results


def _perturb_key(state, config) -> str:
    last = config.num_hidden_layers - 1
    for key in state:
        if f"encoder.layers.{last}.feed_forward.output_dense.weight" in key:
            return key
    raise KeyError("no encoder feed-forward weight to perturb")


def _describe(stage: dict) -> str:
    if stage.get("missing"):
        return "stage missing from this backend's output"
    if "shape" in stage:
        got, expected = stage["shape"]
        return f"shape {tuple(got)} != baseline {tuple(expected)}"
    return f"max |err| {stage['max_abs_err']:.3g} > allowed {stage['allowed']:.3g}"


def format_table(results, baseline_name: str) -> str:
    header = ("case", "backend", "device", "dtype", "result", "worst err/tol", "first differing stage")
    rows = [header]
    for r in results:
        worst = f"{r.worst_ratio:.3f}" if r.status in ("ok", "FAIL") else ""
        where = f"{r.first_failure}: {r.detail}" if r.first_failure else r.detail
        rows.append((r.case, r.backend, r.device, r.dtype, r.status, worst, where))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row[:-1], widths)) + "  " + str(row[-1]) for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "FAIL", "ERROR", "skipped")}
    lines.append("")
    lines.append(f"baseline: {baseline_name} (cpu, float32). "
                 f"{counts['ok']} agree, {counts['FAIL']} differ, {counts['ERROR']} errors, {counts['skipped']} skipped.")
    return "\n".join(lines)


def _progress_printer(stream):
    tty = stream.isatty()

    def show(i, total, case, backend, device, dtype):
        line = f"[{i}/{total}] {case} · {backend} · {device} · {dtype}"
        if tty:
            stream.write("\r\033[K" + line)
            if i == total:
                stream.write("\n")
        else:
            stream.write(line + "\n")
        stream.flush()

    return show


def model_case(path, **hub_kwargs) -> Case:
    """A case from the user's own checkpoint: its config and weights, one second of random audio."""
    from wav2vec2 import Wav2Vec2Config
    from wav2vec2.conversion import infer_head
    from wav2vec2.io import read_state_dict

    config = Wav2Vec2Config.from_pretrained(path, **hub_kwargs)
    state = read_state_dict(path, **hub_kwargs)
    return Case(f"model:{path}", config, infer_head(state), lengths=(16000, 12000), weights=state)


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser) -> None:
    parser.add_argument("--backends", default=None,
                        help="comma-separated subset of: " + ", ".join(b.name for b in ALL_BACKENDS))
    parser.add_argument("--devices", default=None, help="comma-separated device prefixes, e.g. cpu,cuda")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--cases", default=None, help="run only the cases whose name contains this text")
    parser.add_argument("--model", default=None, help="compare the backends on this checkpoint (dir or hub id)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", default=None, metavar="BACKEND",
                        help="self-check: perturb one backend's weights; the run must then fail")


def run(args) -> int:
    wanted = set(args.backends.split(",")) if args.backends else None
    backends = [cls() for cls in ALL_BACKENDS if cls.available() and (wanted is None or cls.name in wanted)]
    if wanted:
        unknown = wanted - {cls.name for cls in ALL_BACKENDS}
        if unknown:
            print(f"wav2vec2 conformance: unknown backend(s): {sorted(unknown)}", file=sys.stderr)
            return 2
    if len(backends) < 2:
        print("wav2vec2 conformance: need at least two backends installed (reference, torch, tensorflow, flax); "
              f"found {[b.name for b in backends]}", file=sys.stderr)
        return 2
    if args.model:
        cases = [model_case(args.model)]
    else:
        cases = [c for c in builtin_cases() if not args.cases or args.cases in c.name]
    dtypes = tuple(args.dtypes.split(","))
    devices = args.devices.split(",") if args.devices else None
    started = time.perf_counter()
    results = run_matrix(cases, backends, devices=devices, dtypes=dtypes, seed=args.seed,
                         perturb=args.perturb, progress=_progress_printer(sys.stderr))
    print(format_table(results, backends[0].name))
    print(f"{len(results)} comparisons in {time.perf_counter() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1
