import json
import math
import re
from pathlib import Path

import pytest

from wav2vec2 import Wav2Vec2Config
from wav2vec2.config import PRESETS

transformers = pytest.importorskip("transformers")


def test_defaults_equal_reference_defaults():
    ours = Wav2Vec2Config().to_dict()
    ref = transformers.Wav2Vec2Config().to_dict()
    for name in Wav2Vec2Config.field_names():
        if name == "id2label":
            assert {int(k): v for k, v in ours[name].items()} == ref[name]
        elif name in ref:
            expected = list(ref[name]) if isinstance(ref[name], tuple) else ref[name]
            assert ours[name] == expected, name


def test_every_reference_field_is_known():
    import inspect

    reference_fields = set(inspect.signature(transformers.Wav2Vec2Config.__init__).parameters) - {"self", "kwargs"}
    assert reference_fields <= set(Wav2Vec2Config.field_names())


def test_derived_values_match_reference():
    for name in PRESETS:
        ours = Wav2Vec2Config.preset(name)
        ref = transformers.Wav2Vec2Config(**ours.to_dict())
        assert ours.num_feat_extract_layers == ref.num_feat_extract_layers
        assert ours.inputs_to_logits_ratio == ref.inputs_to_logits_ratio == 320
        assert ours.num_labels == ref.num_labels


def test_reference_written_config_loads_and_round_trips(tmp_path):
    ref = transformers.Wav2Vec2Config(
        hidden_size=64, num_attention_heads=4, feat_extract_norm="layer", do_stable_layer_norm=True,
        adapter_attn_dim=8, id2label={0: "yes", 1: "no", 2: "maybe"}, architectures=["Wav2Vec2ForCTC"],
        some_future_key={"nested": [1, 2]},
    )
    ref.save_pretrained(tmp_path)
    ours = Wav2Vec2Config.from_pretrained(tmp_path)
    assert ours.hidden_size == 64 and ours.do_stable_layer_norm and ours.adapter_attn_dim == 8
    assert ours.id2label == {0: "yes", 1: "no", 2: "maybe"} and ours.num_labels == 3
    assert ours.extra["architectures"] == ["Wav2Vec2ForCTC"]
    assert ours.extra["some_future_key"] == {"nested": [1, 2]}

    out = tmp_path / "ours"
    ours.save_pretrained(out)
    written = json.loads((out / "config.json").read_text())
    assert written["some_future_key"] == {"nested": [1, 2]}
    assert written["model_type"] == "wav2vec2"
    back = transformers.Wav2Vec2Config.from_pretrained(out)
    ref_dict, back_dict = ref.to_dict(), back.to_dict()
    for key in set(ref_dict) - {"transformers_version"}:
        if key == "label2id" and ref_dict[key] is None:  # the reference leaves it unset; we derive it
            assert back_dict[key] == {"yes": 0, "no": 1, "maybe": 2}
            continue
        assert back_dict[key] == ref_dict[key], key
    assert Wav2Vec2Config.from_pretrained(out) == ours


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(conv_dim=(512, 512), conv_stride=(5, 2, 2), conv_kernel=(10, 3)), "conv_dim"),
        (dict(hidden_size=100, num_attention_heads=12), "hidden_size"),
        (dict(hidden_size=96, num_attention_heads=12, num_conv_pos_embedding_groups=7), "num_conv_pos_embedding_groups"),
        (dict(feat_extract_norm="batch"), "feat_extract_norm"),
        (dict(ctc_loss_reduction="avg"), "ctc_loss_reduction"),
        (dict(mask_time_prob=1.5), "mask_time_prob"),
        (dict(tdnn_dim=(1, 2), tdnn_kernel=(1,), tdnn_dilation=(1,)), "tdnn_dim"),
        (dict(codevector_dim=255), "codevector_dim"),
        (dict(conv_stride=(5, 0, 2, 2, 2, 2, 2)), "conv_stride"),
    ],
)
def test_inconsistent_settings_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"Wav2Vec2Config.{field}"):
        Wav2Vec2Config(**overrides)


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        Wav2Vec2Config.from_json_file(path)
    path.write_text(json.dumps({"model_type": "hubert"}))
    with pytest.raises(ValueError, match="hubert"):
        Wav2Vec2Config.from_json_file(path)
    path.write_text(json.dumps({"conv_dim": [1, 2], "conv_stride": [1], "conv_kernel": [1, 2]}))
    with pytest.raises(ValueError, match="config.json.*conv_dim"):
        Wav2Vec2Config.from_json_file(path)


def test_presets_are_published_shapes():
    large = Wav2Vec2Config.preset("large-lv60")
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    assert large.do_stable_layer_norm and large.feat_extract_norm == "layer" and large.conv_bias
    base = Wav2Vec2Config.preset("base", vocab_size=40)
    assert base.vocab_size == 40 and base.feat_extract_norm == "group" and not base.do_stable_layer_norm
    with pytest.raises(ValueError, match="unknown preset"):
        Wav2Vec2Config.preset("huge")


# ------------------------------------------------------------------------------ published configs
PUBLISHED = json.loads((Path(__file__).parent / "data" / "published_configs.json").read_text())
# Parameters of Wav2Vec2Model for each family, as published (base 94.4M, large 315.4M, 1b 962.5M, 2b 2,159M).
PUBLISHED_MILLIONS = {"base": 94.4, "large": 315.4, "xls-r-1b": 962.5, "xls-r-2b": 2159.3}


@pytest.mark.parametrize("repo", sorted(PUBLISHED))
def test_published_configs_load_and_keep_their_legacy_keys(tmp_path, repo):
    data = PUBLISHED[repo]
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = Wav2Vec2Config.from_pretrained(tmp_path)
    reference = transformers.Wav2Vec2Config.from_pretrained(tmp_path)
    for name in Wav2Vec2Config.field_names():
        if name in data:
            expected = getattr(reference, name)
            assert getattr(config, name) == (tuple(expected) if isinstance(expected, list) else expected), name
    # Keys the reference no longer reads (mask_channel_*, hidden_dropout_prob, gradient_checkpointing, ...)
    # stay in extra and are written back unchanged.
    legacy = set(data) - set(Wav2Vec2Config.field_names()) - {"model_type", "num_feat_extract_layers"}
    assert set(config.extra) == legacy
    config.save_pretrained(tmp_path / "again")
    written = json.loads((tmp_path / "again" / "config.json").read_text())
    assert {k: written[k] for k in legacy} == {k: data[k] for k in legacy}
    assert Wav2Vec2Config.from_pretrained(tmp_path / "again") == config


@pytest.mark.parametrize("repo, family", [
    ("facebook/wav2vec2-base", "base"), ("facebook/wav2vec2-base-960h", "base"), ("facebook/wav2vec2-large", "large"),
    ("facebook/wav2vec2-large-lv60", "large"), ("facebook/wav2vec2-large-xlsr-53", "large"),
    ("facebook/wav2vec2-xls-r-300m", "large"), ("facebook/wav2vec2-xls-r-1b", "xls-r-1b"),
    ("facebook/wav2vec2-xls-r-2b", "xls-r-2b"),
])
def test_published_configs_give_the_published_sizes(repo, family):
    from wav2vec2.spec.names import canonical_shapes

    shapes = canonical_shapes(Wav2Vec2Config.from_dict(PUBLISHED[repo]), "model")
    assert round(sum(math.prod(s) for s in shapes.values()) / 1e6, 1) == PUBLISHED_MILLIONS[family]


def test_gradient_checkpointing_survives_the_round_trip(tmp_path):
    config = Wav2Vec2Config.from_dict(PUBLISHED["facebook/wav2vec2-base"])
    assert config.extra["gradient_checkpointing"] is True
    assert Wav2Vec2Config.from_dict(config.to_dict()).extra["gradient_checkpointing"] is True
    assert config.replace(vocab_size=40).extra["gradient_checkpointing"] is True
    config.save_pretrained(tmp_path)
    assert Wav2Vec2Config.from_pretrained(tmp_path).extra["gradient_checkpointing"] is True


# ------------------------------------------------------------------------------ types and ranges
def test_every_field_has_a_type_check():
    from wav2vec2 import config as module

    kinds = [*module._INT_FIELDS, *module._INT_SEQUENCE_FIELDS, *module._FLOAT_FIELDS, *module._BOOL_FIELDS,
             *module._CHOICE_FIELDS, "id2label"]
    assert sorted(kinds) == sorted(Wav2Vec2Config.field_names())


BAD_VALUES = [
    # (field, value, words the error must use)
    ("vocab_size", -1, "positive"),
    ("vocab_size", 0, "positive"),
    ("num_hidden_layers", "12", "integer"),
    ("num_hidden_layers", 2.5, "integer"),
    ("hidden_size", 32.0, "integer"),
    ("hidden_size", True, "integer"),
    ("num_attention_heads", 0, "positive"),
    ("num_conv_pos_embedding_groups", 0, "positive"),
    ("num_conv_pos_embeddings", None, "integer"),
    ("mask_time_min_masks", -1, "at least 0"),
    ("num_negatives", -5, "at least 0"),
    ("adapter_attn_dim", 0, "positive"),
    ("adapter_attn_dim", "16", "integer or null"),
    ("output_hidden_size", -3, "positive"),
    ("bos_token_id", -1, "at least 0"),
    ("pad_token_id", 32, "CTC blank"),
    ("pad_token_id", 1.0, "integer"),
    ("conv_dim", "512", "list"),
    ("conv_dim", [], "at least one"),
    ("conv_kernel", [10, 3, 3, 3, 3, 2, 2.5], "entry 6"),
    ("conv_stride", [5, 2, 2, 2, 2, 2, -2], "entry 6"),
    ("tdnn_dilation", [1, 2, 3, 1, True], "entry 4"),
    ("hidden_dropout", "0.1", "number"),
    ("hidden_dropout", 1.5, "[0, 1]"),
    ("layerdrop", -0.1, "[0, 1]"),
    ("mask_time_prob", float("nan"), "finite"),
    ("layer_norm_eps", 0.0, "positive"),
    ("contrastive_logits_temperature", -1.0, "positive"),
    ("initializer_range", float("inf"), "finite"),
    ("diversity_loss_weight", -0.5, "at least 0"),
    ("do_stable_layer_norm", "true", "true or false"),
    ("conv_bias", 1, "true or false"),
    ("hidden_act", "mish", "one of"),
    ("feat_extract_norm", None, "one of"),
    ("ctc_loss_reduction", ["sum"], "one of"),
    ("id2label", {"a": "yes"}, "label ids"),
    ("id2label", {"0": 1}, "string"),
    ("id2label", {"0": "a", "2": "b"}, "0..1"),
    ("id2label", {}, "non-empty"),
]


@pytest.mark.parametrize("field, value, words", BAD_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_bad_values_in_config_json_name_the_file_and_field(tmp_path, field, value, words):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**PUBLISHED["facebook/wav2vec2-base-960h"], field: value}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: Wav2Vec2Config.{field}: ") + ".*" + re.escape(words)):
        Wav2Vec2Config.from_json_file(path)


def test_groups_must_divide_the_hidden_size():
    with pytest.raises(ValueError, match="Wav2Vec2Config.num_conv_pos_embedding_groups: hidden_size=768"):
        Wav2Vec2Config(num_conv_pos_embedding_groups=7)


def test_json_numbers_and_numpy_values_are_stored_as_plain_python():
    import numpy as np

    config = Wav2Vec2Config(hidden_size=np.int64(64), num_attention_heads=4, num_conv_pos_embedding_groups=4,
                            conv_dim=np.array([8, 8]), conv_kernel=[3, 2], conv_stride=(2, 2), final_dropout=0,
                            id2label={"0": "no", 1: "yes"})
    assert type(config.hidden_size) is int and config.conv_dim == (8, 8) and type(config.conv_dim[0]) is int
    assert config.id2label == {0: "no", 1: "yes"}
    json.dumps(config.to_dict())  # nothing NumPy left in it


def test_num_labels_alone_asks_for_default_labels():
    config = Wav2Vec2Config.from_dict({"num_labels": 3})
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.num_labels == transformers.Wav2Vec2Config(num_labels=3).num_labels
    assert Wav2Vec2Config.preset("base", num_labels=4).num_labels == 4
    with pytest.raises(ValueError, match="Wav2Vec2Config.num_labels: 3 does not match the 2 labels"):
        Wav2Vec2Config.from_dict({"num_labels": 3, "id2label": {"0": "a", "1": "b"}})
    with pytest.raises(ValueError, match="Wav2Vec2Config.num_labels"):
        Wav2Vec2Config.from_dict({"num_labels": "3"})


def test_a_config_that_is_not_a_mapping_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps([{"hidden_size": 8}]))
    with pytest.raises(ValueError, match="config.json: expected a JSON object, got list"):
        Wav2Vec2Config.from_json_file(path)
    with pytest.raises(ValueError, match="Wav2Vec2Config.extra: must be a mapping"):
        Wav2Vec2Config(extra=[1, 2])
