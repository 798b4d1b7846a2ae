import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

from core.export import export_transformers
from core.model import build_model
from tests.conftest import tiny_model_config

SHAPES = [
    dict(),  # GQA: 4 query heads, 2 kv heads
    dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=3,
         num_key_value_heads=3, rope_theta=10_000.0),  # plain MHA, other rope base
]


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_transformers_qwen2(tmp_path, shape):
    model = build_model(tiny_model_config(**shape)).eval()
    with torch.no_grad():  # non-trivial norms and biases so the comparison covers them
        for name, p in model.named_parameters():
            if name.endswith(("layernorm.weight", "norm.weight", "bias")):
                p.add_(torch.randn_like(p) * 0.1)
    folder = export_transformers(model, tmp_path / "export")
    reference = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    assert isinstance(reference, Qwen2ForCausalLM)
    ids = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        ours, theirs = model(ids).logits, reference(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-5


def test_dual_export_is_refused(tmp_path):
    with pytest.raises(ValueError, match="transformers' Qwen2 has only a SwiGLU"):
        export_transformers(build_model(tiny_model_config(ffn="dual")), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_export_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_transformers(build_model(tiny_model_config()), tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
