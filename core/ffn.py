"""Feed-forward variants: SwiGLU and the report's dual path (dense + learned-threshold sparse).

Every FFN maps ``x [B, T, d] -> (y [B, T, d], aux_loss scalar, stats dict)``; stats are only
computed when asked. Variants are registered by name in :data:`FFN_REGISTRY`.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ModelConfig

FFN_REGISTRY: dict[str, type[nn.Module]] = {}


def register_ffn(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an FFN to the registry under `name`."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        FFN_REGISTRY[name] = cls
        return cls

    return add


def build_ffn(config: ModelConfig) -> nn.Module:
    """Instantiate the FFN variant named by ``config.ffn``."""
    return FFN_REGISTRY[config.ffn](config)


def _projection_count(config: ModelConfig) -> int:
    """d x h matrices per FFN: SwiGLU 3, dual share=all 3, updown 4, none 6."""
    if config.ffn == "swiglu":
        return 3
    return {"all": 3, "updown": 4, "none": 6}[config.ffn_share]


def ffn_hidden_size(config: ModelConfig) -> int:
    """Hidden width of the FFN: explicit, width-matched, or parameter-matched to SwiGLU."""
    if config.ffn_hidden:
        return config.ffn_hidden
    if config.ffn_match == "width":
        return config.intermediate_size
    return max(1, round(config.intermediate_size * 3 / _projection_count(config)))


def _linear(d_in: int, d_out: int) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=False)


@register_ffn("swiglu")
class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, as Qwen2MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = ffn_hidden_size(config)
        self.gate_proj = _linear(config.hidden_size, hidden)
        self.up_proj = _linear(config.hidden_size, hidden)
        self.down_proj = _linear(hidden, config.hidden_size)

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        y = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return y, x.new_zeros(()), {}


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)``: straight-through in z, rectangle-kernel pseudo-gradient in theta.

    d/dtheta uses ``-(theta / eps) * 1[|z - theta| < eps / 2]`` (JumpReLU SAEs), so theta
    learns although the step function has zero derivative almost everywhere.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, theta = ctx.saved_tensors
        grad_z = grad_out * (z > theta).to(grad_out.dtype)
        return grad_z, _jump_theta_grad(z, theta, ctx.eps, grad_out), None


def _jump_theta_grad(z: torch.Tensor, theta: torch.Tensor, eps: float, grad_jump: torch.Tensor):
    """Rectangle-kernel pseudo-gradient of ``sum(grad_jump * J(z))`` w.r.t. theta, where
    J(z) = z * H(z - theta): ``-(theta / eps) * 1[|z - theta| < eps / 2]`` per element."""
    window = ((z - theta.to(z.dtype)).abs() < eps / 2).to(grad_jump.dtype)
    total = -(theta.to(grad_jump.dtype) / eps) * (grad_jump * window).sum()
    return total.to(theta.dtype).reshape(theta.shape)


def _rms(t: torch.Tensor) -> torch.Tensor:
    """Per-token rms over the hidden dim, without gradient: thresholds live in rms units."""
    return t.detach().float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt().to(t.dtype)


def threshold_activation(kind: str, g: torch.Tensor, theta: torch.Tensor, eps: float):
    """Sparse-path activation of the gate pre-activation `g` with learned scalar `theta`."""
    if kind == "jumprelu":
        scale = _rms(g)
        return _JumpReLU.apply(g / scale, theta.to(g.dtype), eps) * scale
    if kind == "shifted_relu":
        scale = _rms(g)
        return F.relu(g / scale - theta.to(g.dtype)) * scale
    if kind == "cats":
        a = F.silu(g)
        score = a.abs() / _rms(a)
        soft = torch.sigmoid((score - theta.to(g.dtype)) / eps)
        hard = (score > theta.to(g.dtype)).to(g.dtype)
        return a * (hard + (soft - soft.detach()))  # exactly the hard mask, gradient of the soft
    raise ValueError(f"unknown threshold type {kind!r}")


class _FusedDualMix(torch.autograd.Function):
    """``c_d * silu(g) * u + c_s * thr(g) * u`` for a shared gate/up (``share="all"``).

    Saves only g, u and per-token scalars and recomputes the h-sized intermediates in backward,
    instead of autograd storing every one of them; gradients equal the plain formula's
    (straight-through / rectangle-kernel for jumprelu, exact for shifted_relu).
    """

    @staticmethod
    def forward(ctx, g, u, c_d, c_s, theta, kind: str, eps: float):
        scale = _rms(g)
        active, sparse_act = _sparse_parts(kind, g, scale, theta)
        ctx.save_for_backward(g, u, c_d, c_s, theta, scale)
        ctx.kind, ctx.eps = kind, eps
        return (c_d * F.silu(g) + c_s * sparse_act) * u

    @staticmethod
    def backward(ctx, grad_h):
        g, u, c_d, c_s, theta, scale = ctx.saved_tensors
        active, sparse_act = _sparse_parts(ctx.kind, g, scale, theta)
        sig = torch.sigmoid(g)
        silu = g * sig
        grad_dense, grad_sparse = grad_h * c_d, grad_h * c_s
        grad_u = grad_dense * silu + grad_sparse * sparse_act
        grad_pre = grad_h * u  # gradient w.r.t. each path's activation before the mix weight
        grad_g = grad_pre * (c_d * sig * (1 + g * (1 - sig)) + c_s * active)
        grad_c_d = (grad_pre * silu).sum(-1, keepdim=True)
        grad_c_s = (grad_pre * sparse_act).sum(-1, keepdim=True)
        grad_theta = _theta_grad(ctx.kind, g, scale, theta, ctx.eps, grad_pre * c_s)
        return grad_g, grad_u, grad_c_d, grad_c_s, grad_theta, None, None


def _sparse_parts(kind: str, g: torch.Tensor, scale: torch.Tensor, theta: torch.Tensor):
    """(d thr(g)/dg as used in backward, thr(g)) for jumprelu and shifted_relu."""
    shifted = g / scale - theta.to(g.dtype)  # the same expressions as the plain path, bit for bit
    active = (shifted > 0).to(g.dtype)
    if kind == "jumprelu":
        return active, g / scale * active * scale
    return active, shifted * active * scale


def _theta_grad(kind, g, scale, theta, eps, grad_act) -> torch.Tensor:
    if kind == "jumprelu":  # the activation is J(z) * scale: d/dJ(z) = grad_act * scale
        return _jump_theta_grad(g / scale, theta, eps, grad_act * scale)
    # d/dtheta relu(z - theta) * scale = -scale where active
    total = -(grad_act * (g / scale > theta.to(g.dtype)).to(g.dtype) * scale).sum()
    return total.to(theta.dtype).reshape(theta.shape)


FUSED_THRESHOLDS = ("jumprelu", "shifted_relu")


class Router(nn.Module):
    """Soft 2-way router (dense, sparse) in fp32, zero-initialised so it starts at 1/2, 1/2."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, 2)
        self.temperature = config.router_temperature
        self.z_loss_weight = config.router_z_loss
        self.balance_weight = config.router_balance_loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return weights [..., 2] (fp32) and the router's auxiliary loss."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.proj.weight.float(), self.proj.bias.float())
        logits = logits / self.temperature
        weights = logits.softmax(-1)
        return weights, self._aux_loss(logits, weights)

    def _aux_loss(self, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        loss = self.z_loss_weight * torch.logsumexp(logits, -1).pow(2).mean()
        if self.balance_weight:
            # Switch-Transformer balance: n * sum_i (share of tokens argmax-routed to i) * mean p_i
            flat = weights.reshape(-1, 2)
            share = F.one_hot(flat.argmax(-1), 2).float().mean(0)
            loss = loss + self.balance_weight * 2 * (share * flat.mean(0)).sum()
        return loss


@register_ffn("dual")
class DualPathFFN(nn.Module):
    """Report's dual path: a router mixes a dense SwiGLU path and a learned-threshold sparse path.

    ``share="all"``: one gate/up/down; ``updown``: the sparse path has its own gate;
    ``none``: each path has its own gate/up/down (the report's "initial design").
    Output = ``r_d * a_d * dense + r_s * a_s * sparse`` (mixed before ``down`` when it is shared).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, h = config.hidden_size, ffn_hidden_size(config)
        self.share = config.ffn_share
        self.threshold_kind = config.ffn_threshold
        self.bandwidth = config.threshold_bandwidth
        self.gate_proj, self.up_proj, self.down_proj = _linear(d, h), _linear(d, h), _linear(h, d)
        if self.share in ("updown", "none"):
            self.sparse_gate_proj = _linear(d, h)
        if self.share == "none":
            self.sparse_up_proj, self.sparse_down_proj = _linear(d, h), _linear(h, d)
        self.router = Router(config)
        # The fused kernel covers the shared-projection path of the two thresholds it knows.
        self.fused = config.ffn_fused and self.share == "all" and self.threshold_kind in FUSED_THRESHOLDS
        self.threshold = nn.Parameter(torch.tensor(float(config.threshold_init)))
        self.alpha_dense = nn.Parameter(torch.tensor(1.0))
        self.alpha_sparse = nn.Parameter(torch.tensor(1.0))

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden activations of the dense and the sparse path, each [..., h]."""
        g, u = self.gate_proj(x), self.up_proj(x)
        dense = F.silu(g) * u
        g_s = g if self.share == "all" else self.sparse_gate_proj(x)
        u_s = self.sparse_up_proj(x) if self.share == "none" else u
        sparse_act = threshold_activation(self.threshold_kind, g_s, self.threshold, self.bandwidth)
        return dense, sparse_act * u_s

    def forward(self, x: torch.Tensor, return_stats: bool = False):
        weights, aux = self.router(x)
        r_d, r_s = (w.unsqueeze(-1).to(x.dtype) for w in weights.unbind(-1))
        c_d, c_s = r_d * self.alpha_dense.to(x.dtype), r_s * self.alpha_sparse.to(x.dtype)
        if self.fused and not return_stats:
            g, u = self.gate_proj(x), self.up_proj(x)
            mixed = _FusedDualMix.apply(g, u, c_d, c_s, self.threshold, self.threshold_kind, self.bandwidth)
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


def ffn_flops_per_token(config: ModelConfig) -> int:
    """Forward matmul FLOPs of one FFN layer per token (2 per multiply-add), router included."""
    hidden = ffn_hidden_size(config)
    flops = 2 * _projection_count(config) * config.hidden_size * hidden
    if config.ffn == "dual":
        flops += 2 * config.hidden_size * 2
    return flops


__all__ = ["FFN_REGISTRY", "register_ffn", "build_ffn", "ffn_hidden_size", "ffn_flops_per_token",
           "threshold_activation", "SwiGLU", "DualPathFFN", "Router"]
