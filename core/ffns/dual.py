"""The report's dual-path FFN: a learned 2-way router mixes a dense SwiGLU path and a sparse
path whose activation is cut by a learned scalar threshold (core.ffns.thresholds).

``ffn_share="all"``: one gate/up/down; ``updown``: the sparse path has its own gate; ``none``:
each path has its own gate/up/down (the report's "initial design"). Output =
``r_d * a_d * dense + r_s * a_s * sparse`` (mixed before ``down`` when it is shared).

Diagnostics it logs per layer (``group/L{i}/name``; definitions also in core.diagnostics):

routing (router weights w = softmax(logits / temperature), w = (w_dense, w_sparse))
  sparse_weight    mean w_sparse over tokens
  mostly_sparse    fraction of tokens with w_sparse > 0.5
  all_sparse       fraction of tokens with w_sparse > 0.95 (sent wholly to the sparse path)
  all_dense        fraction of tokens with w_sparse < 0.05 (sent wholly to the dense path)
  entropy          mean per-token entropy H(w), in bits (1 = an even split, 0 = a hard choice)
  entropy_of_mean  H(mean w), in bits
  mutual_info      entropy_of_mean - entropy = I(path; token) >= 0
  collapsed        1.0 when sparse_weight is outside [0.05, 0.95], else 0.0
  logit_rms        sqrt(mean logit^2) over tokens and both logits: what the z-loss keeps small
threshold (theta is relative to the per-token rms of the score's base, see thresholds.score)
  theta            theta as learned;  theta_raw  theta * mean rms: the cut in the gate's units
  window_frac      fraction of (token, unit) scores that pass gradient to theta (thresholds.window)
  grad             |d loss / d theta|
sparsity
  zero_frac        fraction of exact zeros in the sparse path's activation thr(g) * u
  dead_frac        fraction of hidden units never active on the probe tokens
  always_on_frac   fraction of hidden units active on every probe token
alpha              dense / sparse: the learned path scales a_d, a_s
Knock-outs: dense_only / sparse_only route every token wholly to one path.
"""

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from core.ffns.base import FFN, PathSplit, UnitActivity, linear, patched_forwards, unit_sparsity
from core.ffns.dual_spec import SPEC
from core.ffns.router import Router, entropy_bits
from core.ffns.thresholds import fused_mix, score, threshold_activation, window
from core.variants import register_ffn

COLLAPSE_BAND = (0.05, 0.95)  # mean sparse weight outside this band: the router has collapsed
SATURATED = 0.05  # a token with a path's weight below this is sent wholly to the other path
PROJECTIONS = ("gate", "up", "down")
SCORE_SPAN = 6.0  # histograms of the threshold's score cover |z| <= this (rms units)


def router_mode(options: dict) -> dict:
    """Router arguments of the ``ffn_router`` option: a learned router or one of its controls.
    ``sparse_only`` / ``dense_only`` train one path alone (the other gets weight 0 throughout),
    unlike the knock-outs, which switch a path off in a model trained with both."""
    kind = options["ffn_router"]
    fixed = {"fixed": options["router_fixed_weight"], "sparse_only": 1.0, "dense_only": 0.0}
    if kind in fixed:
        return {"mode": "fixed", "fixed_weights": (1.0 - fixed[kind], fixed[kind])}
    return {"mode": kind}


@register_ffn(SPEC)
class DualPathFFN(FFN):
    def __init__(self, config):
        super().__init__(config)
        options = config.ffn_options
        d, h = config.hidden_size, self.hidden
        self.share = options["ffn_share"]
        self.threshold_kind = options["ffn_threshold"]
        self.bandwidth = options["threshold_bandwidth"]
        self.gate_proj, self.up_proj, self.down_proj = linear(d, h), linear(d, h), linear(h, d)
        if self.share in ("updown", "none"):
            self.sparse_gate_proj = linear(d, h)
        if self.share == "none":
            self.sparse_up_proj, self.sparse_down_proj = linear(d, h), linear(h, d)
        self.router = Router(d, 2, options["router_temperature"], options["router_z_loss"],
                             options["router_balance_loss"], **router_mode(options))
        # The fused kernel covers the shared-projection path.
        self.fused = options["ffn_fused"] and self.share == "all"
        self.threshold = torch.nn.Parameter(torch.tensor(float(options["threshold_init"])))
        self.alpha_dense = torch.nn.Parameter(torch.tensor(1.0))
        self.alpha_sparse = torch.nn.Parameter(torch.tensor(1.0))

    def post_init(self) -> None:
        # a zero learned router starts every token at (1/2, 1/2)
        self.router.reset_parameters()

    def sparse_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate and up pre-activations of the sparse path (g_s, u_s)."""
        gate = self.gate_proj if self.share == "all" else self.sparse_gate_proj
        up = self.sparse_up_proj if self.share == "none" else self.up_proj
        return gate(x), up(x)

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden activations of the dense and the sparse path, each [..., h]."""
        g, u = self.gate_proj(x), self.up_proj(x)
        g_s = g if self.share == "all" else self.sparse_gate_proj(x)
        u_s = self.sparse_up_proj(x) if self.share == "none" else u
        return F.silu(g) * u, self.activation(g_s) * u_s

    def activation(self, g: torch.Tensor) -> torch.Tensor:
        return threshold_activation(self.threshold_kind, g, self.threshold, self.bandwidth)

    def mix_weights(self, x: torch.Tensor):
        """Router weights [..., 2], aux loss and the per-token path scales c_d, c_s [..., 1]."""
        weights, aux = self.router(x)
        r_d, r_s = (w.unsqueeze(-1).to(x.dtype) for w in weights.unbind(-1))
        return weights, aux, r_d * self.alpha_dense.to(x.dtype), r_s * self.alpha_sparse.to(x.dtype)

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        weights, aux, c_d, c_s = self.mix_weights(x)
        if self.fused and not return_stats:
            g, u = self.gate_proj(x), self.up_proj(x)
            mixed = fused_mix(g, u, c_d, c_s, self.threshold, self.threshold_kind, self.bandwidth)
            return self.down_proj(mixed), aux, {}
        dense, sparse = self._paths(x)
        if self.share == "none":
            y = c_d * self.down_proj(dense) + c_s * self.sparse_down_proj(sparse)
        else:
            y = self.down_proj(c_d * dense + c_s * sparse)
        stats = self._stats(weights, sparse) if return_stats else {}
        return y, aux, stats

    def _stats(self, weights: torch.Tensor, sparse: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "router_sparse": weights[..., 1].detach(),
            "zero_frac": (sparse == 0).float().mean(-1).detach(),
            "theta": self.threshold.detach().float(),
            "alpha_dense": self.alpha_dense.detach().float(),
            "alpha_sparse": self.alpha_sparse.detach().float(),
        }

    # diagnostics ---------------------------------------------------------------------------------
    def probe_sums(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        g, u = self.sparse_inputs(x)
        return {**routing_sums(self.router.logits(x)),
                **threshold_sums(self.threshold_kind, g, u, self.threshold.detach(), self.bandwidth)}

    def probe_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        theta = self.threshold.item()
        groups = {"routing": routing_summary(sums), **threshold_summary(sums, theta),
                  "alpha": {"dense": self.alpha_dense.item(), "sparse": self.alpha_sparse.item()}}
        return {f"{group}/{name}": value for group, values in groups.items()
                for name, value in values.items()}

    def watched_parameters(self) -> dict[str, torch.Tensor]:
        return {"threshold/grad": self.threshold}

    def unit_activity(self, x: torch.Tensor) -> UnitActivity:
        """Each sparse-path unit's |thr(g)|, and the score g / rms(g) that theta cuts.

        |thr(g)| rather than thr(g) * u: the threshold alone decides whether a unit is on (the
        probe's unit_active counts score > theta), while u is a signed value that carries
        content, so thr(g) * u > 0 would not mean "active". The magnitude, because cats (and a
        negative theta) pass negative gate values. For jumprelu it is the gate pre-activation g
        of every unit that fires: a unit's top contexts are where its gate is largest."""
        gate = self.gate_proj if self.share == "all" else self.sparse_gate_proj
        g = gate(x).float()
        z, _ = score(self.threshold_kind, g)
        low = 0.0 if self.threshold_kind == "cats" else -SCORE_SPAN  # cats' score is a magnitude
        return UnitActivity(self.activation(g).abs(), score=z, cut=self.threshold.item(),
                            score_range=(low, SCORE_SPAN))

    def path_split(self) -> PathSplit:
        """Each shared matrix as two leaves, one per path: the dense path uses the parameter
        itself, the sparse path a copy (one copy, not two: the probe's memory). With equal values
        the output is the model's (``down(c_d*dense + c_s*sparse) = down(c_d*dense) +
        down(c_s*sparse)``), and autograd delivers each path's share of the gradient."""
        dense_w, sparse_w, shared = {}, {}, []
        for name in PROJECTIONS:
            own = getattr(self, f"{name}_proj").weight
            separate = getattr(self, f"sparse_{name}_proj", None)
            if separate is None:
                shared.append(name)
                dense_w[name] = own
                sparse_w[name] = own.detach().clone().requires_grad_(True)
            else:
                dense_w[name], sparse_w[name] = own, separate.weight

        def forward(x: torch.Tensor, return_stats: bool = False):
            _, aux, c_d, c_s = self.mix_weights(x)
            dense = F.silu(F.linear(x, dense_w["gate"])) * F.linear(x, dense_w["up"])
            sparse = self.activation(F.linear(x, sparse_w["gate"])) * F.linear(x, sparse_w["up"])
            y = F.linear(c_d * dense, dense_w["down"]) + F.linear(c_s * sparse, sparse_w["down"])
            return y, aux, {}

        return forward, dense_w, sparse_w, shared

    def knockouts(self) -> dict:
        return {"dense_only": lambda: self._forced(0), "sparse_only": lambda: self._forced(1)}

    @contextmanager
    def _forced(self, index: int):
        """Within the block the router sends every token wholly to path `index`, no aux loss."""

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            weights = torch.zeros(*x.shape[:-1], 2, device=x.device, dtype=torch.float32)
            weights[..., index] = 1.0
            return weights, torch.zeros((), device=x.device, dtype=torch.float32)

        with patched_forwards([self.router], [forward]):
            yield



def routing_sums(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Additive statistics of router logits [..., 2], so batches can be pooled exactly."""
    logits = logits.detach().reshape(-1, 2).double()
    w = logits.softmax(-1)
    return {"tokens": torch.tensor(float(w.shape[0]), dtype=torch.float64), "weight": w.sum(0),
            "mostly_sparse": (w[:, 1] > 0.5).double().sum(), "entropy": entropy_bits(w).sum(),
            "all_sparse": (w[:, 0] < SATURATED).double().sum(),
            "all_dense": (w[:, 1] < SATURATED).double().sum(),
            "logit_sq": logits.pow(2).sum()}


def routing_summary(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    n = sums["tokens"].item()
    mean_w = sums["weight"] / n
    sparse = mean_w[1].item()
    entropy, of_mean = sums["entropy"].item() / n, entropy_bits(mean_w).item()
    low, high = COLLAPSE_BAND
    return {"sparse_weight": sparse, "mostly_sparse": sums["mostly_sparse"].item() / n,
            "all_sparse": sums["all_sparse"].item() / n, "all_dense": sums["all_dense"].item() / n,
            "entropy": entropy, "entropy_of_mean": of_mean, "mutual_info": of_mean - entropy,
            "collapsed": float(not low <= sparse <= high),
            "logit_rms": math.sqrt(sums["logit_sq"].item() / (2 * n))}


def threshold_sums(kind: str, g: torch.Tensor, u: torch.Tensor, theta: torch.Tensor,
                    bandwidth: float) -> dict[str, torch.Tensor]:
    """Additive threshold/sparsity statistics of one batch of sparse-path inputs g, u [..., h]."""
    z, scale = score(kind, g.detach().float())
    active = z > theta.item()
    passes = window(kind, z, theta.item(), bandwidth)
    sparse = threshold_activation(kind, g, theta, bandwidth) * u  # the model's activation
    h = g.shape[-1]
    return {"threshold_tokens": torch.tensor(float(scale.numel()), dtype=torch.float64),
            "scale": scale.double().sum(), "window": passes.double().sum(),
            "zeros": (sparse == 0).double().sum(), "unit_active": active.reshape(-1, h).double().sum(0)}


def threshold_summary(sums: dict[str, torch.Tensor], theta: float) -> dict[str, dict[str, float]]:
    n = sums["threshold_tokens"].item()
    units = sums["unit_active"]
    cells = n * units.numel()
    return {"threshold": {"theta": theta, "theta_raw": theta * sums["scale"].item() / n,
                          "window_frac": sums["window"].item() / cells},
            "sparsity": unit_sparsity(n, sums["zeros"].item(), units)}
