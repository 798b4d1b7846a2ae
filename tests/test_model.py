
import copy

import pytest
import torch

from core import variants
from core.config import apply_overrides, preset
from core.ffns.thresholds import KINDS as FFN_THRESHOLDS
from core.model import build_model, fused_cross_entropy, model_flops_per_token, parameter_counts
from tests.conftest import BF16_TOLERANCE, bf16_autocast, relative_error, tiny_model_config

VARIANTS = [(name, None) for name in variants.names() if name != "dual"] + [
    ("dual", kind) for kind in FFN_THRESHOLDS]


def _config(ffn: str, threshold: str | None, **extra):
    """A tiny config of `ffn`; dual with threshold kind `threshold`."""
    return tiny_model_config(ffn=ffn, **({"ffn_threshold": threshold} if threshold else {}), **extra)


@pytest.mark.parametrize("ffn, threshold", VARIANTS)
def test_causality(ffn, threshold):
    """No position sees a later one. Exactly: the earlier logits have a zero gradient with respect
    to every later input embedding (a structural zero, whatever the kernels). In values: changing
    a token changes earlier logits by no more than float reordering (a mixture's expert batches
    change with any token's expert, so bit equality is not what causality means), and it does
    change its own and later ones."""
    model = build_model(_config(ffn, threshold)).eval()
    ids = torch.randint(0, 97, (2, 16))
    t = 9
    embedded = {}

    def keep(module, args, output):
        output.retain_grad()
        embedded["x"] = output

    handle = model.model.embed_tokens.register_forward_hook(keep)
    model(ids).logits[:, :t].sum().backward()
    handle.remove()
    grad = embedded["x"].grad
    assert grad[:, :t].abs().sum() > 0
    assert torch.count_nonzero(grad[:, t:]) == 0
    changed = ids.clone()
    changed[:, t] = (ids[:, t] + 1) % 97
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-5)  # fp32 reordering: ~1e-7 seen
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-3


def test_stats_shapes_and_router_start():
    config = tiny_model_config(ffn="swiglu")
    out = build_model(config)(torch.randint(0, 97, (3, 7)), targets=torch.randint(0, 97, (3, 7)),
                              return_stats=True)
    assert out.logits.shape == (3, 7, 97)
    assert out.stats == {} and out.aux_loss.item() == 0
    config = tiny_model_config(ffn="dual")
    model = build_model(config)
    out = model(torch.randint(0, 97, (3, 7)), targets=torch.randint(0, 97, (3, 7)), return_stats=True)
    L = config.num_hidden_layers
    assert out.stats["router_sparse"].shape == (L, 3, 7)
    assert out.stats["zero_frac"].shape == (L, 3, 7)
    for key in ("theta", "alpha_dense", "alpha_sparse"):
        assert out.stats[key].shape == (L,)
    assert torch.all(out.stats["router_sparse"] == 0.5)
    assert torch.all(out.stats["theta"] == config.ffn_options['threshold_init'])
    # z-loss at a zero router: L layers x 1e-3 x ln(2)^2, and it is inside the loss
    expected_aux = L * config.ffn_options['router_z_loss'] * torch.log(torch.tensor(2.0)) ** 2
    torch.testing.assert_close(out.aux_loss, expected_aux)
    no_stats = model(torch.randint(0, 97, (3, 7)))
    assert no_stats.stats == {} and no_stats.loss is None


def test_loss_is_cross_entropy_plus_aux():
    model = build_model(tiny_model_config(ffn="dual"))
    ids, targets = torch.randint(0, 97, (2, 9)), torch.randint(0, 97, (2, 9))
    out = model(ids, targets)
    ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(out.loss, ce + out.aux_loss)


def test_paper_parameter_count_is_84m():
    config = preset("paper").model
    with torch.device("meta"):
        counts = parameter_counts(build_model(config))
    assert abs(counts["total"] - 84.3e6) <= 0.2e6


def _count(config):
    with torch.device("meta"):
        return parameter_counts(build_model(config))["total"]


def test_shared_dual_matches_swiglu_and_unshared_is_20_percent_larger():
    base = preset("paper")
    swiglu = _count(base.model)
    dual_all = _count(apply_overrides(base, ["ffn=dual"]).model)
    dual_none = _count(apply_overrides(base, ["ffn=dual", "ffn_share=none"]).model)
    assert abs(dual_all - swiglu) / swiglu < 1e-3
    assert 1 - dual_all / dual_none == pytest.approx(0.20, abs=0.01)  # the report's "20% reduction"
    matched = _count(apply_overrides(base, ["ffn=dual", "ffn_share=none", "ffn_match=params"]).model)
    assert abs(matched - swiglu) / swiglu < 1e-3


def test_flops_count_matches_hand_count():
    config = tiny_model_config()
    d, h, L, V, T = 32, 64, 2, 97, 16
    hd = d // 4
    per_layer = 2 * d * hd * (2 * 4 + 2 * 2) + 2 * 2 * 4 * hd * T / 2 + 2 * 3 * d * h
    assert model_flops_per_token(config, T) == int(L * per_layer + 2 * d * V)


@pytest.mark.parametrize("ffn, threshold", VARIANTS)
def test_one_optimizer_step_on_micro(ffn, threshold):
    options = [f"ffn_threshold={threshold}"] if threshold else []
    config = apply_overrides(preset("micro"), [f"ffn={ffn}", *options])
    model = build_model(config.model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    ids = torch.randint(0, config.model.vocab_size, (4, config.train.seq_len + 1))
    out = model(ids[:, :-1], ids[:, 1:])
    out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert out.loss.item() == pytest.approx(torch.log(torch.tensor(4096.0)).item(), abs=0.2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("ffn, threshold", VARIANTS)
def test_cuda_bf16_autocast_step(ffn, threshold):
    options = [f"ffn_threshold={threshold}"] if threshold else []
    config = apply_overrides(preset("micro"), [f"ffn={ffn}", *options])
    model = build_model(config.model).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=config.train.lr, fused=True)
    ids = torch.randint(0, config.model.vocab_size, (4, config.train.seq_len + 1), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids[:, :-1], ids[:, 1:], return_stats=True)
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss)
    if ffn == "dual":
        assert model.model.layers[0].mlp.threshold.grad is not None
        assert out.stats["router_sparse"].dtype == torch.float32


@pytest.mark.parametrize("ffn, chunk", [("swiglu", 0), ("dual", 0), ("swiglu", 5)])  # 5: 33 = 6 x 5 + 3
def test_fused_cross_entropy_equals_plain_loss_and_gradients(ffn, chunk):
    torch.manual_seed(3)
    model = build_model(tiny_model_config(ffn=ffn, loss_chunk_tokens=chunk)).double()
    ids, targets = torch.randint(0, 97, (3, 11)), torch.randint(0, 97, (3, 11))
    targets[0, :4] = -100  # ignored positions
    results = []
    for return_logits in (True, False):
        model.zero_grad()
        out = model(ids, targets, return_logits=return_logits)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        assert (out.logits is None) == (not return_logits)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    for name, grad in results[0][1].items():  # RMSNorm computes in fp32 even in a double model
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-5, atol=1e-9, msg=name)


def test_loss_chunk_size_is_the_configs_or_follows_vocab_and_device():
    from core.model import loss_chunk_tokens

    tiny, paper = preset("tiny").model, preset("paper").model
    assert loss_chunk_tokens(tiny, torch.device("cpu")) == 256  # 8 MiB of fp32 logits
    assert loss_chunk_tokens(paper, torch.device("cuda")) == 3328  # 2 GiB, a multiple of 256
    assert loss_chunk_tokens(paper, torch.device("cpu")) == 256  # never below 256
    tiny.loss_chunk_tokens = 300
    assert loss_chunk_tokens(tiny, torch.device("cpu")) == 300


def test_fused_cross_entropy_chunks_are_exact():
    from core.model import fused_cross_entropy

    hidden = torch.randn(2, 9, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 13, (2, 9))
    loss = fused_cross_entropy(hidden, weight, targets, chunk_tokens=4)  # 18 tokens: 4 chunks + 2
    reference = torch.nn.functional.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, reference)
    assert torch.autograd.gradcheck(lambda h, w: fused_cross_entropy(h, w, targets, 4), (hidden, weight))


def test_loss_without_gradient_only_sums_the_chunks(monkeypatch):
    from core.model import _LinearCrossEntropy, fused_cross_entropy

    hidden, weight = torch.randn(2, 9, 8, dtype=torch.float64), torch.randn(13, 8, dtype=torch.float64)
    targets = torch.randint(0, 13, (2, 9))
    targets[1, :3] = -100
    reference = torch.nn.functional.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten())

    def no_gradient_work(*args):
        raise AssertionError("evaluation computed the loss's gradients")

    monkeypatch.setattr(_LinearCrossEntropy, "apply", no_gradient_work)
    torch.testing.assert_close(fused_cross_entropy(hidden, weight, targets, chunk_tokens=4), reference)
    with torch.no_grad():  # parameters that want gradients, but grad mode off: evaluation
        loss = fused_cross_entropy(hidden, weight.requires_grad_(), targets, chunk_tokens=5)
    torch.testing.assert_close(loss, reference)


@pytest.mark.parametrize("chunk", [7, 64])  # 40 tokens: chunks of 7 (the last one short), or one
def test_chunked_loss_in_bf16_matches_float64(chunk):
    """The fused loss under CPU bf16 autocast (products in bf16, softmax and sums in fp32)
    against the plain cross-entropy of the same fp32 inputs in float64."""
    torch.manual_seed(0)
    hidden, weight = torch.randn(4, 10, 32), torch.randn(97, 32) * 0.2
    targets = torch.randint(0, 97, (4, 10))
    targets[0, :3] = -100
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with bf16_autocast():
        loss = fused_cross_entropy(h, w, targets, chunk)
    loss.backward()
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    reference = torch.nn.functional.cross_entropy((h64 @ w64.t()).view(-1, 97), targets.view(-1))
    reference.backward()
    assert loss.dtype == torch.float32 and h.grad.dtype == w.grad.dtype == torch.float32
    assert abs(loss.item() - reference.item()) < BF16_TOLERANCE * reference.item()
    assert relative_error(h.grad, h64.grad) < BF16_TOLERANCE
    assert relative_error(w.grad, w64.grad) < BF16_TOLERANCE


def test_mixture_dispatch_in_bf16_matches_float64():
    """A top-2 mixture layer under CPU bf16 autocast against its float64 copy: the router
    (fp32 by design) picks the same experts, the experts run in bf16, their sum comes out in
    bf16, and every gradient stays within bf16's rounding."""
    torch.manual_seed(0)
    layer = variants.module_class("moe")(tiny_model_config(ffn="moe", moe_experts=4, moe_top_k=2))
    with torch.no_grad():
        layer.router.proj.weight.normal_(std=0.5)  # tokens spread over the experts
    reference = copy.deepcopy(layer).double()
    x = torch.randn(3, 8, 32)
    x16, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
    upstream = torch.randn(3, 8, 32)
    with bf16_autocast():
        y, aux, _ = layer(x16)
    (y.float() * upstream).sum().add(aux).backward()
    y64, aux64, _ = reference(x64)
    (y64 * upstream.double()).sum().add(aux64).backward()
    assert y.dtype == torch.bfloat16
    assert len(set(layer.route(x.view(-1, 32))[3].flatten().tolist())) == 4  # every expert is used
    assert relative_error(y, y64) < BF16_TOLERANCE and relative_error(x16.grad, x64.grad) < BF16_TOLERANCE
    for (name, p), p64 in zip(layer.named_parameters(), reference.parameters()):
        assert relative_error(p.grad, p64.grad) < BF16_TOLERANCE, name
