"""core.ffns.router: the learned router's controls (frozen random map, uniform, fixed weights, one
path trained alone) against hand-written formulas, and a frozen router that training leaves
untouched."""

import pytest
import torch
import torch.nn.functional as F

from core.config import apply_overrides, preset, variant_label
from core.ffns.router import Router
from core.ffns.thresholds import threshold_activation
from core.model import build_model
from core.training.trainer import build_optimizer
from tests.conftest import build_ffn, tiny_model_config


def _dual(share: str = "all", fused: bool = False, **options):
    ffn = build_ffn(tiny_model_config(ffn="dual", ffn_share=share, ffn_fused=fused, **options))
    with torch.no_grad():  # scales away from 1, so a formula that forgets one fails
        ffn.alpha_dense.fill_(0.7)
        ffn.alpha_sparse.fill_(1.3)
    return ffn


def _paths(ffn, x):
    """The dense and sparse hidden activations, written out (shared gate and up)."""
    g, u = ffn.gate_proj(x), ffn.up_proj(x)
    sparse = threshold_activation(ffn.threshold_kind, g, ffn.threshold, ffn.bandwidth) * u
    return F.silu(g) * u, sparse


@pytest.mark.parametrize("fused", [False, True])
def test_uniform_router_is_a_half_half_mix(fused):
    ffn = _dual(fused=fused, ffn_router="uniform")
    x = torch.randn(2, 5, 32)
    y, aux, _ = ffn(x)
    dense, sparse = _paths(ffn, x)
    torch.testing.assert_close(y, ffn.down_proj(0.5 * 0.7 * dense + 0.5 * 1.3 * sparse), rtol=1e-5, atol=1e-6)
    assert aux.item() == 0.0  # nothing to regularise


@pytest.mark.parametrize("router, weight", [("fixed", 0.2), ("sparse_only", 1.0), ("dense_only", 0.0)])
@pytest.mark.parametrize("fused", [False, True])
def test_fixed_and_single_path_routers_match_their_formula(router, weight, fused):
    ffn = _dual(fused=fused, ffn_router=router, router_fixed_weight=0.2)
    x = torch.randn(3, 4, 32)
    y, aux, _ = ffn(x)
    dense, sparse = _paths(ffn, x)
    if router == "sparse_only":
        expected = ffn.down_proj(1.3 * sparse)
    elif router == "dense_only":
        expected = ffn.down_proj(0.7 * dense)
    else:
        expected = ffn.down_proj((1 - weight) * 0.7 * dense + weight * 1.3 * sparse)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    assert aux.item() == 0.0


def test_single_path_with_separate_projections():
    ffn = _dual(share="none", ffn_router="sparse_only")
    x = torch.randn(2, 3, 32)
    g, u = ffn.sparse_gate_proj(x), ffn.sparse_up_proj(x)
    sparse = threshold_activation(ffn.threshold_kind, g, ffn.threshold, ffn.bandwidth) * u
    torch.testing.assert_close(ffn(x)[0], 1.3 * ffn.sparse_down_proj(sparse), rtol=1e-5, atol=1e-6)


def test_frozen_random_router_routes_tokens_apart_without_aux_loss():
    router = Router(64, 2, z_loss=1.0, mode="frozen_random")
    router.reset_parameters()
    weights, aux = router(F.rms_norm(torch.randn(500, 64), (64,)))
    assert aux.item() == 0.0
    assert weights[:, 1].std() > 0.1  # unit-variance logits: far from a near-uniform map
    assert not any(p.requires_grad for p in router.parameters())


@pytest.mark.parametrize("label", ["dual+ffn_router=frozen_random", "moe+moe_router=frozen_random"])
def test_frozen_router_is_bit_identical_after_training(label):
    config = apply_overrides(preset("micro"), [f"model.ffn={label.split('+')[0]}", label.split("+")[1],
                                               "model.vocab_size=97"])
    assert variant_label(config.model) == label
    torch.manual_seed(0)
    model = build_model(config.model)
    routers = {n: p.detach().clone() for n, p in model.named_parameters() if ".router." in n}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if "gate_proj" in n}
    assert routers and all(v.abs().sum() > 0 for v in routers.values() if v.ndim == 2)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    for _ in range(3):
        ids = torch.randint(0, 97, (2, 16))
        model(ids, targets=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, value in model.named_parameters():
        if name in routers:
            assert torch.equal(value, routers[name]), name
    assert any(not torch.equal(p, others[n]) for n, p in model.named_parameters() if n in others)


def test_learned_router_still_starts_at_zero():
    model = build_model(tiny_model_config(ffn="dual"))
    router = model.model.layers[0].mlp.router
    assert router.mode == "learned" and torch.count_nonzero(router.proj.weight) == 0


@pytest.mark.parametrize("override, message", [
    ("model.router_fixed_weight=1.5", "router_fixed_weight must be in [0, 1]"),
    ("model.ffn_router=hash", "ffn_router must be one of"),
])
def test_bad_router_options_are_refused(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(preset("micro"), ["model.ffn=dual", override])
