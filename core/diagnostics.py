"""Research diagnostics of the dual-path FFN: routing, threshold, pathway interference, knock-out.

All functions take the raw model (``Trainer.model``, not a DDP/compiled wrapper) and leave it as
they found it: parameters, their ``.grad``, train/eval mode and the RNG. Keys follow the metrics
contract ``<group>/L{i}/<name>`` (layers 0-based); swiglu models give empty dicts.

Definitions (documented once here, used by the report's glossary too):

routing (per token, router weights w = softmax(logits / temperature), w = (w_dense, w_sparse))
  sparse_weight    mean w_sparse over tokens
  mostly_sparse    fraction of tokens with w_sparse > 0.5
  entropy          mean per-token entropy H(w), in bits (1 = an even split, 0 = a hard choice)
  entropy_of_mean  H(mean w), in bits
  mutual_info      entropy_of_mean - entropy = I(path; token) >= 0: how much the routing depends
                   on the token (0: every token is routed alike)
  collapsed        1.0 when sparse_weight is outside [0.05, 0.95], else 0.0
  logit_rms        sqrt(mean logit^2) over tokens and both logits (after temperature): what the
                   z-loss keeps small
threshold (theta is learned in normalised units: rms(g) per token for jumprelu/shifted_relu,
  rms(silu(g)) per token for cats; g = the sparse path's gate pre-activation)
  theta            theta as learned, i.e. relative to that rms
  theta_raw        theta * mean over tokens of that rms: the cut in the gate's own units
  window_frac      fraction of (token, unit) pre-activations that pass gradient to theta:
                   jumprelu |z - theta| < bandwidth/2 (the rectangle kernel);
                   shifted_relu z > theta (every active unit gives the exact gradient -1);
                   cats |score - theta| < 3 * bandwidth (where the sigmoid estimator's slope is
                   above ~18% of its peak). 0 means theta can no longer learn.
  grad             |d loss / d theta| (from .grad after a training backward, or from the probe)
sparsity
  zero_frac        fraction of exact zeros in the sparse path's activation thr(g) * u (as the
                   model's own stats)
  dead_frac        fraction of hidden units never active (score <= theta) on the probe tokens
  always_on_frac   fraction of hidden units active on every probe token
alpha              dense / sparse: the learned path scales a_d, a_s
interference (the gradient of every projection the two paths share, split exactly into the part
  that flows through the dense path and the part through the sparse path; they sum to the full
  gradient)
  cosine           cosine of the two parts, all shared matrices flattened together
  cosine_<m>       the same for one shared matrix m in gate / up / down
  neg_frac         fraction of hidden units whose two parts point apart (cosine < 0), a unit's
                   part being its gate row, up row and down column concatenated (shared ones
                   only); units where either part is exactly zero are left out
  norm_ratio       |sparse part| / |dense part|
  For share="none" the paths share nothing: no interference keys.
"""

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from core.ffn import DualPathFFN, Router, threshold_activation

DIAGNOSTIC_PREFIXES = ("routing/", "threshold/", "sparsity/", "interference/", "alpha/")
COLLAPSE_BAND = (0.05, 0.95)  # mean sparse weight outside this band: the router has collapsed
CATS_WINDOW = 3.0  # cats: theta's gradient window, in multiples of the sigmoid bandwidth
PROJECTIONS = ("gate", "up", "down")
KNOCKOUTS = (("mix", None), ("dense_only", "dense"), ("sparse_only", "sparse"))

AutocastFactory = Callable[[], AbstractContextManager]


def dual_layers(model: nn.Module) -> list[tuple[int, DualPathFFN]]:
    """(layer index, FFN) of every dual-path FFN in a CausalLM."""
    return [(i, layer.mlp) for i, layer in enumerate(model.model.layers)
            if isinstance(layer.mlp, DualPathFFN)]


def _token_batches(inputs) -> list[torch.Tensor]:
    """Token ids [B, T], or a list of them, or of (x, y) pairs (``Trainer.val``) -> list of x."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    return [item[0] if isinstance(item, (tuple, list)) else item for item in inputs]


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Entropy over the last dim in bits; 0 log 0 = 0."""
    return torch.special.entr(p).sum(-1) / math.log(2)


# ---------------------------------------------------------------------------- routing


def router_logits(router: Router, x: torch.Tensor) -> torch.Tensor:
    """The logits ``Router.forward`` softmaxes: fp32, temperature applied."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        logits = F.linear(x.float(), router.proj.weight.float(), router.proj.bias.float())
    return logits / router.temperature


def routing_sums(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Additive statistics of router logits [..., 2], so batches can be pooled exactly."""
    logits = logits.detach().reshape(-1, 2).double()
    w = logits.softmax(-1)
    return {"tokens": torch.tensor(float(w.shape[0]), dtype=torch.float64), "weight": w.sum(0),
            "mostly_sparse": (w[:, 1] > 0.5).double().sum(), "entropy": _entropy_bits(w).sum(),
            "logit_sq": logits.pow(2).sum()}


def routing_summary(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-layer routing metrics (names as in the module docstring) from pooled `routing_sums`."""
    n = sums["tokens"].item()
    mean_w = sums["weight"] / n
    sparse = mean_w[1].item()
    entropy, of_mean = sums["entropy"].item() / n, _entropy_bits(mean_w).item()
    low, high = COLLAPSE_BAND
    return {"sparse_weight": sparse, "mostly_sparse": sums["mostly_sparse"].item() / n,
            "entropy": entropy, "entropy_of_mean": of_mean, "mutual_info": of_mean - entropy,
            "collapsed": float(not low <= sparse <= high),
            "logit_rms": math.sqrt(sums["logit_sq"].item() / (2 * n))}


# ---------------------------------------------------------------------------- threshold / sparsity


def sparse_inputs(ffn: DualPathFFN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate and up pre-activations of the sparse path (g_s, u_s), as ``DualPathFFN._paths``."""
    gate = ffn.gate_proj if ffn.share == "all" else ffn.sparse_gate_proj
    up = ffn.sparse_up_proj if ffn.share == "none" else ffn.up_proj
    return gate(x), up(x)


def threshold_view(kind: str, g: torch.Tensor, theta: float, bandwidth: float):
    """(score, scale, active, window) of gate pre-activations `g` [..., h], in float32.

    score is what theta is compared with (g / rms(g), or |silu(g)| / rms(silu(g)) for cats),
    scale the per-token rms [..., 1]; active = score > theta; window = theta gets gradient
    from this unit (see the module docstring).
    """
    g = g.detach().float()
    base = F.silu(g) if kind == "cats" else g
    scale = base.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()  # as core.ffn._rms
    score = base.abs() / scale if kind == "cats" else base / scale
    active = score > theta
    if kind == "jumprelu":
        window = (score - theta).abs() < bandwidth / 2
    elif kind == "shifted_relu":
        window = active
    elif kind == "cats":
        window = (score - theta).abs() < CATS_WINDOW * bandwidth
    else:
        raise ValueError(f"unknown threshold type {kind!r}")
    return score, scale, active, window


def threshold_sums(kind: str, g: torch.Tensor, u: torch.Tensor, theta: torch.Tensor,
                   bandwidth: float) -> dict[str, torch.Tensor]:
    """Additive threshold/sparsity statistics of one batch of sparse-path inputs g, u [..., h]."""
    _, scale, active, window = threshold_view(kind, g, theta.item(), bandwidth)
    sparse = threshold_activation(kind, g, theta, bandwidth) * u  # exactly the model's activation
    h = g.shape[-1]
    return {"tokens": torch.tensor(float(scale.numel()), dtype=torch.float64),
            "scale": scale.double().sum(), "window": window.double().sum(),
            "zeros": (sparse == 0).double().sum(),
            "unit_active": active.reshape(-1, h).double().sum(0)}


def threshold_summary(sums: dict[str, torch.Tensor], theta: float) -> dict[str, dict[str, float]]:
    """{"threshold": {...}, "sparsity": {...}} metrics from pooled `threshold_sums`."""
    n = sums["tokens"].item()
    units = sums["unit_active"]
    cells = n * units.numel()
    return {"threshold": {"theta": theta, "theta_raw": theta * sums["scale"].item() / n,
                          "window_frac": sums["window"].item() / cells},
            "sparsity": {"zero_frac": sums["zeros"].item() / cells,
                         "dead_frac": (units == 0).double().mean().item(),
                         "always_on_frac": (units == n).double().mean().item()}}


# ---------------------------------------------------------------------------- routing_metrics


class _LayerTally:
    """Pools one layer's routing and threshold sums over the forwards it sees (a pre-hook)."""

    def __init__(self, ffn: DualPathFFN):
        self.ffn, self.routing, self.threshold = ffn, None, None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0]  # the FFN's input, under the caller's autocast like the real forward
        ffn = self.ffn
        with torch.no_grad():
            routing = routing_sums(router_logits(ffn.router, x))
            g, u = sparse_inputs(ffn, x)
            sums = threshold_sums(ffn.threshold_kind, g, u, ffn.threshold.detach(), ffn.bandwidth)
        self.routing = routing if self.routing is None else _add(self.routing, routing)
        self.threshold = sums if self.threshold is None else _add(self.threshold, sums)

    def metrics(self, layer: int) -> dict[str, float]:
        if self.routing is None:
            return {}
        ffn = self.ffn
        groups = {"routing": routing_summary(self.routing),
                  **threshold_summary(self.threshold, ffn.threshold.item()),
                  "alpha": {"dense": ffn.alpha_dense.item(), "sparse": ffn.alpha_sparse.item()}}
        return {f"{group}/L{layer}/{name}": value
                for group, values in groups.items() for name, value in values.items()}


def _add(total: dict, new: dict) -> dict:
    return {key: total[key] + new[key] for key in total}


def _summed_across(sums: dict[str, torch.Tensor], reduce_sum: Callable, device) -> dict[str, torch.Tensor]:
    """`sums` with every value summed across ranks, in one collective call."""
    flat = torch.cat([value.reshape(-1).to(device, torch.float64) for value in sums.values()])
    reduce_sum(flat)
    out, start = {}, 0
    for key, value in sums.items():
        out[key] = flat[start:start + value.numel()].reshape(value.shape).to(value.device)
        start += value.numel()
    return out


class RoutingProbe:
    """Collects routing/threshold/sparsity/alpha metrics from every forward run inside ``with``.

    ``with RoutingProbe(model) as probe: <forwards>`` then ``probe.metrics()``; forwards may use
    any path (fused or not, with or without stats, under autocast). Adds ~one FFN forward per
    layer (the probe recomputes the router logits and the sparse gate).
    """

    def __init__(self, model: nn.Module):
        self.tallies = {i: _LayerTally(ffn) for i, ffn in dual_layers(model)}
        self._handles: list = []

    def __enter__(self) -> "RoutingProbe":
        self._handles = [t.ffn.register_forward_pre_hook(t) for t in self.tallies.values()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def all_reduce(self, reduce_sum: Callable[[torch.Tensor], object]) -> None:
        """Pool the sums of every rank of a data-parallel evaluation; `reduce_sum` sums a tensor
        in place across ranks (``torch.distributed.all_reduce``). Each rank must have run at
        least one forward inside the ``with`` block."""
        for tally in self.tallies.values():
            device = tally.ffn.threshold.device
            tally.routing = _summed_across(tally.routing, reduce_sum, device)
            tally.threshold = _summed_across(tally.threshold, reduce_sum, device)

    def metrics(self) -> dict[str, float]:
        """Metrics pooled over every token seen so far; {} when no dual layer ran."""
        return {key: value for i, tally in self.tallies.items() for key, value in tally.metrics(i).items()}


class _StopForward(Exception):
    """Raised after the last dual layer: the rest of the model (lm_head) is not needed."""


def _raise_stop(module: nn.Module, args: tuple, output) -> None:
    raise _StopForward


@torch.no_grad()
def routing_metrics(model: nn.Module, inputs, device: torch.device | str,
                    autocast: AutocastFactory = nullcontext) -> dict[str, float]:
    """Routing, threshold, sparsity and alpha metrics of every dual layer, pooled over `inputs`.

    `inputs`: token ids [B, T], a list of them, or a list of (x, y) pairs (``Trainer.val``).
    One forward per batch, in eval mode, cut after the last dual layer; no grad. `autocast` is
    a zero-argument factory of the training autocast context.
    """
    layers = dual_layers(model)
    if not layers:
        return {}
    was_training = model.training
    model.eval()
    stop = layers[-1][1].register_forward_hook(_raise_stop)
    try:
        with RoutingProbe(model) as probe:
            for x in _token_batches(inputs):
                try:
                    with autocast():
                        model(x.to(device))
                except _StopForward:
                    pass
    finally:
        stop.remove()
        model.train(was_training)
    return probe.metrics()


def threshold_grad_norms(model: nn.Module) -> dict[str, float]:
    """``threshold/L{i}/grad`` = |theta.grad| of each dual layer; call after backward, before
    ``zero_grad`` (layers whose theta has no grad are left out)."""
    return {f"threshold/L{i}/grad": ffn.threshold.grad.detach().abs().float().item()
            for i, ffn in dual_layers(model) if ffn.threshold.grad is not None}


# ---------------------------------------------------------------------------- interference


def _path_weights(ffn: DualPathFFN) -> tuple[dict, dict, list[str]]:
    """Weights the dense and the sparse path use; each shared matrix as two leaf copies."""
    dense, sparse, shared = {}, {}, []
    for name in PROJECTIONS:
        own = getattr(ffn, f"{name}_proj").weight
        separate = getattr(ffn, f"sparse_{name}_proj", None)
        if separate is None:
            shared.append(name)
            dense[name] = own.detach().clone().requires_grad_(True)
            sparse[name] = own.detach().clone().requires_grad_(True)
        else:
            dense[name], sparse[name] = own, separate.weight
    return dense, sparse, shared


def _split_forward(ffn: DualPathFFN, dense_w: dict, sparse_w: dict) -> Callable:
    """``DualPathFFN.forward`` by the plain formulas, each path on its own weight tensors.

    ``down(c_d*dense + c_s*sparse) = down(c_d*dense) + down(c_s*sparse)``, so with equal values
    the output is the model's, and autograd delivers each path's share of the gradient.
    """

    def forward(x: torch.Tensor, return_stats: bool = False):
        weights, aux = ffn.router(x)
        r_d, r_s = (w.unsqueeze(-1).to(x.dtype) for w in weights.unbind(-1))
        c_d, c_s = r_d * ffn.alpha_dense.to(x.dtype), r_s * ffn.alpha_sparse.to(x.dtype)
        dense = F.silu(F.linear(x, dense_w["gate"])) * F.linear(x, dense_w["up"])
        g_s, u_s = F.linear(x, sparse_w["gate"]), F.linear(x, sparse_w["up"])
        sparse = threshold_activation(ffn.threshold_kind, g_s, ffn.threshold, ffn.bandwidth) * u_s
        y = F.linear(c_d * dense, dense_w["down"]) + F.linear(c_s * sparse, sparse_w["down"])
        return y, aux, {}

    return forward


@contextmanager
def _patched(modules: list[nn.Module], forwards: list[Callable]) -> Iterator[None]:
    """Temporarily replace `modules`' forward (instance attribute; the class method returns after)."""
    previous = [module.__dict__.get("forward") for module in modules]  # an enclosing patch
    try:
        for module, forward in zip(modules, forwards):
            module.forward = forward
        yield
    finally:
        for module, before in zip(modules, previous):
            module.__dict__.pop("forward", None)
            if before is not None:
                module.forward = before


def split_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str,
                    autocast: AutocastFactory = nullcontext) -> dict[int, dict]:
    """Per dual layer: {"dense": {m: grad}, "sparse": {m: grad}, "shared": [m], "theta": grad}.

    One forward + backward of the training loss on (x, y); for every shared projection m,
    dense[m] + sparse[m] is its full gradient. Uses ``torch.autograd.grad``, so no parameter's
    ``.grad`` is touched.
    """
    layers = dual_layers(model)
    splits = {i: _path_weights(ffn) for i, ffn in layers}
    ffns = [ffn for _, ffn in layers]
    forwards = [_split_forward(ffn, *splits[i][:2]) for i, ffn in layers]
    with _patched(ffns, forwards), autocast():
        loss = model(x.to(device), y.to(device), return_logits=False).loss
    copies = [part[m] for i in splits for part in splits[i][:2] for m in splits[i][2]]
    grads = iter(torch.autograd.grad(loss, copies + [ffn.threshold for ffn in ffns]))
    out = {}
    for i in splits:
        shared = splits[i][2]
        dense, sparse = ({m: next(grads) for m in shared} for _ in range(2))
        out[i] = {"dense": dense, "sparse": sparse, "shared": shared}
    for i in splits:
        out[i]["theta"] = next(grads)
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flat tensors; NaN when either is all zero (undefined)."""
    norms = a.norm() * b.norm()
    return (a @ b / norms).item() if norms > 0 else math.nan


def _unit_rows(grad: torch.Tensor, name: str) -> torch.Tensor:
    """[h, d] view: gate/up weights are [h, d] already, down is [d, h]."""
    return grad.t() if name == "down" else grad


def interference_summary(split: dict) -> dict[str, float]:
    """cosine, cosine_<m>, neg_frac and norm_ratio of one layer's `split_gradients` entry."""
    shared = split["shared"]
    if not shared:
        return {}
    dense = [split["dense"][m].double() for m in shared]
    sparse = [split["sparse"][m].double() for m in shared]
    flat_d, flat_s = torch.cat([g.flatten() for g in dense]), torch.cat([g.flatten() for g in sparse])
    unit_d = torch.cat([_unit_rows(g, m) for g, m in zip(dense, shared)], dim=1)
    unit_s = torch.cat([_unit_rows(g, m) for g, m in zip(sparse, shared)], dim=1)
    valid = (unit_d.norm(dim=1) > 0) & (unit_s.norm(dim=1) > 0)
    unit_cos = F.cosine_similarity(unit_d[valid], unit_s[valid], dim=1)
    out = {"cosine": _cosine(flat_d, flat_s),
           "neg_frac": (unit_cos < 0).double().mean().item() if valid.any() else math.nan,
           "norm_ratio": (flat_s.norm() / flat_d.norm()).item() if flat_d.norm() > 0 else math.nan}
    for m, g_d, g_s in zip(shared, dense, sparse):
        out[f"cosine_{m}"] = _cosine(g_d.flatten(), g_s.flatten())
    return out


def interference_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str,
                       autocast: AutocastFactory = nullcontext) -> dict[str, float]:
    """``interference/L{i}/...`` of every dual layer with shared projections, plus
    ``threshold/L{i}/grad`` (|d loss/d theta| on this batch), from one forward + backward.

    Leaves every ``.grad``, the parameters and the RNG as they were. Cost: one training step's
    forward and backward on (x, y); pass a few sequences (e.g. the first val batch's rows).
    """
    if not dual_layers(model):
        return {}
    out = {}
    for i, split in split_gradients(model, x, y, device, autocast).items():
        for name, value in interference_summary(split).items():
            out[f"interference/L{i}/{name}"] = value
        out[f"threshold/L{i}/grad"] = split["theta"].detach().abs().float().item()
    return out


# ---------------------------------------------------------------------------- knock-out


def _fixed_router(index: int) -> Callable:
    """A Router.forward that sends every token wholly to path `index` (0 dense, 1 sparse), no aux."""

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.zeros(*x.shape[:-1], 2, device=x.device, dtype=torch.float32)
        weights[..., index] = 1.0
        return weights, torch.zeros((), device=x.device, dtype=torch.float32)

    return forward


@contextmanager
def forced_route(model: nn.Module, route: str | None) -> Iterator[nn.Module]:
    """Within the block every dual layer's router outputs (1, 0) ("dense") or (0, 1) ("sparse");
    None changes nothing. Patches the model's Router instances: do not use on a model another
    thread is running at the same time."""
    if route not in (None, "dense", "sparse"):
        raise ValueError(f"route must be 'dense', 'sparse' or None; got {route!r}")
    routers = [ffn.router for _, ffn in dual_layers(model)] if route else []
    forwards = [_fixed_router(0 if route == "dense" else 1)] * len(routers)
    with _patched(routers, forwards):
        yield model


@torch.no_grad()
def mean_val_loss(model: nn.Module, batches: Iterable, device: torch.device | str,
                  autocast: AutocastFactory = nullcontext) -> float:
    """Mean cross-entropy per target token (aux losses excluded, as ``evaluate``) over (x, y)
    batches, in eval mode; batches of any size (micro-batches) pool exactly."""
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for x, y in batches:
            with autocast():
                out = model(x.to(device), y.to(device), return_logits=False)
            targets = int((y != -100).sum())
            total += (out.loss - out.aux_loss).double().item() * targets
            count += targets
    finally:
        model.train(was_training)
    return total / max(count, 1)


def knockout_losses(model: nn.Module, batches: Iterable, device: torch.device | str,
                    autocast: AutocastFactory = nullcontext) -> dict[str, float]:
    """Val loss with the learned mix, the dense path only and the sparse path only.

    {"mix", "dense_only", "sparse_only"}; {} for a model without dual layers. `batches` is a list
    of (x, y) (``Trainer.val``), iterated once per route.
    """
    if not dual_layers(model):
        return {}
    batches = list(batches)
    out = {}
    for name, route in KNOCKOUTS:
        with forced_route(model, route):
            out[name] = mean_val_loss(model, batches, device, autocast)
    return out


__all__ = ["DIAGNOSTIC_PREFIXES", "dual_layers", "routing_metrics", "threshold_grad_norms",
           "RoutingProbe", "interference_probe", "split_gradients", "forced_route", "knockout_losses",
           "mean_val_loss", "routing_sums", "routing_summary", "threshold_view", "threshold_sums",
           "threshold_summary", "interference_summary"]
