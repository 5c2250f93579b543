"""`wav2vec2 convert`: every pair of formats on every head, bit-exact chains, fairseq import, files the
reference loads, and bad input that leaves nothing half-written."""
import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import HEADS, reference_config, small_config
from conformance.runner import random_weights
from wav2vec2.cli import main
from wav2vec2.conversion import FORMATS, convert, infer_head
from wav2vec2.io import read_state_dict, write_state_dict

FILE_OF = {"safetensors": "model.safetensors", "pytorch": "pytorch_model.bin",
           "tensorflow": "tf_model.h5", "flax": "flax_model.msgpack"}


def make_checkpoint(directory, config, head, fmt, seed=0):
    state = random_weights(config, head, seed)
    config.save_pretrained(directory)
    write_state_dict(state, directory, format=fmt)
    (directory / "vocab.json").write_text(json.dumps({"<pad>": 0, "a": 1}))
    return state


def assert_same_state(got, expected):
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("src_format", FORMATS)
def test_every_pair_is_bit_exact(tmp_path, head, src_format):
    config = small_config("stable" if head in ("ctc", "pretraining") else "base", adapter_attn_dim=None)
    src = tmp_path / "src"
    expected = make_checkpoint(src, config, head, src_format)
    for dst_format in FORMATS:
        dst = tmp_path / f"to-{dst_format}"
        convert(src, dst, dst_format)
        assert (dst / FILE_OF[dst_format]).is_file()
        assert (dst / "vocab.json").read_text() == (src / "vocab.json").read_text()
        assert json.loads((dst / "config.json").read_text()) == json.loads((src / "config.json").read_text())
        assert infer_head(read_state_dict(dst)) == head
        assert_same_state(read_state_dict(dst), expected)


def test_chain_of_conversions_returns_the_same_tensors(tmp_path):
    config = small_config("stable", adapter_attn_dim=4, add_adapter=True, output_hidden_size=12)
    src = tmp_path / "0"
    expected = make_checkpoint(src, config, "ctc", "safetensors")
    previous = src
    for i, fmt in enumerate(["tensorflow", "flax", "pytorch", "tensorflow", "safetensors"], 1):
        previous = convert(previous, tmp_path / str(i), fmt)
    assert_same_state(read_state_dict(previous), expected)
    assert (tmp_path / "0" / "model.safetensors").read_bytes() == (previous / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def reference():
    return pytest.importorskip("transformers")


@pytest.mark.parametrize("fmt", FORMATS)
def test_converted_files_load_in_the_reference(tmp_path, reference, fmt):
    torch = pytest.importorskip("torch")
    config = small_config("stable")  # the one architecture the reference Flax runs
    src = tmp_path / "src"
    state = make_checkpoint(src, config, "ctc", "safetensors")
    expected_model = reference.Wav2Vec2ForCTC(reference_config(config)).eval()
    expected_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    x = np.random.default_rng(1).standard_normal((2, 700)).astype(np.float32)
    with torch.no_grad():
        expected = expected_model(torch.from_numpy(x)).logits.numpy()

    dst = convert(src, tmp_path / "dst", fmt)
    if fmt in ("safetensors", "pytorch"):
        model = reference.Wav2Vec2ForCTC.from_pretrained(dst).eval()
        with torch.no_grad():
            got = model(torch.from_numpy(x)).logits.numpy()
    elif fmt == "tensorflow":
        got = reference.TFWav2Vec2ForCTC.from_pretrained(dst)(x).logits.numpy()
    else:
        got = np.asarray(reference.FlaxWav2Vec2ForCTC.from_pretrained(dst)(x).logits)
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


def test_converted_files_load_in_our_backends(tmp_path):
    config = small_config("base")
    src = tmp_path / "src"
    state = make_checkpoint(src, config, "ctc", "flax")
    dst = convert(src, tmp_path / "dst", "pytorch")
    pytest.importorskip("torch")
    from wav2vec2.backends.torch import Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC.from_pretrained(dst)
    assert_same_state(model.canonical_state_dict(), state)


def test_fairseq_checkpoint_converts_and_runs_in_the_reference(tmp_path, reference):
    torch = pytest.importorskip("torch")
    from test_io_fairseq import model_settings, to_fairseq

    config = small_config("base", vocab_size=9)
    model = reference.Wav2Vec2ForCTC(reference_config(config)).eval()
    state = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"):
             v.numpy() for k, v in model.state_dict().items()}
    args = argparse.Namespace(
        arch="wav2vec_ctc", mask_prob=0.5, layerdrop=0.1, final_dropout=0.0, dropout=0.0,
        w2v_args=argparse.Namespace(**{k: v for k, v in model_settings(config).items() if k != "_name"}, arch="wav2vec2"),
    )
    path = tmp_path / "finetuned.pt"
    torch.save({"model": to_fairseq(state, False, finetuned=True), "args": args, "cfg": None}, path)

    assert main(["convert", str(path), str(tmp_path / "hf"), "--to", "safetensors"]) == 0
    loaded = reference.Wav2Vec2ForCTC.from_pretrained(tmp_path / "hf").eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 500)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_conversion_needs_no_framework(tmp_path):
    config = small_config("stable")
    src = tmp_path / "src"
    expected = make_checkpoint(src, config, "pretraining", "tensorflow")
    script = f"""
import sys
for name in ("torch", "tensorflow", "jax", "flax", "keras", "transformers"):
    sys.modules[name] = None  # importing any of them now fails
from wav2vec2.conversion import convert
for fmt in ("flax", "pytorch", "safetensors"):
    convert({str(src)!r}, {str(tmp_path)!r} + "/" + fmt, fmt)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    for fmt in ("flax", "pytorch", "safetensors"):
        assert_same_state(read_state_dict(tmp_path / fmt), expected)


# ------------------------------------------------------------------------------------ bad input
def test_directory_without_weights_is_named(tmp_path):
    small_config("base").save_pretrained(tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="src"):
        convert(tmp_path / "src", tmp_path / "dst", "flax")
    assert not (tmp_path / "dst").exists()


def test_shape_mismatch_with_config_names_the_key(tmp_path):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "ctc", "safetensors")
    small_config("base", vocab_size=30).save_pretrained(src)  # the config no longer fits lm_head
    with pytest.raises(ValueError, match="lm_head.weight"):
        convert(src, tmp_path / "dst", "tensorflow")
    assert not (tmp_path / "dst").exists()


def test_unknown_key_is_named(tmp_path):
    config = small_config("base")
    src = tmp_path / "src"
    state = random_weights(config, "ctc")
    state["lm_head.extra_scale"] = np.ones(3, np.float32)
    config.save_pretrained(src)
    write_state_dict(state, src, format="safetensors")
    with pytest.raises(ValueError, match="lm_head.extra_scale"):
        convert(src, tmp_path / "dst", "flax")


def test_truncated_file_is_named_and_dst_untouched(tmp_path):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "model", "safetensors")
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises((ValueError, OSError), match="model.safetensors"):
        convert(src, dst, "flax", overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]  # no staging left behind


def test_failure_while_writing_leaves_no_half_written_dst(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "model", "safetensors")
    import wav2vec2.conversion as conversion

    def broken_write(state, directory, format, max_shard_size=None):
        (directory / "tf_model.h5").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(conversion, "write_state_dict", broken_write)
    with pytest.raises(OSError, match="disk full"):
        convert(src, tmp_path / "dst", "tensorflow")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_existing_dst_is_not_overwritten_without_asking(tmp_path, capsys):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "model", "safetensors")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("keep")
    assert main(["convert", str(src), str(tmp_path / "dst"), "--to", "flax"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "dst" / "notes.txt").read_text() == "keep"
    assert main(["convert", str(src), str(tmp_path / "dst"), "--to", "flax", "--overwrite"]) == 0
    assert (tmp_path / "dst" / "flax_model.msgpack").is_file() and not (tmp_path / "dst" / "notes.txt").exists()


def test_sharded_output(tmp_path):
    config = small_config("base")
    src = tmp_path / "src"
    expected = make_checkpoint(src, config, "ctc", "tensorflow")
    dst = convert(src, tmp_path / "dst", "safetensors", max_shard_size=20_000)
    assert (dst / "model.safetensors.index.json").is_file()
    assert_same_state(read_state_dict(dst), expected)
