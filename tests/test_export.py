"""core.export: every registered variant loads in transformers with our logits."""

import json
import uuid
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2ForCausalLM

from core import variants
from core.ffns.thresholds import KINDS
from core.model import build_model, load_weights_state
from core.sharing.export import export_transformers, ffn_source_files, main
from tests.conftest import REPO, tiny_model_config

SHAPES = [
    dict(),  # GQA: 4 query heads, 2 kv heads
    dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=3,
         num_key_value_heads=3, rope_theta=10_000.0),  # plain MHA, other rope base
]
# every registered variant with its defaults, each threshold kind and sharing of the dual path,
# and a mixture with two experts per token matched on active parameters
CASES = ([dict(ffn=name) for name in variants.names()]
         + [dict(ffn="dual", ffn_threshold=kind) for kind in KINDS]
         + [dict(ffn="dual", ffn_share=share, ffn_fused=False) for share in ("updown", "none")]
         + [dict(ffn="moe", moe_top_k=2, moe_renormalize=True, ffn_match="active")])
SHIPPED_RUN = REPO / "runs" / "cpu-variants-lr0.004" / "dual-s0"


def _unique(tmp_path: Path, stem: str) -> Path:
    # transformers caches remote code by the folder's name: one name per export in a process
    return tmp_path / f"{stem}-{uuid.uuid4().hex[:8]}"


def _perturbed(config) -> torch.nn.Module:
    """A model whose norms, biases, routers and scalars are not at their init values, so the
    comparison covers them."""
    model = build_model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim < 2 or "router" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _logits_gap(ours: torch.nn.Module, theirs: torch.nn.Module, vocab: int) -> float:
    ids = torch.randint(0, vocab, (2, 24))
    with torch.no_grad():
        return (ours(ids).logits - theirs(ids).logits).abs().max().item()


@pytest.mark.parametrize("shape", SHAPES)
def test_swiglu_exports_as_plain_qwen2(tmp_path, shape):
    model = _perturbed(tiny_model_config(**shape))
    folder = export_transformers(model, _unique(tmp_path, "swiglu"))
    assert not list(folder.glob("*.py"))  # no remote code needed
    reference = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    assert isinstance(reference, Qwen2ForCausalLM)
    assert _logits_gap(model, reference, 97) < 1e-5


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_every_variant_loads_with_remote_code(tmp_path, case):
    model = _perturbed(tiny_model_config(**case))
    folder = export_transformers(model, _unique(tmp_path, case["ffn"]))
    loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert _logits_gap(model, loaded, 97) < 1e-5
    out = loaded.generate(torch.randint(0, 97, (1, 4)), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 9)
    # and back: the loaded model's weights rebuild ours exactly
    again = build_model(model.config).eval()
    load_weights_state(again, loaded.state_dict())
    assert _logits_gap(model, again, 97) == 0.0


def test_exported_ffn_code_is_the_explorer_source():
    files = ffn_source_files("dual")
    assert set(files) == {"dual.py", "dual_spec.py", "base.py", "router.py", "thresholds.py", "variants.py",
                          "ffn_variant.py"}
    for name in ("dual.py", "dual_spec.py", "thresholds.py", "variants.py"):
        ours = (REPO / "core" / ("variants.py" if name == "variants.py" else f"ffns/{name}")).read_text()
        changed = [(a, b) for a, b in zip(ours.splitlines(), files[name].splitlines()) if a != b]
        assert all(a.startswith("from core.") and b.startswith("from .") for a, b in changed)
        assert len(ours.splitlines()) == len(files[name].splitlines())
    assert "from .dual import DualPathFFN as VariantFFN" in files["ffn_variant.py"]


def test_plugin_variant_exports_with_its_file(tmp_path):
    variants.load_plugin(REPO / "examples" / "my_ffn.py")
    model = _perturbed(tiny_model_config(ffn="mixgate", mix_init=0.3))
    folder = export_transformers(model, _unique(tmp_path, "mixgate"))
    assert (folder / "plugin_my_ffn.py").read_text().count("from .base import FFN, linear") == 1
    loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert _logits_gap(model, loaded, 97) < 1e-5


@pytest.mark.parametrize("line, message", [
    ("from core.ffns import base", "cannot be exported; import names from a module file"),
    ("import core.ffns.base", "`import core…` cannot be exported"),
    ("from core.ffns.base import (\n    FFN,\n)", None),  # multi-line imports are fine
])
def test_plugin_imports_the_export_cannot_carry(tmp_path, line, message):
    name = f"imp{uuid.uuid4().hex[:6]}"
    source = (REPO / "examples" / "my_ffn.py").read_text().replace(
        "from core.ffns.base import FFN, linear", f"{line}\nfrom core.ffns.base import FFN, linear"
    ).replace('name="mixgate"', f'name="{name}"')
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(source)
    variants.load_plugin(plugin)
    model = build_model(tiny_model_config(ffn=name))
    out = tmp_path / "out"
    if message is None:
        export_transformers(model, out)
        return
    with pytest.raises(ValueError, match=message):
        export_transformers(model, out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_export_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_transformers(build_model(tiny_model_config()), tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_shipped_run_exports_with_tokenizer_and_generation_config(tmp_path, capsys):
    out = _unique(tmp_path, "shipped")
    assert main([str(SHIPPED_RUN), str(out), "--dtype", "bfloat16"]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    ours = Tokenizer.from_file(str(SHIPPED_RUN / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(out)
    text = "The dual path routes each token."
    assert theirs(text)["input_ids"] == ours.encode(text).ids
    eot = ours.token_to_id("<|endoftext|>")
    assert GenerationConfig.from_pretrained(out).eos_token_id == eot == theirs.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["ffn_options"]["ffn_threshold"] == "jumprelu"
    ids = theirs(text, return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5


def test_cli_reports_a_missing_run(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
