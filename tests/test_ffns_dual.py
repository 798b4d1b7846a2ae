import pytest
import torch
import torch.nn.functional as F

import core.ffns.thresholds as ffn_module
from core.ffns.thresholds import KINDS as FFN_THRESHOLDS
from core.ffns.thresholds import threshold_activation
from core.variants import hidden_size as ffn_hidden_size
from tests.conftest import BF16_TOLERANCE, build_ffn, relative_error, tiny_model_config


@pytest.mark.parametrize("kind", FFN_THRESHOLDS)
def test_theta_receives_gradient_and_moves(kind):
    config = tiny_model_config(ffn="dual", ffn_threshold=kind)
    ffn = build_ffn(config)
    x = torch.randn(4, 8, config.hidden_size)
    target = torch.randn(4, 8, config.hidden_size)
    theta0 = ffn.threshold.item()
    opt = torch.optim.SGD([ffn.threshold], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        y, _, _ = ffn(x)
        loss = (y - target).pow(2).mean() - y.pow(2).mean()  # rewards opening the sparse path
        loss.backward()
        assert ffn.threshold.grad is not None and ffn.threshold.grad.abs().item() > 0
        opt.step()
    assert ffn.threshold.item() != pytest.approx(theta0, abs=1e-6)


@pytest.mark.parametrize("kind", FFN_THRESHOLDS)
def test_reported_sparsity_is_exact_zero_fraction(kind):
    config = tiny_model_config(ffn="dual", ffn_threshold=kind)
    ffn = build_ffn(config)
    x = torch.randn(3, 5, config.hidden_size)
    _, _, stats = ffn(x, return_stats=True)
    g, u = ffn.gate_proj(x), ffn.up_proj(x)
    sparse = threshold_activation(kind, g, ffn.threshold, config.ffn_options['threshold_bandwidth']) * u
    expected = (sparse == 0).float().mean(-1)
    assert stats["zero_frac"].shape == (3, 5)
    torch.testing.assert_close(stats["zero_frac"], expected, rtol=0, atol=0)
    assert 0 < expected.mean() < 1  # theta0 = 0.5 rms cuts some but not all units


def test_jumprelu_values_match_definition():
    g = torch.tensor([[-2.0, -0.1, 0.2, 0.6, 1.5, 3.0]])
    theta = torch.tensor(0.5)
    rms = g.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    expected = g * ((g / rms) > 0.5)
    torch.testing.assert_close(threshold_activation("jumprelu", g, theta, 0.1), expected)
    shifted = torch.relu(g / rms - 0.5) * rms
    torch.testing.assert_close(threshold_activation("shifted_relu", g, theta, 0.1), shifted)


def test_jumprelu_theta_gradient_is_rectangle_kernel():
    z = torch.tensor([[0.46, 0.54, 0.7, 0.1]])  # rms scaled below; window is |z - theta| < eps/2
    g = z * 1.0
    theta = torch.tensor(0.5, requires_grad=True)
    scale = g.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    out = threshold_activation("jumprelu", g * 1.0, theta, 0.2)
    out.sum().backward()
    zn = g / scale
    in_window = ((zn - 0.5).abs() < 0.1).float()
    expected = (-(0.5 / 0.2) * (in_window * scale)).sum()
    torch.testing.assert_close(theta.grad, expected)


def test_router_starts_uniform_and_z_loss_counts():
    config = tiny_model_config(ffn="dual", router_z_loss=0.1)
    ffn = build_ffn(config)
    torch.nn.init.zeros_(ffn.router.proj.weight)
    torch.nn.init.zeros_(ffn.router.proj.bias)
    _, aux, stats = ffn(torch.randn(2, 3, config.hidden_size), return_stats=True)
    assert torch.all(stats["router_sparse"] == 0.5)
    # zero logits: logsumexp = ln 2, z-loss = 0.1 * ln(2)^2
    assert aux.item() == pytest.approx(0.1 * torch.log(torch.tensor(2.0)).item() ** 2)


def test_balance_loss_and_temperature():
    config = tiny_model_config(ffn="dual", router_z_loss=0.0, router_balance_loss=1.0,
                               router_temperature=2.0)
    ffn = build_ffn(config)
    with torch.no_grad():
        ffn.router.proj.bias.copy_(torch.tensor([2.0, 0.0]))
        ffn.router.proj.weight.zero_()
    x = torch.randn(2, 3, config.hidden_size)
    weights, aux = ffn.router(x)
    p_dense = torch.sigmoid(torch.tensor(1.0)).item()  # logits / T = (1, 0)
    assert weights[..., 0].mean().item() == pytest.approx(p_dense, rel=1e-6)
    assert aux.item() == pytest.approx(2 * p_dense, rel=1e-6)  # every token argmax-routed dense


@pytest.mark.parametrize("share, matrices", [("all", 3), ("updown", 4), ("none", 6)])
def test_parameter_matching(share, matrices):
    config = tiny_model_config(ffn="dual", ffn_share=share, ffn_match="params")
    hidden = ffn_hidden_size(config)
    assert hidden == round(config.intermediate_size * 3 / matrices)
    assert ffn_hidden_size(tiny_model_config(ffn="dual", ffn_share=share)) == config.intermediate_size
    assert ffn_hidden_size(tiny_model_config(ffn="dual", ffn_hidden=48)) == 48


@pytest.mark.parametrize("share", ["all", "updown", "none"])
def test_mixture_matches_formula(share):
    config = tiny_model_config(ffn="dual", ffn_share=share)
    ffn = build_ffn(config)
    with torch.no_grad():
        ffn.router.proj.weight.normal_()
        ffn.alpha_dense.fill_(0.7)
        ffn.alpha_sparse.fill_(1.3)
    x = torch.randn(2, 4, config.hidden_size)
    y, _, _ = ffn(x)
    r = torch.softmax(x @ ffn.router.proj.weight.T + ffn.router.proj.bias, -1)
    dense, sparse = ffn._paths(x)
    sparse_down = ffn.sparse_down_proj if share == "none" else ffn.down_proj
    expected = (r[..., :1] * 0.7 * ffn.down_proj(dense) + r[..., 1:] * 1.3 * sparse_down(sparse))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)


# CPU eager: one chunk, or 18 tokens in chunks of 5, 5, 5, 3; "functional": the single pass that
# torch.compile and GPUs take.
@pytest.mark.parametrize("mode", ["one_chunk", "chunks_of_5", "functional"])
@pytest.mark.parametrize("kind", FFN_THRESHOLDS)
def test_fused_dual_path_equals_plain_formula(kind, mode, monkeypatch):
    config = tiny_model_config(ffn="dual", ffn_threshold=kind, threshold_bandwidth=0.5)
    if mode == "chunks_of_5":
        monkeypatch.setattr(ffn_module, "CHUNK_ELEMENTS", 5 * ffn_hidden_size(config))
    if mode == "functional":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    fused = build_ffn(config)
    plain = build_ffn(tiny_model_config(ffn="dual", ffn_threshold=kind, threshold_bandwidth=0.5,
                                        ffn_fused=False))
    assert fused.fused and not plain.fused
    plain.load_state_dict(fused.state_dict())
    with torch.no_grad():
        for m in (fused, plain):
            torch.manual_seed(1)
            m.router.proj.weight.normal_()
            m.alpha_dense.fill_(0.8)
            m.alpha_sparse.fill_(1.7)
    x = torch.randn(3, 6, config.hidden_size, dtype=torch.float64)
    fused, plain = fused.double(), plain.double()
    (y_f, _, _), (y_p, _, _) = fused(x.clone().requires_grad_()), plain(x)
    torch.testing.assert_close(y_f, y_p, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(y_f)
    grads = []
    for m in (fused, plain):
        xin = x.clone().requires_grad_()
        y, _, _ = m(xin)
        (y * weight).sum().backward()
        grads.append({"x": xin.grad, **{n: p.grad for n, p in m.named_parameters()}})
    assert grads[0]["threshold"].abs().item() > 0  # theta's gradient is non-zero in this set-up
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("kind", FFN_THRESHOLDS)
def test_fused_dual_activation_in_bf16_matches_float64(kind):
    """The fused kernel on bf16 g, u (what the projections give under CPU autocast; c_d, c_s and
    theta stay fp32) against the plain formula in float64 on the same values. u and the upstream
    gradient are positive so theta's gradient, a sum over every active unit, has no cancelling
    terms: its relative error is a rounding error, not a near-zero difference."""
    torch.manual_seed(0)
    g, u = torch.randn(48, 96).bfloat16(), torch.randn(48, 96).abs().bfloat16()
    c_d, c_s, theta = torch.rand(48, 1), torch.rand(48, 1), torch.tensor(0.3)
    upstream = torch.rand(48, 96)

    def run(dtype, formula, cast):
        leaves = [t.to(dtype if t.dtype == torch.bfloat16 else cast).clone().requires_grad_()
                  for t in (g, u, c_d, c_s, theta)]
        out = formula(*leaves)
        (out.double() * upstream.double()).sum().backward()
        return [out, *(leaf.grad for leaf in leaves)]

    fused = run(torch.bfloat16, lambda *t: ffn_module.fused_mix(*t, kind, 0.5), torch.float32)
    plain = run(torch.float64, lambda g, u, c_d, c_s, th: (c_d * F.silu(g) + c_s * threshold_activation(
        kind, g, th, 0.5)) * u, torch.float64)
    assert fused[0].dtype == fused[1].dtype == torch.bfloat16 and fused[5].dtype == torch.float32
    for name, value, reference in zip(("out", "g", "u", "c_d", "c_s", "theta"), fused, plain):
        assert relative_error(value, reference) < BF16_TOLERANCE, name
