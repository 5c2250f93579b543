"""`wav2vec2 export`: ONNX run by ONNX Runtime and OpenVINO, SavedModel and TFLite run by TensorFlow,
each against the fp32 torch model on the same weights (padded batches included), and bad options.

The oracle is the torch backend in float32 (itself checked against the reference elsewhere), within
the conformance table's float32 tolerance; int8 is checked against a loose bound and for its ops.
"""
import json
import os

import numpy as np
import pytest

from conformance.runner import random_weights
from conformance.tolerances import TOLERANCES
from conftest import padded_batch, small_config
from wav2vec2.cli import main
from wav2vec2.io import write_state_dict

pytest.importorskip("torch")
torch = pytest.importorskip("torch")
export_module = pytest.importorskip("wav2vec2.export")


def _checkpoint(directory, arch, head, extractor_mask=None):
    config = small_config(arch)
    state = random_weights(config, head, seed=1)
    directory.mkdir()
    config.save_pretrained(directory)
    write_state_dict(state, directory)
    (directory / "vocab.json").write_text(json.dumps({"<pad>": 0, "a": 1}))
    if extractor_mask is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(
            {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True,
             "return_attention_mask": extractor_mask, "feature_extractor_type": "Wav2Vec2FeatureExtractor"}))
    return config, state


def _torch_outputs(config, head, state, values, mask):
    from wav2vec2.export import OUTPUTS, backend_model

    network = backend_model("torch", config, head, state)
    with torch.no_grad():
        output = network(torch.from_numpy(values), attention_mask=None if mask is None else torch.from_numpy(mask))
    return {name: getattr(output, name).numpy() for name in OUTPUTS[head]}


def assert_close(got, expected, tolerance=TOLERANCES[("float32", "head")]):
    atol, rtol = tolerance
    assert got.shape == expected.shape
    bound = atol + rtol * np.abs(expected).max()
    assert np.abs(got - expected).max() <= bound, (np.abs(got - expected).max(), bound)


# Lengths of a batch: the longest, one shorter, the shortest input the tiny model takes; then one alone
# of another length (the time and batch axes are dynamic).
BATCHES = [(1210, 900, 400), (777,)]


@pytest.fixture(scope="module")
def stable_ctc(tmp_path_factory):
    """A layer-norm CTC checkpoint (takes an attention mask) exported to ONNX."""
    root = tmp_path_factory.mktemp("stable")
    config, state = _checkpoint(root / "ckpt", "stable", "ctc", extractor_mask=True)
    out = export_module.export(root / "ckpt", root / "onnx", "onnx")
    return config, state, root, out


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A group-norm bare model (no attention mask, as the reference's extractor for it) exported to ONNX."""
    root = tmp_path_factory.mktemp("base")
    config, state = _checkpoint(root / "ckpt", "base", "model")
    out = export_module.export(root / "ckpt", root / "onnx", "onnx")
    return config, state, root, out


def _onnxruntime(path):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [i.name for i in session.get_inputs()], lambda feeds: dict(zip(names, session.run(None, feeds)))


def _openvino(path):
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(os.fspath(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    known = {"input_values", "attention_mask", "logits", "last_hidden_state", "embeddings"}

    def name(port):  # a port has several tensor names; the one the export gave it
        return sorted(port.get_names() & known)[0]

    names = [name(o) for o in compiled.outputs]
    inputs = [name(i) for i in compiled.inputs]
    return inputs, lambda feeds: {name: np.asarray(value) for name, value in zip(names, compiled(feeds).values())}


@pytest.mark.parametrize("runtime", [_onnxruntime, _openvino], ids=["onnxruntime", "openvino"])
def test_onnx_with_attention_mask_matches_torch_on_padded_batches(stable_ctc, runtime):
    config, state, _, out = stable_ctc
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx", "preprocessor_config.json", "vocab.json"]
    inputs, run = runtime(out / "model.onnx")
    assert inputs == ["input_values", "attention_mask"]
    for lengths in BATCHES:
        values, mask = padded_batch(lengths, mask_dtype=np.int32)
        got = run({"input_values": values, "attention_mask": mask})
        expected = _torch_outputs(config, "ctc", state, values, mask)
        assert list(got) == ["logits"]
        assert_close(got["logits"], expected["logits"])


@pytest.mark.parametrize("runtime", [_onnxruntime, _openvino], ids=["onnxruntime", "openvino"])
def test_onnx_without_attention_mask_matches_torch(base_model, runtime):
    config, state, _, out = base_model
    inputs, run = runtime(out / "model.onnx")
    assert inputs == ["input_values"]  # group-norm models take no mask (padding changes their output)
    for lengths in [(1210, 1210), (500,)]:
        values, _ = padded_batch(lengths, mask_dtype=np.int32)
        got = run({"input_values": values})
        assert_close(got["last_hidden_state"], _torch_outputs(config, "model", state, values, None)["last_hidden_state"])


def test_onnx_int8_from_the_command_line(stable_ctc, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime.quantization")
    config, state, root, _ = stable_ctc
    assert main(["export", str(root / "ckpt"), str(root / "int8"), "--to", "onnx", "--int8"]) == 0
    assert "wrote" in capsys.readouterr().out
    ops = {node.op_type for node in onnx.load(root / "int8" / "model.onnx").graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    _, run = _onnxruntime(root / "int8" / "model.onnx")
    values, mask = padded_batch(BATCHES[0], mask_dtype=np.int32)
    got = run({"input_values": values, "attention_mask": mask})["logits"]
    expected = _torch_outputs(config, "ctc", state, values, mask)["logits"]
    # int8 on 16-wide layers: a few percent of the logits' size (docs/performance.md reports base shapes)
    assert np.sqrt(np.mean((got - expected) ** 2)) < 0.05 * np.sqrt(np.mean(expected**2))
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.9


@pytest.fixture(scope="module")
def tensorflow_checkpoint(tmp_path_factory):
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("tf")
    config, state = _checkpoint(root / "ckpt", "stable", "ctc", extractor_mask=True)
    return config, state, root


def test_saved_model_serving_signature_matches_torch(tensorflow_checkpoint):
    import tensorflow as tf

    config, state, root = tensorflow_checkpoint
    export_module.export(root / "ckpt", root / "saved", "saved_model")
    serve = tf.saved_model.load(os.fspath(root / "saved" / "saved_model")).signatures["serving_default"]
    assert sorted(serve.structured_input_signature[1]) == ["attention_mask", "input_values"]
    for lengths in BATCHES:
        values, mask = padded_batch(lengths, mask_dtype=np.int32)
        got = serve(input_values=tf.constant(values), attention_mask=tf.constant(mask))
        assert_close(got["logits"].numpy(), _torch_outputs(config, "ctc", state, values, mask)["logits"])


def test_tflite_matches_torch(tensorflow_checkpoint):
    import tensorflow as tf

    config, state, root = tensorflow_checkpoint
    export_module.export(root / "ckpt", root / "tflite", "tflite")
    assert (root / "tflite" / "model.tflite").is_file() and not (root / "tflite" / "saved_model").exists()
    interpreter = tf.lite.Interpreter(model_path=os.fspath(root / "tflite" / "model.tflite"))
    for lengths in BATCHES:
        run = interpreter.get_signature_runner("serving_default")  # resized to each batch's shape
        values, mask = padded_batch(lengths, mask_dtype=np.int32)
        got = run(input_values=values, attention_mask=mask)
        assert_close(got["logits"], _torch_outputs(config, "ctc", state, values, mask)["logits"])


def _stablehlo(path):
    jax_export = pytest.importorskip("jax.export")
    return jax_export.deserialize(bytearray(path.read_bytes()))


def test_stablehlo_from_the_command_line_matches_torch_on_padded_batches(stable_ctc, capsys):
    config, state, root, _ = stable_ctc
    assert main(["export", str(root / "ckpt"), str(root / "hlo"), "--to", "stablehlo"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(os.listdir(root / "hlo")) == ["config.json", "model.stablehlo", "preprocessor_config.json",
                                                "vocab.json"]
    exported = _stablehlo(root / "hlo" / "model.stablehlo")
    assert set(exported.platforms) == {"cpu", "cuda"} and len(exported.in_avals) == 2
    for lengths in BATCHES:  # one program for every batch size and length
        values, mask = padded_batch(lengths, mask_dtype=np.int32)
        got = exported.call(values, mask)
        assert list(got) == ["logits"]
        assert_close(np.asarray(got["logits"]), _torch_outputs(config, "ctc", state, values, mask)["logits"])
    too_short = np.zeros((1, export_module.shortest_input(config, "ctc") - 1), np.float32)
    with pytest.raises(Exception, match="shape"):  # refused by the program's shape constraint, not garbage
        exported.call(too_short, np.ones_like(too_short, np.int32))


def test_stablehlo_without_attention_mask_and_two_outputs(tmp_path):
    config, state = _checkpoint(tmp_path / "ckpt", "base", "xvector")
    exported = _stablehlo(export_module.export(tmp_path / "ckpt", tmp_path / "hlo", "stablehlo") / "model.stablehlo")
    assert len(exported.in_avals) == 1
    for lengths in [(1210, 1210), (500,)]:
        values, _ = padded_batch(lengths, mask_dtype=np.int32)
        got = exported.call(values)
        expected = _torch_outputs(config, "xvector", state, values, None)
        assert sorted(got) == ["embeddings", "logits"]
        for name in expected:
            assert_close(np.asarray(got[name]), expected[name])


# ---------------------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("extra, message", [
    (["--to", "keras"], "invalid choice"),
    (["--to", "saved_model", "--int8"], "--int8 is for --to onnx"),
    (["--to", "stablehlo", "--int8"], "--int8 is for --to onnx"),
    (["--to", "onnx", "--opset", "9"], "must be 18 or newer"),
    (["--to", "tflite", "--opset", "18"], "--opset is for --to onnx"),
    ([], "required"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, extra, message):
    _checkpoint(tmp_path / "ckpt", "stable", "ctc")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_models_and_destinations_exit_2(tmp_path, capsys):
    _checkpoint(tmp_path / "ckpt", "stable", "ctc")
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), str(tmp_path / "out"), "--to", "onnx"]) == 2
    assert "config.json" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "taken"), "--to", "onnx"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert os.listdir(tmp_path / "taken") == ["keep.txt"]
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "ckpt" / "inside"), "--to", "onnx"]) == 2
    assert "inside" in capsys.readouterr().err


def test_a_failed_export_leaves_the_old_output_whole(tmp_path, monkeypatch):
    _checkpoint(tmp_path / "ckpt", "stable", "ctc")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.onnx").write_text("the old export")

    def fail(config, head, state, with_mask, directory, **kwargs):
        (directory / "model.onnx").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_write_onnx", fail)
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "out"), "--to", "onnx", "--overwrite"]) == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "out"]  # no staging folder left behind
    assert (tmp_path / "out" / "model.onnx").read_text() == "the old export"


# ---------------------------------------------------------------------------------------- transcription
def test_exported_onnx_transcribes_as_the_torch_backend(tmp_path, capsys):
    """`transcribe --backend onnxruntime` on an export: the torch backend's transcript, word times included."""
    pytest.importorskip("onnxruntime")
    from speech_checkpoints import run_cli, save_reference_checkpoint, speak, to_16k
    import soundfile

    checkpoint = tmp_path / "ctc"
    save_reference_checkpoint(str(checkpoint), local=False)
    files = []
    for i, sentence in enumerate(["the quick brown fox jumps over the lazy dog", "pack my box with five dozen jugs"]):
        files.append(str(tmp_path / f"sentence{i}.wav"))
        soundfile.write(files[-1], to_16k(*speak(sentence)), 16000, subtype="FLOAT")
    assert main(["export", str(checkpoint), str(tmp_path / "onnx"), "--to", "onnx"]) == 0
    capsys.readouterr()
    records = {}
    for backend, model in [("torch", checkpoint), ("onnxruntime", tmp_path / "onnx")]:
        code, out, err = run_cli(capsys, *files, "--model", str(model), "--backend", backend, "--format", "json",
                                 "--batch-size", "2")
        assert code == 0, err
        records[backend] = [json.loads(line) for line in out.splitlines()]
    assert all(r["words"] for r in records["torch"]), "the test model should produce words"
    assert [r["text"] for r in records["onnxruntime"]] == [r["text"] for r in records["torch"]]
    assert [r["words"] for r in records["onnxruntime"]] == [r["words"] for r in records["torch"]]


def test_onnxruntime_backend_refuses_what_it_cannot_run(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _checkpoint(tmp_path / "ckpt", "stable", "ctc", extractor_mask=True)
    (tmp_path / "a.wav").write_bytes(b"")
    for extra, message in [([], "model.onnx"), (["--precision", "bf16"], "export it with --int8"),
                           (["--device", "tpu"], "device 'tpu' cannot be used with the onnxruntime backend")]:
        code = main(["transcribe", str(tmp_path / "a.wav"), "--model", str(tmp_path / "ckpt"),
                     "--backend", "onnxruntime", "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
