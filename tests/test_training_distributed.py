"""Data parallelism on each framework's own engine, on CPU: 2 torchrun processes (DDP, gloo), 2
forced host devices in JAX, 2 logical CPU devices in TensorFlow (MirroredStrategy). Each makes the
same updates as one process / device with the same global batches."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from training_helpers import tiny_config, write_config, write_corpus
from wav2vec2.io import read_state_dict
from wav2vec2.training import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_TWO_DEVICES = (
    "import sys, tensorflow as tf\n"
    "cpu = tf.config.list_physical_devices('CPU')[0]\n"
    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
    "from wav2vec2.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def train(tmp_path, corpus, name, backend, launcher=(), env=None, batch_seconds=4):
    """``wav2vec2 train`` in a subprocess (3 updates; 4 s batches hold 1 to 3 rows); returns the run dir."""
    config = tmp_path / "config.json"
    if not config.exists():
        # No dropout (the streams are per worker); SpecAugment on: its masks come with the batch.
        write_config(config, tiny_config(mask_time_prob=0.2))
    out = tmp_path / name
    command = [*launcher, "train", "--backend", backend, "--model", str(config), "--train", corpus, "--output", str(out),
               "--max-steps", "3", "--batch-seconds", str(batch_seconds), "--lr", "1e-3", "--warmup-steps", "1", "--log-every", "1",
               "--no-progress"]
    if not launcher:
        command = [sys.executable, "-m", "wav2vec2", *command]
    environment = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                   **(env or {})}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def assert_same_run(parallel, single):
    logs = [[r for r in run.read_log(d / "log.jsonl") if "loss" in r] for d in (parallel, single)]
    assert len(logs[0]) == len(logs[1]) == 3
    for ours, theirs in zip(*logs):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
    ours, theirs = read_state_dict(parallel), read_state_dict(single)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], atol=2e-5, rtol=1e-4, err_msg=name)


def test_torchrun_ddp_matches_one_process(tmp_path, corpus):
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    single = train(tmp_path, corpus, "single", "torch")
    with socket.socket() as s:  # a free port for the rendezvous (port 0 is not taken as "any" by torchrun)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
                "-m", "wav2vec2"]
    parallel = train(tmp_path, corpus, "ddp", "torch", launcher)
    assert_same_run(parallel, single)


def test_jax_two_host_devices_match_one(tmp_path, corpus):
    pytest.importorskip("flax")
    # One batch of 5 rows, updated 3 times (one shape to compile: JAX compiles slowly here); on 2
    # devices it is padded to 6 rows, the sixth weighing 0.
    five_rows = os.path.join(os.path.dirname(corpus), "five.jsonl")  # beside the audio it names
    with open(five_rows, "w") as f:
        f.writelines(open(corpus).readlines()[:5])
    # Cheaper LLVM passes: compiling, not running, is what costs here (about half the time).
    quick = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    single = train(tmp_path, five_rows, "single", "flax", batch_seconds=30, env={"XLA_FLAGS": quick})
    parallel = train(tmp_path, five_rows, "mesh", "flax", batch_seconds=30,
                     env={"XLA_FLAGS": quick + " --xla_force_host_platform_device_count=2"})
    assert_same_run(parallel, single)


def test_tensorflow_two_logical_cpus_match_one(tmp_path, corpus):
    pytest.importorskip("tensorflow")
    single = train(tmp_path, corpus, "single", "tensorflow")
    parallel = train(tmp_path, corpus, "mirrored", "tensorflow", [sys.executable, "-c", TF_TWO_DEVICES])
    assert_same_run(parallel, single)
