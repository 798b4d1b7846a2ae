"""Token-choice top-k mixture of SwiGLU experts (Switch / Mixtral style), dropless.

A router scores ``moe_experts`` experts per token; each token is sent to its ``moe_top_k``
best and the outputs are summed with the router weights (renormalised over the chosen ones
when ``moe_renormalize``). No capacity limit: every token reaches every expert it chose.
Aux loss: the Switch load balance ``n * sum_i f_i * P_i`` plus the router z-loss.

Width: ``ffn_match=width`` gives each expert SwiGLU's width (with top-1, the active parameters
per token equal SwiGLU's); ``active`` matches the per-token parameters for any k; ``params``
matches the total. The report's 2-way soft router is the degenerate neighbour of this family:
two paths, both always used, softly weighted.

Diagnostics per layer (``moe/L{i}/name``): load_e{i} (share of routing slots going to expert i),
load_max (largest share times n: 1 = balanced, n = everything to one expert), entropy (mean
per-token router entropy, bits), entropy_of_mean (entropy of the mean weights, bits).
"""


import torch
from torch import nn

from core.ffns.base import FFN, UnitActivity
from core.ffns.moe_spec import SPEC
from core.ffns.router import Router, entropy_bits
from core.ffns.swiglu import SwiGLU
from core.variants import register_ffn


def _expert_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the experts' outputs come in: autocast's (bf16 products) where it is on, else
    x's. Summing them in it keeps ``index_add`` from mixing dtypes (an error) without a cast."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


@register_ffn(SPEC)
class MixtureOfExperts(FFN):
    def __init__(self, config):
        super().__init__(config)
        options = config.ffn_options
        self.num_experts, self.top_k = options["moe_experts"], options["moe_top_k"]
        self.renormalize = options["moe_renormalize"]
        self.router = Router(config.hidden_size, self.num_experts, 1.0, options["router_z_loss"],
                             options["router_balance_loss"], self.top_k, mode=options["moe_router"])
        self.experts = nn.ModuleList(SwiGLU(config) for _ in range(self.num_experts))

    def post_init(self) -> None:
        # a learned router keeps the model's N(0, 0.02) init; the frozen control draws its map
        if self.router.mode == "frozen_random":
            self.router.reset_parameters()

    def route(self, x: torch.Tensor):
        """Router weights [N, n] (fp32), aux loss, and each token's chosen experts and their
        weights [N, k], for tokens x [N, d]."""
        weights, aux = self.router(x)
        top_w, top_i = weights.topk(self.top_k, -1)
        if self.renormalize:
            top_w = top_w / top_w.sum(-1, keepdim=True)
        return weights, aux, top_w, top_i

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        flat = x.reshape(-1, x.shape[-1])
        weights, aux, top_w, top_i = self.route(flat)
        out = flat.new_zeros(flat.shape, dtype=_expert_dtype(flat))
        for index, expert in enumerate(self.experts):
            token, slot = (top_i == index).nonzero(as_tuple=True)
            if token.numel():
                y, _, _ = expert(flat[token])
                out = out.index_add(0, token, y * top_w[token, slot, None].to(y.dtype))
        stats = {}
        if return_stats:
            lead = x.shape[:-1]
            stats = {"top_expert": top_i[:, 0].float().reshape(lead),
                     "top_weight": weights.max(-1).values.reshape(lead).detach()}
        return out.view(x.shape), aux, stats

    def unit_activity(self, x: torch.Tensor) -> UnitActivity:
        """Per expert: the weight its output gets where the token chose it, 0 elsewhere (the
        renormalised weight when moe_renormalize), so > 0 means "this token reached it"."""
        flat = x.reshape(-1, x.shape[-1])
        _, _, top_w, top_i = self.route(flat)
        values = torch.zeros(flat.shape[0], self.num_experts, device=x.device, dtype=top_w.dtype)
        values = values.scatter(1, top_i, top_w)
        return UnitActivity(values.view(*x.shape[:-1], self.num_experts), unit="expert")

    def probe_sums(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        weights = self.router.logits(flat).double().softmax(-1)
        chosen = weights.topk(self.top_k, -1).indices
        return {"tokens": torch.tensor(float(flat.shape[0]), dtype=torch.float64),
                "slots": nn.functional.one_hot(chosen, self.num_experts).double().sum((0, 1)),
                "weight": weights.sum(0), "entropy": entropy_bits(weights).sum()}

    def probe_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        n = sums["tokens"].item()
        load = sums["slots"] / sums["slots"].sum()
        out = {f"moe/load_e{i}": value for i, value in enumerate(load.tolist())}
        out["moe/load_max"] = load.max().item() * self.num_experts
        out["moe/entropy"] = sums["entropy"].item() / n
        out["moe/entropy_of_mean"] = entropy_bits(sums["weight"] / n).item()
        return out

