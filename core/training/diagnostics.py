"""Research diagnostics of any FFN variant: per-layer probes, pathway interference, knock-outs.

The machinery is generic; what is measured is each variant's own (the hooks of
``core.ffns.base.FFN``): ``probe_sums``/``probe_metrics`` for per-layer statistics pooled over
an evaluation, ``watched_parameters`` for gradient norms, ``path_split`` for the interference
of two paths that share weights, ``knockouts`` for reduced models. Each variant's module
docstring defines its metrics (the report's glossary collects them).

All functions take the raw model (``Trainer.model``, not a DDP/compiled wrapper) and leave it as
they found it: parameters, their ``.grad``, train/eval mode and the RNG. Keys follow the metrics
contract ``<group>/L{i}/<name>`` (layers 0-based); variants without hooks give empty dicts.

interference (the gradient of every projection two paths share, split exactly into the part
  that flows through each path; they sum to the full gradient)
  cosine           cosine of the two parts, all shared matrices flattened together
  cosine_<m>       the same for one shared matrix m in gate / up / down
  neg_frac         fraction of hidden units whose two parts point apart (cosine < 0), a unit's
                   part being its gate row, up row and down column concatenated (shared ones
                   only); units where either part is exactly zero are left out
  norm_ratio       |second path's part| / |first path's part|
"""

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.ffns.base import FFN, patched_forwards
from core.metrics import layer_key, layer_keys

AutocastFactory = Callable[[], AbstractContextManager]


def ffn_layers(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(layer index, FFN) of every layer of a CausalLM."""
    return [(i, layer.mlp) for i, layer in enumerate(model.model.layers)]


def probed_layers(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """The layers whose FFN overrides the base's empty ``probe_sums``."""
    return [(i, ffn) for i, ffn in ffn_layers(model) if type(ffn).probe_sums is not FFN.probe_sums]


def split_layers(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """The layers whose FFN has two paths to split (it overrides ``path_split``)."""
    return [(i, ffn) for i, ffn in ffn_layers(model) if type(ffn).path_split is not FFN.path_split]


def _token_batches(inputs) -> list[torch.Tensor]:
    """Token ids [B, T], or a list of them, or of (x, y) pairs (``Trainer.val``) -> list of x."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    return [item[0] if isinstance(item, (tuple, list)) else item for item in inputs]


# ---------------------------------------------------------------------------- per-layer probes


class _LayerTally:
    """Pools one layer's probe sums over the forwards it sees (a forward pre-hook)."""

    def __init__(self, ffn: nn.Module):
        self.ffn, self.sums = ffn, None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        with torch.no_grad():  # the FFN's input, under the caller's autocast like the real forward
            sums = self.ffn.probe_sums(args[0])
        self.sums = sums if self.sums is None else {k: self.sums[k] + sums[k] for k in self.sums}

    def metrics(self, layer: int) -> dict[str, float]:
        if self.sums is None:
            return {}
        return layer_keys(layer, self.ffn.probe_metrics(self.sums))


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
    """Collects every probed layer's metrics from each forward run inside ``with``.

    ``with RoutingProbe(model) as probe: <forwards>`` then ``probe.metrics()``; forwards may use
    any path (fused or not, with or without stats, under autocast). Costs what the variants'
    ``probe_sums`` cost (the dual path: its router logits and sparse gate once more).
    """

    def __init__(self, model: nn.Module):
        self.tallies = {i: _LayerTally(ffn) for i, ffn in probed_layers(model)}
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
            device = next(tally.ffn.parameters()).device
            tally.sums = _summed_across(tally.sums, reduce_sum, device)

    def metrics(self) -> dict[str, float]:
        """Metrics pooled over every token seen so far; {} when no probed layer ran."""
        return {key: value for i, tally in self.tallies.items() for key, value in tally.metrics(i).items()}


class _StopForward(Exception):
    """Raised after the last probed layer: the rest of the model (lm_head) is not needed."""


def _raise_stop(module: nn.Module, args: tuple, output) -> None:
    raise _StopForward


@torch.no_grad()
def routing_metrics(model: nn.Module, inputs, device: torch.device | str,
                    autocast: AutocastFactory = nullcontext) -> dict[str, float]:
    """Every probed layer's metrics, pooled over `inputs`.

    `inputs`: token ids [B, T], a list of them, or a list of (x, y) pairs (``Trainer.val``).
    One forward per batch, in eval mode, cut after the last probed layer; no grad. `autocast` is
    a zero-argument factory of the training autocast context.
    """
    layers = probed_layers(model)
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
    """``group/L{i}/name`` = |grad| of each watched scalar parameter (``threshold/L{i}/grad`` of
    the dual path); call after backward, before ``zero_grad`` (params without grad left out)."""
    out = {}
    for i, ffn in ffn_layers(model):
        grads = {key: parameter.grad.detach().abs().float().item()
                 for key, parameter in ffn.watched_parameters().items() if parameter.grad is not None}
        out.update(layer_keys(i, grads))
    return out


# ---------------------------------------------------------------------------- interference


def split_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str,
                    autocast: AutocastFactory = nullcontext) -> dict[int, dict]:
    """Per layer with a path split: {"dense": {m: grad}, "sparse": {m: grad}, "shared": [m],
    "watched": {key: grad}}; for every shared projection m, dense[m] + sparse[m] is its full
    gradient of the training loss on (x, y). See :func:`layer_splits` (one layer at a time)."""
    return dict(layer_splits(model, x, y, device, autocast))


def layer_splits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str,
                 autocast: AutocastFactory = nullcontext) -> Iterator[tuple[int, dict]]:
    """(layer, its :func:`split_gradients` entry), one layer at a time: one forward + backward
    each, with only that layer on its split (unfused, two weight copies) and the others as in
    training but frozen (:func:`_gradients_of`). Splitting every layer in one pass held every
    layer's copies, their gradients and the unfused activations at once: about twice a training
    micro-step's memory (#27). The gradients are the same either way (the split forward computes
    the same function).
    ``torch.autograd.grad`` is used, so no parameter's ``.grad`` is touched."""
    ffns = dict(ffn_layers(model))
    x, y = x.to(device), y.to(device)
    for i, ffn in split_layers(model):
        split = ffn.path_split()
        if split is None:
            continue
        forward, dense_w, sparse_w, shared = split
        watched = ffn.watched_parameters()
        wanted = [dense_w[m] for m in shared] + [sparse_w[m] for m in shared] + list(watched.values())
        with patched_forwards([ffns[i]], [_recomputed(forward)]):
            grads = _gradients_of(model, x, y, wanted, autocast)
        n = len(shared)
        yield i, {"dense": dict(zip(shared, grads[:n])), "sparse": dict(zip(shared, grads[n:2 * n])),
                  "shared": shared, "watched": dict(zip(watched, grads[2 * n:]))}


def _gradients_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, wanted: list[torch.Tensor],
                  autocast: AutocastFactory) -> tuple[torch.Tensor, ...]:
    """d(training loss on (x, y)) / d(each of `wanted`), with every other parameter frozen for
    the pass. Frozen, the layers below the split one record no graph, and those above keep only
    what carries the gradient down to it (no weight gradients, no [vocab, d] one in the loss's
    forward). Their graph is gone on return: a graph kept past the next pass's forward held the
    lower layers' activations twice, which grew the probe's peak with depth (#27)."""
    with _only_requiring_grad(model, wanted):  # through the backward: it recomputes the split
        with autocast():
            loss = model(x, y, return_logits=False).loss
        return torch.autograd.grad(loss, wanted)


def _recomputed(forward: Callable) -> Callable:
    """`forward` under activation checkpointing: the split layer's unfused activations (several
    [tokens, hidden] tensors where the fused training path keeps two) are recomputed in its
    backward instead of held through the whole pass, so the peak stays at a training step's."""

    def run(x: torch.Tensor, return_stats: bool = False):
        return checkpoint(forward, x, return_stats, use_reentrant=False)

    return run


@contextmanager
def _only_requiring_grad(model: nn.Module, wanted: list[torch.Tensor]) -> Iterator[None]:
    """Within the block, of the model's parameters only those in `wanted` require a gradient
    (tensors outside the model, such as the split's weight copies, are left as they are)."""
    keep = {id(t) for t in wanted}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


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
    """``interference/L{i}/...`` of every layer with two paths sharing projections, plus the
    |gradient| of its watched parameters on this batch, from one forward + backward.

    Leaves every ``.grad``, the parameters and the RNG as they were. Cost: one forward and
    backward on (x, y) per split layer (:func:`layer_splits`), each summarised before the next,
    so its memory stays at or below a training micro-step's on the same rows; pass a few
    sequences (e.g. the first val batch's rows).
    """
    if not split_layers(model):
        return {}
    out = {}
    for i, split in layer_splits(model, x, y, device, autocast):
        for name, value in interference_summary(split).items():
            out[layer_key("interference", i, name)] = value
        out.update(layer_keys(i, {k: g.detach().abs().float().item() for k, g in split["watched"].items()}))
    return out


# ---------------------------------------------------------------------------- knock-out


def knockout_names(model: nn.Module) -> list[str]:
    """The knock-outs the model's layers offer, in a stable order."""
    names: dict[str, None] = {}
    for _, ffn in ffn_layers(model):
        names.update(dict.fromkeys(ffn.knockouts()))
    return list(names)


@contextmanager
def forced_route(model: nn.Module, route: str | None) -> Iterator[nn.Module]:
    """Within the block every layer offering knock-out `route` runs it (e.g. "dense_only");
    None changes nothing. Patches the model's modules: do not use on a model another thread is
    running at the same time."""
    offered = knockout_names(model)
    if route is not None and route not in offered:
        choices = ", ".join(offered) or "none (no knock-outs)"
        raise ValueError(f"route must be one of {choices}; got {route!r}")
    with ExitStack() as stack:
        for _, ffn in ffn_layers(model) if route else []:
            context = ffn.knockouts().get(route)
            if context is not None:
                stack.enter_context(context())
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
    """Val loss of the full model ("mix") and under each knock-out its layers offer (the dual
    path: "dense_only", "sparse_only"); {} for a model without knock-outs. `batches` is a list
    of (x, y) (``Trainer.val``), iterated once per route."""
    names = knockout_names(model)
    if not names:
        return {}
    batches = list(batches)
    out = {}
    for name in [None, *names]:
        with forced_route(model, name):
            out[name or "mix"] = mean_val_loss(model, batches, device, autocast)
    return out


__all__ = ["ffn_layers", "probed_layers", "split_layers", "routing_metrics",
           "threshold_grad_norms", "RoutingProbe", "interference_probe", "split_gradients", "layer_splits",
           "forced_route",
           "knockout_names", "knockout_losses", "mean_val_loss", "interference_summary"]
