"""Data parallelism on each framework's own engine, on CPU: 2 torchrun processes (DDP and FSDP,
gloo), 2 forced host devices in JAX, 2 logical CPU devices in TensorFlow (MirroredStrategy). Each
makes the same updates as one process / device with the same global batches."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from training_helpers import tiny_config, write_config, write_corpus
from wav2vec2.cli import main as cli_main
from wav2vec2.io import read_state_dict
from wav2vec2.io.safetensors_file import read_safetensors
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


def train(tmp_path, corpus, name, backend, launcher=(), env=None, batch_seconds=4, options=()):
    """``wav2vec2 train`` (3 updates; 4 s batches hold 1 to 3 rows): in this process, or in a subprocess
    under ``launcher`` or with ``env``; returns the run dir."""
    config = tmp_path / "config.json"
    if not config.exists():
        # No dropout (the streams are per worker); SpecAugment on: its masks come with the batch.
        write_config(config, tiny_config(mask_time_prob=0.2))
    out = tmp_path / name
    command = [*launcher, "train", "--backend", backend, "--model", str(config), "--train", corpus, "--output", str(out),
               "--max-steps", "3", "--batch-seconds", str(batch_seconds), "--lr", "1e-3", "--warmup-steps", "1", "--log-every", "1",
               "--no-progress", *options]
    if not launcher and not env:  # one process: in this one (the workers of a launch are the subprocesses)
        assert cli_main(command) == 0
        return out
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


@pytest.fixture(scope="module")
def torch_single(tmp_path_factory, corpus):
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    # Checkpoints after every update, which change nothing in the run: the FSDP test resumes from one.
    return train(tmp_path_factory.mktemp("torch"), corpus, "single", "torch",
                 options=["--save-every", "1", "--keep-last", "3"])


def torchrun():
    with socket.socket() as s:  # a free port for the rendezvous (port 0 is not taken as "any" by torchrun)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
            "-m", "wav2vec2"]


def test_torchrun_ddp_matches_one_process(tmp_path, corpus, torch_single):
    parallel = train(tmp_path, corpus, "ddp", "torch", torchrun())
    assert_same_run(parallel, torch_single)


def test_torchrun_fsdp_resumes_and_matches_one_process(tmp_path, corpus, torch_single):
    """FSDP2 on gloo, in one launch: resumed from the one-process run's first checkpoint (every
    process loads the whole weights and moments and keeps its shard), it makes that run's updates 2
    and 3 and writes the whole weights and moments (gathered onto rank 0) that run wrote."""
    sharded = tmp_path / "fsdp"
    sharded.mkdir()
    shutil.copytree(torch_single / "checkpoint-1", sharded / "checkpoint-1")
    shutil.copy(torch_single / "log.jsonl", sharded / "log.jsonl")
    train(tmp_path, corpus, "fsdp", "torch", torchrun(),
          options=["--fsdp", "--save-every", "1", "--resume", "--eval", corpus])
    assert_same_run(sharded, torch_single)
    # The evaluation at the end runs on both processes (each forward gathers the layers): the
    # metrics of the one-process run's final model.
    from wav2vec2.training import api

    logged = [r for r in run.read_log(sharded / "log.jsonl") if "eval/cer" in r]
    expected = api.evaluate(torch_single, corpus, report=lambda line: None)
    assert [r["step"] for r in logged] == [3]
    assert logged[0]["eval/cer"] == pytest.approx(expected["cer"]) and logged[0]["eval/wer"] == pytest.approx(expected["wer"])
    ours = read_safetensors(sharded / "checkpoint-3" / "optimizer.safetensors")
    theirs = read_safetensors(torch_single / "checkpoint-3" / "optimizer.safetensors")
    assert ours.keys() == theirs.keys()
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-7, rtol=1e-4, err_msg=name)


def test_fsdp_refuses_layerdrop_and_other_backends(tmp_path):
    pytest.importorskip("torch")
    from wav2vec2.backends.torch.training import TorchTrainer, new_model
    from wav2vec2.training import api
    from wav2vec2.training.loop import TrainSettings

    with pytest.raises(ValueError, match="fsdp is for the torch backend"):
        api.train(tmp_path / "train.jsonl", tmp_path / "out", model="base", backend="tensorflow", fsdp=True)
    with pytest.raises(ValueError, match=r"LayerDrop \(0.1\).*--layerdrop 0"):
        TorchTrainer("ctc", fsdp=True).init(new_model("ctc", tiny_config(layerdrop=0.1)), TrainSettings(max_steps=1))


def test_jax_two_host_devices_match_one(tmp_path, corpus):
    pytest.importorskip("flax")
    # One batch of 5 rows, updated 3 times (one shape to compile: JAX compiles slowly here); on 2
    # devices it is padded to 6 rows, the sixth weighing 0.
    five_rows = os.path.join(os.path.dirname(corpus), "five.jsonl")  # beside the audio it names
    with open(five_rows, "w") as f:
        f.writelines(open(corpus).readlines()[:5])
    # One device in this process; two forced host devices in a subprocess, with the cheap compile
    # settings this process has too (conftest): compiling, not running, is what costs here.
    single = train(tmp_path, five_rows, "single", "flax", batch_seconds=30)
    quick = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    parallel = train(tmp_path, five_rows, "mesh", "flax", batch_seconds=30,
                     env={"XLA_FLAGS": quick + " --xla_force_host_platform_device_count=2"})
    assert_same_run(parallel, single)


def test_tensorflow_two_logical_cpus_match_one(tmp_path, corpus):
    pytest.importorskip("tensorflow")
    single = train(tmp_path, corpus, "single", "tensorflow")
    parallel = train(tmp_path, corpus, "mirrored", "tensorflow", [sys.executable, "-c", TF_TWO_DEVICES])
    assert_same_run(parallel, single)
