"""benchmarks/bench_cpu.py runs end to end on a tiny config, one round, and its fp32 engines agree."""
import importlib.util
from pathlib import Path

import pytest

from conftest import small_config

pytest.importorskip("torch")
pytest.importorskip("transformers")

# The engines the smoke run times: torch ones (ours and the reference) and the ONNX runtimes; the TF
# and Flax engines are the same code paths as their backends' own tests, and compile slowly.
ENGINES = ["reference-torch-fp32", "ours-torch-fp32", "ours-torch-fp32-plain", "ours-torch-bf16", "ours-torch-int8",
           "onnxruntime-fp32",
           "onnxruntime-int8",
           "openvino-fp32"]


def _benchmark(name):
    """benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_cpu_smoke(tmp_path, capsys):
    bench = _benchmark("bench_cpu")
    small_config("stable").save_pretrained(tmp_path)
    rows = bench.main(["--config", str(tmp_path), "--seconds", "0.1", "--repeats", "1", "--warmup", "1",
                       "--engines", ",".join(ENGINES), "--profile", "ours-torch-fp32"])
    out = capsys.readouterr().out
    assert "median of 1 interleaved rounds" in out and "profile of ours-torch-fp32" in out
    assert set(rows) | {line.split()[0] for line in out.splitlines() if "skipped:" in line} >= set(ENGINES)
    for name, row in rows.items():
        assert row["median_s"] > 0
        if name.endswith(("fp32", "fp32-plain")):  # the same weights in every engine: the same logits
            assert row["max_diff"] < 1e-4, name
            assert row["argmax_agreement"] == 1.0, name
    assert rows["ours-torch-bf16"]["argmax_agreement"] > 0.8


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "expected cpu, cuda or cuda:N"),
    (["--device", "cuda", "--engines", "ours-torch-bf16,openvino-bf16"], "run on the CPU only"),
    (["--device", "cuda:7", "--engines", "ours-torch-bf16"], "torch sees no such CUDA device here"),
])
def test_bench_cpu_refuses_a_device_it_cannot_use(argv, message, capsys):
    bench = _benchmark("bench_cpu")
    import torch

    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bench_conv_layers_smoke(capsys):
    bench = _benchmark("bench_conv_layers")
    bench.main(["--seconds", "0.1", "--repeats", "1", "--dtype", "bf16"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["0", "1", "2", "3", "4", "5", "6", "all"]


def test_bench_gemm_smoke(capsys):
    bench = _benchmark("bench_gemm")
    bench.main(["--shape", "8,16,32", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(8 x 16) @ (16 x 32), fp32 unless named, median of 1"
    names = {line.rsplit(maxsplit=2)[0] for line in lines[1:]}
    assert names >= {"numpy", "torch F.linear (MKL)", "torch bf16"}
    assert all(float(line.split()[-2]) >= 0 for line in lines[1:])  # a number (a tiny shape may print 0.0)
