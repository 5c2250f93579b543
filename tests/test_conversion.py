"""`wav2vec2 convert`: every pair of formats on every head, bit-exact chains, fairseq import, files the
reference loads, and bad input that leaves nothing half-written."""
import argparse
import errno
import os
import shutil
import json
import subprocess
import sys

from pathlib import Path

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
    assert main(["convert", str(src), str(tmp_path / "dst"), "--to", "flax"]) == 2
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


# ------------------------------------------------------------------------ the whole directory
def tree(directory):
    """{relative path: bytes} of every file below ``directory``."""
    from pathlib import Path

    directory = Path(directory)
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


ADAPTER_EXT = {"safetensors": "safetensors", "pytorch": "bin", "tensorflow": "h5", "flax": "msgpack"}
SIDE_FILES = {
    "README.md": b"# my model\n",
    ".gitattributes": b"*.bin filter=lfs\n",
    "preprocessor_config.json": json.dumps({"do_normalize": True, "feature_size": 1, "sampling_rate": 16000}).encode(),
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "added_tokens.json": b"{}",
    "training_args.bin": b"not a weight file, the user's",
    "language_model/attrs.json": b'{"alpha": 0.5}',
    "language_model/unigrams.txt": b"a\nb\n",
    "language_model/5gram.bin": b"\x00kenlm",
}


def make_mms_checkpoint(directory, fmt="safetensors", seed=0):
    """An MMS-style CTC checkpoint: attention adapters, per-language adapter files (two formats, two
    vocabulary sizes), a nested vocabulary and the usual side files. Returns (state, {lang: adapter})."""
    from wav2vec2.io.checkpoint import write_adapter

    config = small_config("stable", adapter_attn_dim=4, vocab_size=7)
    state = make_checkpoint(directory, config, "ctc", fmt, seed)
    adapters = {}
    for i, (lang, vocab_size, adapter_format) in enumerate([("eng", 7, "safetensors"), ("fra", 9, "pytorch")]):
        weights = random_weights(config.replace(vocab_size=vocab_size), "ctc", seed + 1 + i)
        adapters[lang] = {k: v for k, v in weights.items() if ".adapter_layer." in k or k.startswith("lm_head.")}
        write_adapter(adapters[lang], directory, lang, format=adapter_format)
    vocab = {"eng": {"<pad>": 0, "a": 1}, "fra": {"<pad>": 0, "é": 1}}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    for name, data in SIDE_FILES.items():
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_bytes(data)
    return state, adapters


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_other_file_is_carried_and_adapters_are_converted(tmp_path, fmt):
    from wav2vec2.io import read_adapter

    src = tmp_path / "src"
    state, adapters = make_mms_checkpoint(src)
    write_state_dict(state, src, format="tensorflow")  # another format's weights: replaced, not copied
    write_state_dict(state, src, format="pytorch", max_shard_size=20_000)  # and its shards
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")

    dst = convert(src, tmp_path / "dst", fmt)
    written = tree(dst)
    source = tree(src)
    expected_names = {*SIDE_FILES, "vocab.json", "config.json", FILE_OF[fmt],
                      f"adapter.eng.{ADAPTER_EXT[fmt]}", f"adapter.fra.{ADAPTER_EXT[fmt]}"}
    assert set(written) == expected_names
    for name in [*SIDE_FILES, "vocab.json"]:
        assert written[name] == source[name], name
    assert_same_state(read_state_dict(dst), state)
    for lang, adapter in adapters.items():
        assert_same_state(read_adapter(dst, lang), adapter)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mms_checkpoint_loads_with_target_lang_after_conversion(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    from wav2vec2.backends.torch import Wav2Vec2ForCTC

    src = tmp_path / "src"
    state, adapters = make_mms_checkpoint(src)
    dst = convert(src, tmp_path / "dst", fmt)
    model = Wav2Vec2ForCTC.from_pretrained(dst, target_lang="fra")
    assert model.config.vocab_size == 9 and model.target_lang == "fra"
    loaded = model.canonical_state_dict()
    assert_same_state({k: loaded[k] for k in adapters["fra"]}, adapters["fra"])
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 500)).astype(np.float32))
    expected = Wav2Vec2ForCTC.from_pretrained(src, target_lang="fra")
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, expected(x).logits, rtol=0, atol=0)


def test_converted_adapters_load_in_the_reference(tmp_path, reference):
    torch = pytest.importorskip("torch")
    src = tmp_path / "src"
    _, adapters = make_mms_checkpoint(src)
    dst = convert(src, tmp_path / "dst", "pytorch")
    # the reference needs ignore_mismatched_sizes when the language has another vocabulary size (as for MMS)
    model = reference.Wav2Vec2ForCTC.from_pretrained(dst, target_lang="fra", ignore_mismatched_sizes=True).eval()
    assert model.lm_head.out_features == 9
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), adapters["fra"]["lm_head.weight"])
    key = "wav2vec2.encoder.layers.1.adapter_layer.linear_1.weight"
    np.testing.assert_array_equal(model.state_dict()[key].numpy(), adapters["fra"][key])


def test_adapter_that_does_not_fit_the_config_is_named(tmp_path):
    from wav2vec2.io.checkpoint import write_adapter

    src = tmp_path / "src"
    _, adapters = make_mms_checkpoint(src)
    bad = dict(adapters["eng"])
    key = "wav2vec2.encoder.layers.0.adapter_layer.linear_1.weight"
    bad[key] = np.zeros((5, 16), np.float32)
    write_adapter(bad, src, "deu")
    with pytest.raises(ValueError, match=r"adapter 'deu'.*linear_1.weight has shape \(5, 16\), expected \(4, 16\)"):
        convert(src, tmp_path / "dst", "flax")
    assert not (tmp_path / "dst").exists()


def test_hub_repo_is_converted_with_all_its_files_but_other_weights_downloaded(tmp_path, monkeypatch):
    """A hub repo id: the weights come through hf_hub_download, every other file through one snapshot
    that leaves out all weight files (checked with huggingface_hub's own pattern matching)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    repo = tmp_path / "hub" / "org" / "mms"
    state, _ = make_mms_checkpoint(repo / "sub")
    write_state_dict(state, repo / "sub", format="tensorflow")  # on the hub beside it: never downloaded
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    downloaded = []

    def hf_hub_download(repo_id, filename, subfolder=None, **kwargs):
        name = f"{subfolder}/{filename}" if subfolder else filename
        if name not in files:
            raise EntryNotFoundError(f"{repo_id} has no {name}")
        downloaded.append(name)
        return str(repo / name)

    def snapshot_download(repo_id, allow_patterns=None, ignore_patterns=None, **kwargs):
        snapshot = tmp_path / "snapshot"
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            downloaded.append(name)
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / name, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    dst = convert("org/mms", tmp_path / "dst", "flax", subfolder="sub")
    assert "sub/tf_model.h5" not in downloaded and downloaded.count("sub/model.safetensors") == 1
    assert {n for n in tree(dst) if "adapter" in n} == {"adapter.eng.msgpack", "adapter.fra.msgpack"}
    assert all(tree(dst)[name] == tree(repo / "sub")[name] for name in [*SIDE_FILES, "vocab.json"])
    assert_same_state(read_state_dict(dst), state)


# ------------------------------------------------------------------------------ overwrite, whole
@pytest.fixture
def old_and_new(tmp_path):
    """(src, dst, tree of the old dst, tree of what converting src to flax gives)."""
    src = tmp_path / "src"
    make_mms_checkpoint(src)
    dst = tmp_path / "dst"
    make_checkpoint(dst, small_config("base"), "model", "pytorch", seed=5)
    (dst / "notes.txt").write_text("the old one")
    new = tree(convert(src, tmp_path / "reference-new", "flax"))
    shutil.rmtree(tmp_path / "reference-new")
    return src, dst, tree(dst), new


def test_overwrite_replaces_dst_whole(tmp_path, old_and_new):
    src, dst, _, new = old_and_new
    convert(src, dst, "flax", overwrite=True)
    assert tree(dst) == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def _fail(*args, **kwargs):
    raise OSError(errno.EIO, "injected failure")


FAILURES = {
    "copy side files": ("wav2vec2.conversion._copy_carried_files", _fail),
    "config": ("wav2vec2.config.Wav2Vec2Config.save_pretrained", _fail),
    "weights": ("wav2vec2.conversion.write_state_dict", _fail),
    "adapters": ("wav2vec2.conversion.write_adapter", _fail),
    "os.replace in the writers": ("os.replace", _fail),
    "flush": ("wav2vec2.io.staging._fsync_tree", _fail),
    "exchange": ("wav2vec2.io.staging._exchange", _fail),
}


@pytest.mark.parametrize("step", list(FAILURES))
def test_failure_at_any_step_leaves_the_old_dst(tmp_path, old_and_new, monkeypatch, step):
    src, dst, old, _ = old_and_new
    monkeypatch.setattr(*FAILURES[step])
    with pytest.raises(OSError, match="injected failure"):
        convert(src, dst, "flax", overwrite=True)
    monkeypatch.undo()
    assert tree(dst) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]  # no staging left


def test_two_rename_fallback_puts_the_old_dst_back_when_the_second_rename_fails(tmp_path, old_and_new, monkeypatch):
    import wav2vec2.io.staging as staging

    src, dst, old, new = old_and_new
    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)  # a system without RENAME_EXCHANGE
    renames = []
    real_rename = os.rename

    def second_rename_fails(a, b):
        renames.append((a, b))
        if len(renames) == 2:
            raise OSError(errno.EIO, "injected failure")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError, match="injected failure"):
        convert(src, dst, "flax", overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert tree(dst) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]
    convert(src, dst, "flax", overwrite=True)  # and the fallback's success path
    assert tree(dst) == new


KILL_SCRIPT = """
import os, sys, time
import wav2vec2.conversion as conversion
import wav2vec2.io.staging as staging

src, dst, stop, fallback = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"

def mark(name):
    print(name, flush=True)
    if name == stop:
        time.sleep(120)  # killed here

def around(name, function):
    def wrapped(*args, **kwargs):
        mark("before " + name)
        result = function(*args, **kwargs)
        mark("after " + name)
        return result
    return wrapped

for name in ("write_state_dict", "write_adapter"):
    setattr(conversion, name, around(name, getattr(conversion, name)))
staging.replace_directory = around("replace_directory", staging.replace_directory)
if fallback:
    staging._exchange = lambda a, b: False
    staging.os.rename = around("rename", os.rename)
conversion.convert(src, dst, "flax", overwrite=True)
mark("done")
"""


@pytest.mark.parametrize("stop, fallback", [
    ("before write_state_dict", False), ("after write_adapter", False), ("before replace_directory", False),
    ("after replace_directory", False), ("after rename", True),
])
def test_kill_9_at_any_moment_leaves_the_old_or_the_new_dst(tmp_path, old_and_new, stop, fallback):
    import signal

    src, dst, old, new = old_and_new
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(dst), stop, str(int(fallback))],
                             stdout=subprocess.PIPE, text=True)
    seen = []
    for line in child.stdout:
        seen.append(line.strip())
        if seen[-1] == stop:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert seen[-1] == stop, seen
    from wav2vec2.io.staging import recover_interrupted

    recover_interrupted(dst)  # what the next run does first
    assert tree(dst) in (old, new)
    if stop.startswith("before"):
        assert tree(dst) == old
    # the next run is not disturbed by what the killed one left, and cleans it up
    convert(src, dst, "flax", overwrite=True)
    assert tree(dst) == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_staging_of_a_live_run_is_left_alone(tmp_path, old_and_new):
    import socket

    src, dst, _, new = old_and_new
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".dst.convert-{socket.gethostname()}-{sleeper.pid}-abc123"
        other_host = tmp_path / f".dst.convert-elsewhere.example-1-abc123"
        live.mkdir()
        other_host.mkdir()
        convert(src, dst, "flax", overwrite=True)
        assert live.is_dir() and other_host.is_dir() and tree(dst) == new
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("case", ["same", "dst inside src", "src inside dst", "symlink to src", "dict inside dst", "cwd"])
def test_paths_that_would_destroy_the_source_are_refused_before_anything_is_touched(tmp_path, case, monkeypatch):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "ctc", "safetensors")
    before = tree(tmp_path)
    kwargs = {}
    if case == "same":
        dst = src
    elif case == "dst inside src":
        dst = src / "converted"
    elif case == "src inside dst":
        dst = tmp_path
    elif case == "cwd":
        dst = tmp_path / "here"
        (dst / "below").mkdir(parents=True)
        monkeypatch.chdir(dst / "below")
        before = tree(tmp_path)
    elif case == "symlink to src":
        dst = tmp_path / "link"
        dst.symlink_to(src, target_is_directory=True)
        before = tree(tmp_path)
    else:
        dst = tmp_path / "out"
        dst.mkdir()
        (dst / "dict.ltr.txt").write_text("A 1\n")
        kwargs["dict_path"] = dst / "dict.ltr.txt"
        before = tree(tmp_path)
    with pytest.raises(ValueError, match="same place|lies inside|current directory"):
        convert(src, dst, "flax", overwrite=True, **kwargs)
    assert tree(tmp_path) == before
    argv = ["convert", str(src), str(dst), "--to", "flax", "--overwrite"]
    if kwargs:
        argv += ["--dict", str(kwargs["dict_path"])]
    assert main(argv) == 2
    assert tree(tmp_path) == before


def test_dst_that_is_a_file_is_refused(tmp_path):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "model", "safetensors")
    (tmp_path / "dst").write_text("mine")
    with pytest.raises(FileExistsError, match="not a directory"):
        convert(src, tmp_path / "dst", "flax", overwrite=True)
    assert (tmp_path / "dst").read_text() == "mine"


# ------------------------------------------------------------------------------------ the CLI
def _cli(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_cli_exit_statuses_and_messages(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    make_checkpoint(src, small_config("base"), "ctc", "safetensors")
    (tmp_path / "empty").mkdir()
    small_config("base").save_pretrained(tmp_path / "no-weights")
    cases = [
        (["convert", str(tmp_path / "missing"), str(tmp_path / "a")], "missing"),
        (["convert", str(tmp_path / "no-weights"), str(tmp_path / "a")], "no weight file"),
        (["convert", str(src), str(tmp_path / "a"), "--max-shard-size", "lots"], "max_shard_size"),
        (["convert", str(src), str(tmp_path / "a"), "--dict", str(tmp_path / "d.txt")], "--dict is for fairseq"),
        (["convert", str(src), str(tmp_path / "empty"), "--to", "flax"], None),  # an empty DST is fine
    ]
    for argv, words in cases:
        status, err = _cli(argv, capsys)
        assert (status, words is None or words in err) == (2 if words else 0, True), (argv, err)
        assert not (tmp_path / "a").exists()
    status, err = _cli(["convert", str(src), str(tmp_path / "a"), "--to", "onnx"], capsys)
    assert status == 2 and "--to" in err  # argparse's own status for options, returned by main()

    import wav2vec2.conversion as conversion

    def disk_full(state, directory, format, max_shard_size=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(conversion, "write_state_dict", disk_full)
    status, err = _cli(["convert", str(src), str(tmp_path / "a")], capsys)
    assert status == 1 and "No space left on device" in err and "cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "no-weights", "src"]
    assert (tmp_path / "empty" / "flax_model.msgpack").is_file()


def test_cli_in_a_subprocess_never_shows_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "wav2vec2", "convert", str(tmp_path / "nothing"), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "wav2vec2 convert: error:" in result.stderr


# --------------------------------------------------------------------- fairseq, end to end
FAIRSEQ_CFGS = json.loads((Path(__file__).parent / "data" / "fairseq_finetuned_cfgs.json").read_text())
# Sizes of small_config substituted into the published settings, so that the test runs in a second.
SMALL_SIZES = dict(encoder_embed_dim=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_embed_dim=20,
                   conv_feature_layers="[(8, 8, 4)] + [(8, 3, 2)] * 2", conv_pos=6, conv_pos_groups=2,
                   final_dim=6, latent_vars=5)
# LibriSpeech's dict.ltr.txt, in its order (most frequent first); fairseq puts <s>, <pad>, </s>, <unk> before it.
LETTERS = list("|ETAONIHSRDLUMWCFGYPBVK'XJQZ")
FAIRSEQ_SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>", *LETTERS]


def fairseq_finetuned_checkpoint(tmp_path, name):
    """(path of a fine-tuned .pt built from a published cfg with small sizes, dict path, canonical state,
    the config of the model that cfg describes, the cfg's normalize)."""
    import copy

    omegaconf = pytest.importorskip("omegaconf")
    torch = pytest.importorskip("torch")
    from test_io_fairseq import to_fairseq

    model_cfg = copy.deepcopy(FAIRSEQ_CFGS[name]["model"])
    pretraining = model_cfg["w2v_args"]["model"]
    pretraining.update(SMALL_SIZES)
    stable = pretraining["layer_norm_first"]
    config = small_config("stable" if stable else "base", vocab_size=len(FAIRSEQ_SYMBOLS))
    state = random_weights(config, "ctc", seed=3)
    state["lm_head.bias"][1:4] -= 1e4  # <pad>, </s>, <unk> of fairseq never win, as in a trained head
    task = {"_name": "audio_finetuning", "normalize": model_cfg["normalize"], "labels": "ltr", "sample_rate": 16000}
    cfg = omegaconf.OmegaConf.create({"model": model_cfg, "task": task, "common": {"seed": 1}})
    path = tmp_path / f"{name}.pt"
    torch.save({"model": to_fairseq(state, stable, finetuned=True), "cfg": cfg, "args": None}, path)
    dict_path = tmp_path / "dict.ltr.txt"
    dict_path.write_text("".join(f"{t} {1000 - i}\n" for i, t in enumerate(LETTERS)))
    return path, dict_path, state, config, model_cfg["normalize"]


def fairseq_greedy_text(logits) -> str:
    """fairseq's viterbi decoding of one utterance with post_process="letter", spelled out."""
    ids = [int(i) for i in logits.argmax(-1)]
    ids = [i for j, i in enumerate(ids) if j == 0 or i != ids[j - 1]]  # merge repeats
    symbols = [FAIRSEQ_SYMBOLS[i] for i in ids if i != 0]  # drop fairseq's blank, id 0
    return "".join(symbols).replace("|", " ").strip()


@pytest.mark.parametrize("name", ["wav2vec_small_960h", "wav2vec_large_lv60k_self_960h"])
def test_fairseq_checkpoint_converts_to_a_directory_that_transcribes(tmp_path, name, capsys):
    torch = pytest.importorskip("torch")
    soundfile = pytest.importorskip("soundfile")
    from wav2vec2 import Wav2Vec2Processor
    from wav2vec2.backends.torch import Wav2Vec2ForCTC

    pt_path, dict_path, state, config, normalize = fairseq_finetuned_checkpoint(tmp_path, name)
    out = tmp_path / "converted"
    assert main(["convert", str(pt_path), str(out), "--dict", str(dict_path)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "tokenizer_config.json",
        "special_tokens_map.json",
    }
    # fairseq's ids, with its blank (id 0, "<s>") named <pad>, the blank here
    assert json.loads((out / "vocab.json").read_text()) == {
        "<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{t: 4 + i for i, t in enumerate(LETTERS)}}
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["do_normalize"] is normalize
    assert preprocessor["return_attention_mask"] is (config.feat_extract_norm == "layer")
    saved = json.loads((out / "config.json").read_text())
    assert (saved["pad_token_id"], saved["bos_token_id"], saved["eos_token_id"], saved["vocab_size"]) == (0, 1, 2, 32)

    # By hand: the fairseq weights in the model the cfg describes, on the waveform fairseq feeds it.
    audio = np.random.default_rng(4).standard_normal(3200).astype(np.float32)  # unit variance: the eps hardly matters
    waveform = torch.from_numpy(audio)[None]
    if normalize:
        waveform = torch.nn.functional.layer_norm(waveform, waveform.shape[-1:])  # fairseq's normalisation
    by_hand = Wav2Vec2ForCTC(config).eval()
    by_hand.load_canonical_state_dict(state)
    with torch.no_grad():
        expected_logits = by_hand(waveform).logits[0]
    expected_text = fairseq_greedy_text(expected_logits)
    assert len(expected_text.replace(" ", "")) > 5  # random weights still spell something

    processor = Wav2Vec2Processor.from_pretrained(out)
    model = Wav2Vec2ForCTC.from_pretrained(out)
    inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(inputs.input_values, attention_mask=inputs.get("attention_mask")).logits[0]
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)  # eps 1e-7 vs fairseq's 1e-5
    assert processor.batch_decode(logits.argmax(-1)[None].numpy()) == [expected_text]

    wav = tmp_path / "speech.wav"
    soundfile.write(wav, audio, 16000, subtype="FLOAT")
    capsys.readouterr()
    # fp32, as the oracle: the default (auto) is bf16 on an AMX CPU, which moves these random weights' near-ties
    assert main(["transcribe", str(wav), "--model", str(out), "--precision", "fp32", "--no-progress"]) == 0
    assert capsys.readouterr().out == expected_text + "\n"
    # The .pt and its dictionary transcribe directly, without converting first.
    assert main(["transcribe", str(wav), "--model", str(pt_path), "--dict", str(dict_path), "--precision", "fp32",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out == expected_text + "\n"


def test_transcribing_a_fairseq_checkpoint_needs_its_dictionary(tmp_path, capsys):
    pytest.importorskip("soundfile")
    pt_path, dict_path, *_ = fairseq_finetuned_checkpoint(tmp_path, "wav2vec_small_960h")
    wav = tmp_path / "speech.wav"
    import soundfile

    soundfile.write(wav, np.zeros(3200, dtype=np.float32), 16000)
    assert main(["transcribe", str(wav), "--model", str(pt_path), "--no-progress"]) == 2
    assert "--dict" in capsys.readouterr().err


def test_from_fairseq_gives_the_pieces_from_python(tmp_path):
    from wav2vec2.conversion import from_fairseq

    pt_path, dict_path, state, config, normalize = fairseq_finetuned_checkpoint(tmp_path, "wav2vec_small_960h")
    got_config, got_state, feature_extractor, tokenizer = from_fairseq(pt_path, dict_path)
    assert_same_state(got_state, state)
    assert (got_config.vocab_size, got_config.pad_token_id, got_config.hidden_size) == (32, 0, config.hidden_size)
    assert feature_extractor.do_normalize is normalize is False and feature_extractor.return_attention_mask is False
    assert tokenizer.pad_token_id == 0 and tokenizer.word_delimiter_token_id == 4
    assert tokenizer.decode([5, 5, 0, 5, 4, 6]) == "EE T"
    assert from_fairseq(pt_path)[3] is None


def test_fairseq_dictionary_that_does_not_fit_the_head_is_named(tmp_path, capsys):
    pt_path, dict_path, *_ = fairseq_finetuned_checkpoint(tmp_path, "wav2vec_small_960h")
    dict_path.write_text("A 5\nB 3\n")
    status = main(["convert", str(pt_path), str(tmp_path / "out"), "--dict", str(dict_path)])
    err = capsys.readouterr().err
    assert status == 2 and "dict.ltr.txt: 6 symbols" in err and "32 outputs" in err
    assert not (tmp_path / "out").exists()


def test_fairseq_checkpoint_without_dictionary_says_what_is_missing(tmp_path, caplog):
    pt_path, *_ = fairseq_finetuned_checkpoint(tmp_path, "wav2vec_small_960h")
    out = convert(pt_path, tmp_path / "out")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert "--dict dict.ltr.txt" in caplog.text


@pytest.mark.parametrize("to", FORMATS)
def test_bfloat16_checkpoints_convert_to_every_format(tmp_path, to):
    """bf16 weights survive every format: bfloat16 where the format has it, float32 (exact) in HDF5."""
    import ml_dtypes

    src = tmp_path / "src"
    config = small_config("base")
    state = {k: v.astype(ml_dtypes.bfloat16) for k, v in random_weights(config, "ctc").items()}
    config.save_pretrained(src)
    write_state_dict(state, src, format="safetensors")
    convert(src, tmp_path / "dst", to=to)
    back = read_state_dict(tmp_path / "dst")
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key].astype(np.float32), value.astype(np.float32), err_msg=key)
        assert back[key].dtype == (np.float32 if to == "tensorflow" else value.dtype), key
