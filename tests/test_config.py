import json

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
