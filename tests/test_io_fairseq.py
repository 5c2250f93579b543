"""fairseq checkpoints built with the real key names and config containers, read without fairseq."""
import argparse
import sys
import types

import numpy as np
import pytest

from conftest import reference_config, small_config
from wav2vec2.io import read_fairseq, read_state_dict
from wav2vec2.io.fairseq import parse_conv_layers
from wav2vec2.spec import names

torch = pytest.importorskip("torch")


def fairseq_key(key: str) -> str:
    """The fairseq name of a canonical key, spelled out from fairseq's module tree (the test's oracle)."""
    body = key.startswith("wav2vec2.")
    key = key.removeprefix("wav2vec2.")
    replacements = [
        ("encoder.pos_conv_embed.conv", "encoder.pos_conv.0"),
        (".conv.weight", ".0.weight"), (".conv.bias", ".0.bias"),
        ("masked_spec_embed", "mask_emb"),
        ("feature_projection.projection", "post_extract_proj"),
        ("feature_projection.layer_norm", "layer_norm"),
        ("attention.", "self_attn."),
        (".feed_forward.intermediate_dense", ".fc1"), (".feed_forward.output_dense", ".fc2"),
        ("quantizer.codevectors", "quantizer.vars"),
        ("project_hid", "final_proj"),
    ]
    for old, new in replacements:
        key = key.replace(old, new)
    if "encoder.layers." in key:
        key = key.replace(".layer_norm.", ".self_attn_layer_norm.")
    return key, body


def to_fairseq(state, layer_norm_conv: bool, finetuned: bool):
    out = {}
    for key, value in state.items():
        name, body = fairseq_key(key)
        if "conv_layers." in name and ".layer_norm." in name:
            # group norm sits at index 2; layer norm is wrapped as index 2.1
            name = name.replace(".layer_norm.", ".2.1." if layer_norm_conv else ".2.")
        if finetuned:
            name = "w2v_encoder.w2v_model." + name if body else name.replace("lm_head", "w2v_encoder.proj")
        out[name] = torch.from_numpy(np.array(value))
    return out


def model_settings(config):
    conv = " + ".join(f"[({d}, {k}, {s})]" for d, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    return dict(
        _name="wav2vec2", extractor_mode="layer_norm" if config.feat_extract_norm == "layer" else "default",
        encoder_layers=config.num_hidden_layers, encoder_embed_dim=config.hidden_size,
        encoder_ffn_embed_dim=config.intermediate_size, encoder_attention_heads=config.num_attention_heads,
        activation_fn="gelu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, encoder_layerdrop=0.05,
        dropout_input=0.1, dropout_features=0.1, final_dim=config.proj_codevector_dim,
        layer_norm_first=config.do_stable_layer_norm, conv_feature_layers=conv, conv_bias=config.conv_bias,
        logit_temp=0.1, quantize_targets=True, latent_vars=config.num_codevectors_per_group,
        latent_groups=config.num_codevector_groups, latent_dim=config.codevector_dim, mask_length=10,
        mask_prob=0.65, mask_channel_prob=0.0, mask_channel_length=10, num_negatives=100,
        conv_pos=config.num_conv_pos_embeddings, conv_pos_groups=config.num_conv_pos_embedding_groups,
    )


@pytest.fixture
def fake_fairseq_module(monkeypatch):
    """A stand-in `fairseq.logging.meters` so the test can pickle a fairseq-defined object."""
    package = types.ModuleType("fairseq")
    module = types.ModuleType("fairseq.logging.meters")

    class AverageMeter:
        def __init__(self):
            self.val, self.count = 3.0, 2

    AverageMeter.__module__ = "fairseq.logging.meters"
    AverageMeter.__qualname__ = "AverageMeter"
    module.AverageMeter = AverageMeter
    monkeypatch.setitem(sys.modules, "fairseq", package)
    monkeypatch.setitem(sys.modules, "fairseq.logging", types.ModuleType("fairseq.logging"))
    monkeypatch.setitem(sys.modules, "fairseq.logging.meters", module)
    return AverageMeter


def reference_state(config, head):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cls = {"pretraining": transformers.Wav2Vec2ForPreTraining, "ctc": transformers.Wav2Vec2ForCTC}[head]
    model = cls(reference_config(config)).eval()
    return model, {names.normalize_key(k): v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["base", "stable"])
def test_pretrained_checkpoint_with_omegaconf_cfg(tmp_path, arch, fake_fairseq_module):
    omegaconf = pytest.importorskip("omegaconf")
    config = small_config(arch)
    _, expected = reference_state(config, "pretraining")
    cfg = omegaconf.OmegaConf.create({"common": {"seed": 1}, "model": model_settings(config), "task": {"_name": "audio_pretraining"}})
    checkpoint = {
        "model": to_fairseq(expected, config.feat_extract_norm == "layer", finetuned=False),
        "cfg": cfg,
        "args": None,
        "optimizer_history": [{"optimizer_name": "adam", "lr_scheduler_state": {"best": np.float64(2.5)}, "num_updates": 3}],
        "extra_state": {"metrics": {"train": fake_fairseq_module()}, "epoch": 4},
    }
    path = tmp_path / "wav2vec_small.pt"
    torch.save(checkpoint, path)

    got_config, state = read_fairseq(path)
    assert set(state) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    for field in ("conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
                  "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "num_codevectors_per_group",
                  "num_codevector_groups", "codevector_dim", "proj_codevector_dim"):
        assert getattr(got_config, field) == getattr(config, field), field
    assert got_config.layerdrop == 0.05 and got_config.mask_time_prob == 0.65
    assert names.canonical_shapes(got_config, "pretraining") == {k: v.shape for k, v in state.items()}
    # read_state_dict on the .pt gives the same weights
    assert set(read_state_dict(path)) == set(state)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy_torch_file"])
def test_finetuned_checkpoint_with_legacy_args_runs_in_reference(tmp_path, zip_format):
    config = small_config("base", vocab_size=9)
    model, expected = reference_state(config, "ctc")
    settings = model_settings(config)
    args = argparse.Namespace(
        arch="wav2vec_ctc", mask_prob=0.5, layerdrop=0.1, final_dropout=0.0, dropout=0.0,
        w2v_args=argparse.Namespace(**{k: v for k, v in settings.items() if k != "_name"}, arch="wav2vec2"),
    )
    path = tmp_path / "wav2vec_small_960h.pt"
    checkpoint = {"model": to_fairseq(expected, False, finetuned=True), "args": args, "cfg": None}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)

    got_config, state = read_fairseq(path)
    assert got_config.vocab_size == 9 and got_config.mask_time_prob == 0.5 and got_config.layerdrop == 0.1
    assert names.canonical_shapes(got_config, "ctc") == {k: v.shape for k, v in state.items()}
    transformers = pytest.importorskip("transformers")
    loaded = transformers.Wav2Vec2ForCTC(reference_config(got_config)).eval()
    loaded.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 400)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_unknown_fairseq_key_is_an_error_naming_file_and_key(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    config = small_config("base")
    _, expected = reference_state(config, "pretraining")
    model = to_fairseq(expected, False, finetuned=False)
    model["target_glu.0.weight"] = torch.zeros(2)
    path = tmp_path / "odd.pt"
    torch.save({"model": model, "cfg": omegaconf.OmegaConf.create({"model": model_settings(config)})}, path)
    with pytest.raises(ValueError, match=r"odd\.pt.*target_glu\.0\.weight"):
        read_fairseq(path)


def test_code_in_a_fairseq_checkpoint_is_refused(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, ("true",)

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": Evil()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt.*system"):
        read_fairseq(path)


def test_parse_conv_layers():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2") == (
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_layers("__import__('os').system('true')")


def test_settings_that_do_not_fit_the_weights_are_an_error(tmp_path):
    config = small_config("base")
    _, expected = reference_state(config, "pretraining")
    settings = model_settings(config)
    settings["encoder_ffn_embed_dim"] = 24  # the weights say 20
    path = tmp_path / "mismatch.pt"
    torch.save({"model": to_fairseq(expected, False, finetuned=False), "args": argparse.Namespace(**settings)}, path)
    with pytest.raises(ValueError, match=r"mismatch\.pt.*fc1|mismatch\.pt.*intermediate_dense\.weight: expected \(24, 16\), got \(20, 16\)"):
        read_fairseq(path)


def test_finetuned_checkpoint_without_pretraining_settings_is_an_error(tmp_path):
    path = tmp_path / "ft.pt"
    torch.save({"model": {"w2v_encoder.proj.weight": torch.zeros(3, 4)},
                "args": argparse.Namespace(arch="wav2vec_ctc", w2v_path="/somewhere/wav2vec_small.pt")}, path)
    with pytest.raises(ValueError, match=r"ft\.pt.*w2v_args"):
        read_fairseq(path)


# ------------------------------------------------------------------ dictionary and normalize
def test_dictionary_reads_as_fairseq_loads_it(tmp_path):
    from wav2vec2.io.fairseq import ctc_vocabulary, read_dictionary

    path = tmp_path / "dict.ltr.txt"
    # a token may hold spaces (the count is the last field); #fairseq:overwrite gives a known token a new id
    path.write_text("| 94802\nE 51860\nNEW YORK 7\nE 3 #fairseq:overwrite\n", encoding="utf-8")
    assert read_dictionary(path) == ["<s>", "<pad>", "</s>", "<unk>", "|", "E", "NEW YORK", "E"]
    # fairseq's blank is id 0 ("<s>"); here the blank is the pad token, so the two names trade ids
    assert ctc_vocabulary(read_dictionary(path)) == {
        "<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 7, "NEW YORK": 6}


@pytest.mark.parametrize("text, words", [
    ("E 5\nE 3\n", r"line 2: 'E' is already in the dictionary"),
    ("<unk> 1\n", r"line 1: '<unk>' is already"),
    ("E 5\nT\n", r"line 2: expected '<token> <count>"),
    ("E five\n", r"line 1: expected"),
    ("E 5\n\n", r"line 2: expected"),
])
def test_bad_dictionary_lines_are_named(tmp_path, text, words):
    from wav2vec2.io.fairseq import read_dictionary

    path = tmp_path / "dict.ltr.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"dict\.ltr\.txt, " + words):
        read_dictionary(path)
    path.write_bytes(b"\xff\xfe E 5\n")
    with pytest.raises(ValueError, match=r"dict\.ltr\.txt: not a UTF-8 text file"):
        read_dictionary(path)


def test_normalize_is_read_from_every_place_fairseq_keeps_it(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    from wav2vec2.io import torch_pickle
    from wav2vec2.io.fairseq import read_normalize

    def saved(**checkpoint):
        path = tmp_path / "model.pt"
        torch.save({"model": {}, **checkpoint}, path)
        return torch_pickle.load(path, allow_config_objects=True), path

    cfg = omegaconf.OmegaConf.create
    cases = [
        (dict(cfg=cfg({"task": {"normalize": True}, "model": {"normalize": False}})), True),  # the task's own
        (dict(cfg=cfg({"task": {"_name": "audio_finetuning"}, "model": {"normalize": True}})), True),
        (dict(cfg=cfg({"model": {"w2v_args": {"task": {"normalize": True}}}})), True),
        (dict(cfg=cfg({"task": {"normalize": False}, "model": {}})), False),
        (dict(cfg=cfg({"model": {}})), False),  # fairseq's default
        (dict(args=argparse.Namespace(normalize=True), cfg=None), True),
        (dict(args=argparse.Namespace(w2v_args=argparse.Namespace(normalize=True))), True),
        (dict(args=argparse.Namespace(arch="wav2vec2")), False),
    ]
    for checkpoint, expected in cases:
        assert read_normalize(*saved(**checkpoint)) is expected, checkpoint
    with pytest.raises(ValueError, match=r"model\.pt: task\.normalize must be true or false, got 'yes'"):
        read_normalize(*saved(cfg=cfg({"task": {"normalize": "yes"}})))


@pytest.fixture
def fairseq_dataclasses(monkeypatch):
    """fairseq-style structured configs (dataclasses with list and enum fields) in a stand-in
    `fairseq.dataclass.configs`, so omegaconf and torch.save pickle them as fairseq does."""
    import dataclasses
    import enum
    from typing import List, Optional

    modules = {name: types.ModuleType(name) for name in ("fairseq", "fairseq.dataclass", "fairseq.dataclass.configs")}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    configs = modules["fairseq.dataclass.configs"]

    def define(cls):
        cls.__module__, cls.__qualname__ = configs.__name__, cls.__name__
        setattr(configs, cls.__name__, cls)
        return cls

    extractor_mode = define(enum.Enum("ExtractorMode", {"default": "default", "layer_norm": "layer_norm"}))

    @define
    @dataclasses.dataclass
    class OptimizationConfig:
        max_update: int = 400000
        lr: List[float] = dataclasses.field(default_factory=lambda: [0.0005])
        update_freq: List[int] = dataclasses.field(default_factory=lambda: [1])

    return types.SimpleNamespace(extractor_mode=extractor_mode, optimization=OptimizationConfig, Optional=Optional)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy_torch_file"])
def test_cfg_as_fairseq_writes_it_dictconfig_with_lists_at_protocol_2(tmp_path, fairseq_dataclasses, zip_format):
    """A pickled DictConfig holding ListConfigs and enums: torch.save writes int/str as
    __builtin__.long/unicode, which the reader maps as Python's _compat_pickle does."""
    omegaconf = pytest.importorskip("omegaconf")
    config = small_config("base")
    _, expected = reference_state(config, "pretraining")
    settings = model_settings(config)
    settings["extractor_mode"] = fairseq_dataclasses.extractor_mode.default
    cfg = omegaconf.OmegaConf.create({
        "model": settings,
        "optimization": omegaconf.OmegaConf.structured(fairseq_dataclasses.optimization),
        "task": {"_name": "audio_pretraining", "normalize": False, "labels": ["ltr"], "sample_rate": 16000},
    })
    path = tmp_path / "wav2vec_small.pt"
    torch.save({"model": to_fairseq(expected, False, finetuned=False), "cfg": cfg}, path,
               _use_new_zipfile_serialization=zip_format)
    with open(path, "rb") as f:
        assert b"__builtin__" in f.read()  # the protocol-2 names this test is about

    got_config, state = read_fairseq(path)
    assert got_config.feat_extract_norm == "group" and got_config.conv_dim == config.conv_dim
    assert set(state) == set(expected)
    from wav2vec2.io import torch_pickle
    from wav2vec2.io.fairseq import plain

    cfg_plain = plain(torch_pickle.load(path, allow_config_objects=True)["cfg"])
    assert cfg_plain["optimization"] == {"max_update": 400000, "lr": [0.0005], "update_freq": [1]}
    assert cfg_plain["task"]["labels"] == ["ltr"] and cfg_plain["task"]["normalize"] is False
    assert cfg_plain["model"]["extractor_mode"] == "default"


def test_deeply_nested_cfg_is_a_value_error_naming_the_file(tmp_path):
    from fuzz.archives import Raw, Zip, dumps

    path = tmp_path / "deep.pt"  # built by opcodes: Python's own pickler recurses too deep for this
    path.write_bytes(Zip(dumps({"model": {}, "cfg": {"model": Raw(b"]" * 200_000 + b"a" * 199_999)}})).dumps())
    with pytest.raises(ValueError, match=r"deep\.pt: objects nested deeper than 100 levels"):
        read_fairseq(path)


def test_plain_bounds_nesting_and_survives_parent_references():
    from wav2vec2.io.fairseq import plain

    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper than 100 levels"):
        plain({"model": deep})
    shared = {"a": 1}
    parent = {"x": shared, "y": shared}
    parent["self"] = parent  # what omegaconf's _parent makes of a tree
    out = plain(parent)
    assert out["x"] == {"a": 1} and out["x"] is out["y"] and out["self"] is None


@pytest.mark.parametrize("spec", ["[(1, 1, 1)] * 1000000000000", "(" * 300 + "1" + ")" * 300, "+".join(["[(1,1,1)]"] * 400),
                                  "[(1, 2, 3.5)]", "[(1, 2)]", 5])
def test_conv_spec_is_bounded(spec):
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_layers(spec)
