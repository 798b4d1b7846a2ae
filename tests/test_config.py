import json

import pytest

from core.config import (
    PRESETS,
    ModelConfig,
    RunConfig,
    apply_overrides,
    parse_variant,
    preset,
    variant_label,
)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip_through_json(name):
    config = preset(name)
    again = RunConfig.from_dict(json.loads(config.to_json()))
    assert again == config


def test_unknown_preset_names_choices():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*micro"):
        preset("huge")


@pytest.mark.parametrize("override, field", [
    ("num_attention_heads=3", "num_attention_heads"),
    ("num_key_value_heads=3", "num_key_value_heads"),
    ("ffn=nonexistent", "ffn"),
    ("moe_experts=0", "moe_experts"),
    ("hidden_size=0", "hidden_size"),
    ("intermediate_size=-4", "intermediate_size"),
    ("threshold_init=0", "threshold_init"),
    ("threshold_init=-0.5", "threshold_init"),
    ("ffn_share=some", "ffn_share"),
    ("ffn_threshold=relu", "ffn_threshold"),
    ("steps=0", "steps"),
    ("lr=-1", "lr"),
    ("seq_len=1000", "seq_len"),
    ("loss_chunk_tokens=-1", "loss_chunk_tokens"),
])
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(ValueError, match=field):
        apply_overrides(preset("micro"), [override])


@pytest.mark.parametrize("override, message", [
    ("nonsense=1", "unknown key"),
    ("model.steps=1", "unknown key"),
    ("steps", "key=value"),
    ("steps=ten", "expected int"),
    ("lr=fast", "expected float"),
    ("compile=1", "expected bool"),
    ("hidden_size=64.5", "expected int"),
    ("ffn=3", "expected str"),
])
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(preset("micro"), [override])


def test_overrides_parse_json_and_sections():
    config = apply_overrides(preset("micro"), ["lr=1e-3", "train.steps=7", "ffn=dual",
                                               "ffn_share=none", "compile=true", "data.source=/tmp/x"])
    assert config.train.lr == 1e-3 and config.train.steps == 7 and config.train.compile is True
    assert config.model.ffn == "dual" and config.model.ffn_options["ffn_share"] == "none"
    assert config.data.source == "/tmp/x"
    assert preset("micro").train.steps == 150  # presets are not mutated


def test_from_dict_rejects_unknown_fields():
    raw = preset("micro").to_dict()
    raw["model"]["heads"] = 4
    with pytest.raises(ValueError, match="unknown model config field"):
        RunConfig.from_dict(raw)


def test_variant_labels_round_trip():
    assert variant_label(ModelConfig(ffn="swiglu")) == "swiglu"
    assert variant_label(ModelConfig(ffn="dual")) == "dual"
    label = variant_label(ModelConfig(ffn="dual", ffn_options={"ffn_share": "none", "router_z_loss": 0.01}))
    assert label == "dual+ffn_share=none+router_z_loss=0.01"
    ffn, overrides = parse_variant(label)
    rebuilt = apply_overrides(preset("micro"), overrides).model
    assert ffn == "dual" and variant_label(rebuilt) == label
