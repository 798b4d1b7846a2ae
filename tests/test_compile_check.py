"""The compiled-gradient self-check: passes on a sound compiler, refuses one that drops gradients."""

import pytest
import torch

import core.training.compile_check as compile_check
from core.config import ModelConfig, apply_overrides, preset
from core.model import ModelOutput
from core.training.trainer import Dist, Trainer
from tests.conftest import needs_compiler

pytestmark = needs_compiler


VARIANTS = [dict(ffn="dual"), dict(ffn="dual", ffn_options=dict(ffn_threshold="cats")), dict(ffn="swiglu"),
            dict(ffn="moe", ffn_options=dict(moe_experts=3, moe_top_k=2))]


@pytest.mark.parametrize("options", VARIANTS)
def test_compiled_gradients_match_eager_on_this_torch(options):
    assert compile_check.compiled_gradient_error(ModelConfig(**options), "cpu") < 1e-4  # measured <= 1.6e-5


def _drops_the_loss_gradient(model):
    """A stand-in for torch 2.11's compile bug: the cross-entropy's gradient is lost, only the
    router's auxiliary loss trains (val 7.94 after 60 micro steps instead of 6.2)."""

    def forward(x, y, return_logits=True):
        out = model(x, y, return_logits=return_logits)
        return ModelOutput(out.logits, out.loss.detach() + out.aux_loss - out.aux_loss.detach(), out.aux_loss)

    return forward


def test_a_compiler_that_drops_the_loss_gradient_is_refused(monkeypatch):
    monkeypatch.setattr(compile_check.torch, "compile", _drops_the_loss_gradient)
    monkeypatch.setattr(compile_check, "_checked", {})
    assert compile_check.compiled_gradient_error(ModelConfig(ffn="dual"), "cpu") > 0.5
    with pytest.raises(ValueError, match=r"torch.compile gives wrong gradients with torch .* "
                                         r"\(--set train.compile=false\)"):
        compile_check.require_compiled_gradients(ModelConfig(ffn="dual"), "cpu")


def test_a_compiled_run_on_a_broken_compiler_stops_before_its_data(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_check, "_checked", {("dual", "cpu"): 1.0})
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    config = apply_overrides(preset("micro"), ["ffn=dual", "compile=true"])
    with pytest.raises(ValueError, match="wrong gradients"):
        Trainer(config, None, Dist(), progress=False)
    assert not (tmp_path / "cache").exists()


def test_the_check_runs_once_per_variant_and_device(monkeypatch):
    calls = []
    monkeypatch.setattr(compile_check, "_checked", {})
    monkeypatch.setattr(compile_check, "compiled_gradient_error",
                        lambda model, device: calls.append(1) or 0.0)
    for _ in range(3):
        compile_check.require_compiled_gradients(ModelConfig(ffn="dual"), "cpu")
    assert calls == [1]


def test_the_check_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    compile_check.compiled_gradient_error(ModelConfig(ffn="swiglu"), "cpu")
    assert torch.equal(torch.get_rng_state(), before)
