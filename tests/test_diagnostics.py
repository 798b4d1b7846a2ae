import copy
import math

import pytest
import torch
import torch.nn.functional as F

from core.ffns import dual
from core.model import build_model
from core.training import diagnostics as D
from tests.conftest import BF16_TOLERANCE, bf16_autocast, tiny_model_config

SHARED = {"all": ["gate", "up", "down"], "updown": ["up", "down"], "none": []}


def _model(**overrides):
    return build_model(tiny_model_config(ffn="dual", **overrides))


def _batch(b: int = 3, t: int = 16):
    return torch.randint(0, 97, (b, t)), torch.randint(0, 97, (b, t))


def _set_router(model, bias: tuple[float, float]) -> None:
    """Zero router weights and a fixed bias: every token gets softmax(bias)."""
    with torch.no_grad():
        for _, ffn in D.probed_layers(model):
            ffn.router.proj.weight.zero_()
            ffn.router.proj.bias.copy_(torch.tensor(bias))


def _h2(p: float) -> float:
    """Binary entropy in bits."""
    return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("bias", [(0.3, -0.1), (5.0, -5.0), (-4.0, 4.0)])
def test_routing_entropy_and_collapse_by_hand(bias):
    model = _model()
    _set_router(model, bias)
    metrics = D.routing_metrics(model, _batch()[0], "cpu")
    p_sparse = 1 / (1 + math.exp(bias[0] - bias[1]))  # softmax of (b0, b1), second entry
    for layer in (0, 1):
        m = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith(f"routing/L{layer}/")}
        assert m["sparse_weight"] == pytest.approx(p_sparse, rel=1e-6)
        assert m["entropy"] == pytest.approx(_h2(p_sparse), abs=1e-6)
        assert m["entropy_of_mean"] == pytest.approx(_h2(p_sparse), abs=1e-6)
        assert m["mutual_info"] == pytest.approx(0.0, abs=1e-6)  # every token routed alike
        assert m["mostly_sparse"] == float(p_sparse > 0.5)
        assert m["collapsed"] == float(not 0.05 <= p_sparse <= 0.95)
        assert m["logit_rms"] == pytest.approx(math.sqrt((bias[0] ** 2 + bias[1] ** 2) / 2), rel=1e-6)


def test_mutual_information_of_token_dependent_routing():
    a = 2.0
    logits = torch.tensor([[a, -a], [-a, a], [a, -a], [-a, a]])  # half the tokens each way
    m = dual.routing_summary(dual.routing_sums(logits))
    p = 1 / (1 + math.exp(2 * a))
    assert m["entropy"] == pytest.approx(_h2(p))
    assert m["entropy_of_mean"] == pytest.approx(1.0)  # the mean is an even split
    assert m["mutual_info"] == pytest.approx(1.0 - _h2(p))
    assert m["sparse_weight"] == pytest.approx(0.5) and m["mostly_sparse"] == 0.5
    assert m["collapsed"] == 0.0


def test_routing_sums_pool_exactly_over_batches():
    logits = torch.randn(10, 2) * 3
    whole = dual.routing_summary(dual.routing_sums(logits))
    parts = [dual.routing_sums(logits[:3]), dual.routing_sums(logits[3:])]
    pooled = dual.routing_summary({k: parts[0][k] + parts[1][k] for k in parts[0]})
    assert pooled == pytest.approx(whole)


@pytest.mark.parametrize("fused", [True, False])
def test_routing_metrics_agree_with_model_stats(fused):
    model = _model(ffn_fused=fused)
    with torch.no_grad():
        for _, ffn in D.probed_layers(model):
            ffn.router.proj.weight.normal_(0, 0.5)  # token-dependent routing
    batches = [_batch(), _batch()]
    metrics = D.routing_metrics(model, batches, "cpu")
    with torch.no_grad():
        stats = [model(x, return_stats=True).stats for x, _ in batches]
    for layer in (0, 1):
        sparse = torch.stack([s["router_sparse"][layer] for s in stats]).mean().item()
        zeros = torch.stack([s["zero_frac"][layer] for s in stats]).mean().item()
        assert metrics[f"routing/L{layer}/sparse_weight"] == pytest.approx(sparse, rel=1e-5)
        assert metrics[f"sparsity/L{layer}/zero_frac"] == pytest.approx(zeros, rel=1e-6)
        assert metrics[f"threshold/L{layer}/theta"] == pytest.approx(0.5)
        assert metrics[f"alpha/L{layer}/dense"] == 1.0 and metrics[f"alpha/L{layer}/sparse"] == 1.0
        assert metrics[f"routing/L{layer}/mutual_info"] > 0
    assert model.training  # mode restored


def test_routing_probe_collects_inside_any_forward():
    model = _model()
    x, y = _batch()
    with D.RoutingProbe(model) as probe, torch.no_grad():
        model(x, y, return_stats=True)
    assert probe.metrics() == pytest.approx(D.routing_metrics(model, x, "cpu"))
    assert not any(ffn._forward_pre_hooks for _, ffn in D.probed_layers(model))


def test_swiglu_models_give_no_diagnostics():
    model = build_model(tiny_model_config(ffn="swiglu"))
    x, y = _batch()
    assert D.routing_metrics(model, x, "cpu") == {}
    assert D.interference_probe(model, x, y, "cpu") == {}
    assert D.knockout_losses(model, [(x, y)], "cpu") == {}
    assert D.threshold_grad_norms(model) == {}


# ---------------------------------------------------------------- threshold and sparsity

# 3 tokens x 4 units: unit 0 always on, unit 1 dead, units 2 and 3 on for 2 of 3 tokens at theta 0.3.
G = torch.tensor([[3.0, -3.0, 1.0, -1.0], [3.0, -3.0, -1.0, 1.0], [3.0, -3.0, 1.0, 1.0]])


def _hand_z(g: torch.Tensor) -> torch.Tensor:
    return g / g.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


def test_dead_and_always_on_units_by_hand():
    sums = dual.threshold_sums("jumprelu", G, torch.ones_like(G), torch.tensor(0.3), 0.4)
    out = dual.threshold_summary(sums, 0.3)
    assert out["sparsity"]["dead_frac"] == 0.25 and out["sparsity"]["always_on_frac"] == 0.25
    assert out["sparsity"]["zero_frac"] == pytest.approx(5 / 12)  # 12 cells, 7 active
    rms = G.pow(2).mean(-1).add(1e-6).sqrt()  # sqrt(5) for every token
    assert out["threshold"]["theta_raw"] == pytest.approx(0.3 * rms.mean().item())


def test_window_fraction_by_hand():
    z = _hand_z(G)  # |z| is 3/sqrt(5) = 1.342 or 1/sqrt(5) = 0.447
    theta = torch.tensor(0.3)
    jump = dual.threshold_summary(dual.threshold_sums("jumprelu", G, torch.ones_like(G), theta, 0.4), 0.3)
    # |z - theta| < 0.2 only for the four z = +0.447 entries
    assert jump["threshold"]["window_frac"] == pytest.approx(4 / 12)
    assert ((z - 0.3).abs() < 0.2).sum().item() == 4
    sums = dual.threshold_sums("shifted_relu", G, torch.ones_like(G), theta, 0.4)
    shifted = dual.threshold_summary(sums, 0.3)
    assert shifted["threshold"]["window_frac"] == pytest.approx(7 / 12)  # every active unit
    narrow = dual.threshold_summary(dual.threshold_sums("jumprelu", G, torch.ones_like(G), theta, 0.1), 0.3)
    assert narrow["threshold"]["window_frac"] == 0.0  # theta can no longer learn


def test_cats_window_and_units_by_hand():
    a = F.silu(G)
    score = a.abs() / a.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    theta, eps = 0.5, 0.05
    out = dual.threshold_summary(dual.threshold_sums("cats", G, torch.ones_like(G), torch.tensor(theta), eps),
                              theta)
    assert out["threshold"]["window_frac"] == pytest.approx(
        ((score - theta).abs() < 3 * eps).float().mean().item())
    active = score > theta
    assert out["sparsity"]["dead_frac"] == (~active.any(0)).float().mean().item()
    assert out["sparsity"]["always_on_frac"] == active.all(0).float().mean().item()
    assert out["sparsity"]["zero_frac"] == pytest.approx(1 - active.float().mean().item())


def test_threshold_grad_norms_read_the_parameter_grads():
    model = _model()
    assert D.threshold_grad_norms(model) == {}  # no backward yet
    x, y = _batch()
    model(x, y).loss.backward()
    norms = D.threshold_grad_norms(model)
    for i, ffn in D.probed_layers(model):
        assert norms[f"threshold/L{i}/grad"] == pytest.approx(ffn.threshold.grad.abs().item())


# ---------------------------------------------------------------- interference


@pytest.mark.parametrize("share,kind,fused", [("all", "jumprelu", True), ("all", "shifted_relu", True),
                                              ("all", "jumprelu", False), ("all", "cats", False),
                                              ("all", "cats", True),
                                              ("updown", "jumprelu", False)])
def test_split_gradients_sum_to_the_full_gradient(share, kind, fused):
    model = _model(ffn_share=share, ffn_threshold=kind, ffn_fused=fused).double()
    x, y = _batch()
    model(x, y, return_logits=False).loss.backward()
    split = D.split_gradients(model, x, y, "cpu")
    for i, ffn in D.probed_layers(model):
        assert split[i]["shared"] == SHARED[share]
        for m in SHARED[share]:
            full = getattr(ffn, f"{m}_proj").weight.grad
            total = split[i]["dense"][m] + split[i]["sparse"][m]
            torch.testing.assert_close(total, full, rtol=0, atol=1e-6)
            assert split[i]["dense"][m].abs().sum() > 0 and split[i]["sparse"][m].abs().sum() > 0
        theta_grad = split[i]["watched"]["threshold/grad"]
        torch.testing.assert_close(theta_grad, ffn.threshold.grad, rtol=1e-6, atol=1e-9)


def test_interference_probe_leaves_grads_params_and_rng_alone():
    model = _model()
    x, y = _batch()
    model(x, y).loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    metrics = D.interference_probe(model, x, y, "cpu")
    assert torch.equal(torch.get_rng_state(), rng)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, before[n]) and torch.equal(p.detach(), params[n]), n
    assert not any("forward" in ffn.__dict__ for _, ffn in D.probed_layers(model))
    for i in (0, 1):
        assert -1 <= metrics[f"interference/L{i}/cosine"] <= 1
        assert 0 <= metrics[f"interference/L{i}/neg_frac"] <= 1
        assert metrics[f"interference/L{i}/norm_ratio"] > 0
        assert metrics[f"threshold/L{i}/grad"] == pytest.approx(
            D.probed_layers(model)[i][1].threshold.grad.abs().item(), rel=1e-4)


def test_interference_summary_definitions():
    dense = {"gate": torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]),
             "up": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
             "down": torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])}  # [d=2, h=4]
    sparse = {"gate": -dense["gate"], "up": dense["up"] * 2, "down": torch.zeros(2, 4)}
    sparse["gate"][1] = torch.tensor([-5.0, -5.0])  # unit 1 points against the dense part
    sparse["gate"][3], sparse["up"][3] = 0.0, 0.0  # unit 3: no sparse gradient at all
    m = D.interference_summary({"dense": dense, "sparse": sparse, "shared": ["gate", "up", "down"]})
    flat_d = torch.cat([g.flatten() for g in dense.values()])
    flat_s = torch.cat([g.flatten() for g in sparse.values()])
    assert m["cosine"] == pytest.approx(F.cosine_similarity(flat_d, flat_s, dim=0).item())
    assert m["norm_ratio"] == pytest.approx((flat_s.norm() / flat_d.norm()).item())
    assert m["cosine_gate"] < 0 < m["cosine_up"] < 1
    assert math.isnan(m["cosine_down"])  # the sparse part is zero: undefined
    # per unit (gate row, up row, down column): units 0 and 2 agree (dot +1, +2), unit 1 conflicts
    # (dot -10 + 2), unit 3 has a zero sparse part and is left out
    assert m["neg_frac"] == pytest.approx(1 / 3)


def test_share_none_reports_no_interference():
    model = _model(ffn_share="none")
    metrics = D.interference_probe(model, *_batch(), "cpu")
    assert not any(k.startswith("interference/") for k in metrics)
    assert {"threshold/L0/grad", "threshold/L1/grad"} <= set(metrics)


# ---------------------------------------------------------------- knock-out


def _swiglu_twin(dual, alpha_dense: float):
    """A SwiGLU model with the dual model's weights: its loss is the dense path's alone."""
    twin = build_model(tiny_model_config(ffn="swiglu"))
    state = {k: v for k, v in dual.state_dict().items() if k in twin.state_dict()}
    twin.load_state_dict(state)
    with torch.no_grad():
        for layer in twin.model.layers:
            layer.mlp.down_proj.weight.mul_(alpha_dense)  # a_d * down(silu(g) u) = (a_d down)(...)
    return twin


def test_knockout_of_a_hand_routed_model_is_the_pure_path():
    model = _model()
    with torch.no_grad():
        for _, ffn in D.probed_layers(model):
            ffn.alpha_dense.fill_(1.3)
    batches = [_batch(), _batch()]
    twin = _swiglu_twin(model, 1.3)
    with torch.no_grad():
        pure_dense = torch.stack([twin(x, y).loss for x, y in batches]).mean().item()
    _set_router(model, (20.0, -20.0))  # softmax = (1, 2e-18): effectively dense only
    dense_routed = D.knockout_losses(model, batches, "cpu")
    assert dense_routed["dense_only"] == pytest.approx(pure_dense, abs=1e-5)
    assert dense_routed["mix"] == pytest.approx(dense_routed["dense_only"], abs=1e-6)
    assert abs(dense_routed["sparse_only"] - pure_dense) > 1e-4
    _set_router(model, (-20.0, 20.0))
    sparse_routed = D.knockout_losses(model, batches, "cpu")
    assert sparse_routed["mix"] == pytest.approx(sparse_routed["sparse_only"], abs=1e-6)
    assert sparse_routed["dense_only"] == pytest.approx(pure_dense, abs=1e-5)


def test_forced_route_restores_the_router():
    model = _model()
    x, y = _batch()
    with torch.no_grad():
        before = model(x, y).loss.item()
        with D.forced_route(model, "sparse_only"):
            weights, _ = D.probed_layers(model)[0][1].router(torch.randn(2, 5, 32))
            assert torch.equal(weights, torch.tensor([0.0, 1.0]).expand(2, 5, 2))
            with D.forced_route(model, "dense_only"):  # nested: the inner block wins, then the outer again
                assert D.probed_layers(model)[0][1].router(torch.randn(1, 32))[0].tolist() == [[1.0, 0.0]]
            assert D.probed_layers(model)[0][1].router(torch.randn(1, 32))[0].tolist() == [[0.0, 1.0]]
        assert model(x, y).loss.item() == before
    assert not any("forward" in ffn.router.__dict__ for _, ffn in D.probed_layers(model))
    with pytest.raises(ValueError), D.forced_route(model, "both"):
        pass


def test_knockout_mix_matches_the_eval_loss():
    model = _model()
    batches = [_batch()]
    with torch.no_grad():
        out = model(*batches[0])
    losses = D.knockout_losses(model, batches, "cpu")
    assert losses["mix"] == pytest.approx((out.loss - out.aux_loss).item(), rel=1e-5)
    assert set(losses) == {"mix", "dense_only", "sparse_only"}


def test_diagnostics_under_bf16_autocast():
    """The training autocast (bf16 on CUDA) exercised on CPU: same dtype handling, no device needed."""
    model = _model()
    x, y = _batch()

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    routing = D.routing_metrics(model, [(x, y)], "cpu", autocast)
    assert 0 < routing["sparsity/L0/zero_frac"] < 1 and routing["routing/L0/entropy"] == pytest.approx(1.0)
    probe = D.interference_probe(model, x, y, "cpu", autocast)
    assert all(math.isfinite(v) for v in probe.values()) and "interference/L1/cosine" in probe
    assert probe["interference/L0/cosine"] == pytest.approx(D.interference_probe(model, x, y, "cpu")[
        "interference/L0/cosine"], abs=0.05)
    losses = D.knockout_losses(model, [(x, y)], "cpu", autocast)
    assert losses["mix"] == pytest.approx(D.knockout_losses(model, [(x, y)], "cpu")["mix"], abs=0.05)


def _close_in_bf16(values: dict[str, float], reference: dict[str, float]) -> list[str]:
    """Keys whose value is off by more than BF16_TOLERANCE of max(|reference|, 1): metrics
    here are shares, cosines and entropies of order 1, losses a few units."""
    assert values.keys() == reference.keys() and values
    return [key for key, ref in reference.items()
            if not abs(values[key] - ref) <= BF16_TOLERANCE * max(abs(ref), 1.0)]


@pytest.mark.parametrize("kind", ["jumprelu", "cats"])
def test_evaluation_and_probes_in_bf16_match_float64(kind):
    """Evaluation (val loss and routing, threshold and sparsity metrics), the interference probe
    and the knock-out losses of a dual model under CPU bf16 autocast, against the same model
    in float64. Units on the threshold's edge may flip either way, so unit counts (dead,
    always-on) are left out: they are integers over 64 units, not rounding-sized."""
    from core.config import RunConfig, TrainConfig
    from core.training.trainer import evaluate

    model = build_model(tiny_model_config(ffn="dual", ffn_threshold=kind))
    with torch.no_grad():  # logits of order 1 (at init they are ~0 and every loss is log(vocab))
        for p in model.parameters():
            p.mul_(4.0 if p.ndim == 2 else 1.0)
        for _, ffn in D.probed_layers(model):
            ffn.router.proj.weight.normal_(std=0.5)
    reference = copy.deepcopy(model).double()
    x, y = _batch(4, 16)
    bf16, fp32 = (RunConfig(model=model.config, train=TrainConfig(dtype=d, seq_len=16))
                  for d in ("bf16", "fp32"))
    cpu = torch.device("cpu")
    ours, theirs = evaluate(model, [(x, y)], bf16, cpu), evaluate(reference, [(x, y)], fp32, cpu)
    unit_counts = ("dead_frac", "always_on_frac")
    ours = {k: v for k, v in ours.items() if not k.endswith(unit_counts)}
    assert not _close_in_bf16(ours, {k: v for k, v in theirs.items() if k in ours})
    probe = D.interference_probe(model, x, y, "cpu", bf16_autocast)
    assert not _close_in_bf16(probe, D.interference_probe(reference, x, y, "cpu"))
    knockout = D.knockout_losses(model, [(x, y)], "cpu", bf16_autocast)
    assert not _close_in_bf16(knockout, D.knockout_losses(reference, [(x, y)], "cpu"))


def _whole_batch_split(model, x, y) -> dict[int, dict]:
    """The probe as it was before #27, the reference: every layer on its split in one forward
    and backward, each shared matrix as two fresh copies (no checkpointing, no frozen head)."""
    from core.ffns.base import patched_forwards

    layers = dict(D.split_layers(model))
    copies = {i: {m: [getattr(ffn, f"{m}_proj").weight.detach().clone().requires_grad_() for _ in "ds"]
                  for m in ("gate", "up", "down")} for i, ffn in layers.items()}

    def split_forward(ffn, w):
        def forward(h, return_stats=False):
            _, aux, c_d, c_s = ffn.mix_weights(h)
            dense = F.silu(F.linear(h, w["gate"][0])) * F.linear(h, w["up"][0])
            sparse = ffn.activation(F.linear(h, w["gate"][1])) * F.linear(h, w["up"][1])
            return F.linear(c_d * dense, w["down"][0]) + F.linear(c_s * sparse, w["down"][1]), aux, {}
        return forward

    with patched_forwards(list(layers.values()), [split_forward(f, copies[i]) for i, f in layers.items()]):
        loss = model(x, y, return_logits=False).loss
    leaves = [w for i in layers for m in ("gate", "up", "down") for w in copies[i][m]]
    grads = iter(torch.autograd.grad(loss, leaves))
    out = {}
    for i in layers:
        pairs = {m: (next(grads), next(grads)) for m in ("gate", "up", "down")}
        out[i] = {"shared": ["gate", "up", "down"], "dense": {m: g[0] for m, g in pairs.items()},
                  "sparse": {m: g[1] for m, g in pairs.items()}}
    return out


@pytest.mark.parametrize("kind", ["jumprelu", "cats"])
def test_the_layer_by_layer_probe_equals_the_whole_batch_split(kind):
    """Layer by layer, checkpointed, one weight copy and a frozen head (#27: memory at or below
    a training step's) against the one-pass split it replaced, in float64: only the order of
    floating-point sums differs, hence 1e-9."""
    model = _model(ffn_threshold=kind).double()
    with torch.no_grad():
        for _, ffn in D.probed_layers(model):
            ffn.router.proj.weight.normal_(std=0.5)
    x, y = _batch()
    reference = _whole_batch_split(model, x, y)
    ours = D.split_gradients(model, x, y, "cpu")
    assert ours.keys() == reference.keys() == {0, 1}
    for i in ours:
        for part in ("dense", "sparse"):
            for m, grad in reference[i][part].items():
                torch.testing.assert_close(ours[i][part][m], grad, rtol=1e-9, atol=1e-12)
        expected = D.interference_summary(reference[i])
        assert D.interference_summary(ours[i]) == pytest.approx(expected, rel=1e-9, nan_ok=True)
    assert all(p.requires_grad for p in model.parameters())  # the frozen head is thawed
