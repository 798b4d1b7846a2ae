"""The learned-threshold activations of the dual path's sparse path, all maths in one place.

Three kinds: ``jumprelu`` (z * H(z - theta), straight-through with a rectangle-kernel
pseudo-gradient for theta), ``shifted_relu`` (relu(z - theta), exact gradients) and ``cats``
(silu(g) masked where |silu(g)| / rms < theta, sigmoid surrogate gradient). theta is a learned
scalar in units of the per-token rms. Here: the score and the gradient window (diagnostics), the
plain autograd form (the reference) and the fused mix kernel of the dual path (same maths,
recomputed in backward chunk by chunk).
"""

import torch
import torch.nn.functional as F

from core.ffns.dual_spec import THRESHOLD_KINDS as KINDS  # one list, in the torch-free spec

CATS_WINDOW = 3.0  # cats: theta's gradient window, in multiples of the sigmoid bandwidth


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


def score(kind: str, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, scale) of gate pre-activations `g` [..., h]: what theta is compared with, and the
    per-token rms [..., 1] it is measured in. jumprelu / shifted_relu: g / rms(g); cats:
    |silu(g)| / rms(silu(g)). Differentiable in g (the scale is not)."""
    if kind not in KINDS:
        raise ValueError(f"unknown threshold type {kind!r}; one of {', '.join(KINDS)}")
    if kind == "cats":
        a = F.silu(g)
        scale = _rms(a)
        return a.abs() / scale, scale
    scale = _rms(g)
    return g / scale, scale


def window(kind: str, z: torch.Tensor, theta: float, bandwidth: float) -> torch.Tensor:
    """Where theta gets gradient from a unit with score `z`: jumprelu's rectangle kernel
    |z - theta| < bandwidth / 2; shifted_relu every active unit (z > theta); cats where the
    sigmoid estimator's slope is above ~18% of its peak, |z - theta| < CATS_WINDOW * bandwidth."""
    if kind == "jumprelu":
        return (z - theta).abs() < bandwidth / 2
    if kind == "shifted_relu":
        return z > theta
    return (z - theta).abs() < CATS_WINDOW * bandwidth


def threshold_activation(kind: str, g: torch.Tensor, theta: torch.Tensor, eps: float):
    """Sparse-path activation of the gate pre-activation `g` with learned scalar `theta`: the
    plain (autograd) form that the fused kernel is checked against."""
    z, scale = score(kind, g)
    theta = theta.to(g.dtype)
    if kind == "jumprelu":
        return _JumpReLU.apply(z, theta, eps) * scale
    if kind == "shifted_relu":
        return F.relu(z - theta) * scale
    soft = torch.sigmoid((z - theta) / eps)
    hard = (z > theta).to(g.dtype)
    return F.silu(g) * (hard + (soft - soft.detach()))  # exactly the hard mask, gradient of the soft


# Elements per chunk of the fused kernel on CPU (1 MB of fp32): its temporaries stay a few
# chunks in size instead of a dozen h-sized buffers, at no cost in speed from 128k elements
# up (tiny: 64k 37.3 ms, 256k 34.1 ms, one chunk 34.6 ms per FFN forward + backward).
# On accelerators and under torch.compile: one chunk.
CHUNK_ELEMENTS = 1 << 18


class _FusedDualMix(torch.autograd.Function):
    """``c_d * silu(g) * u + c_s * thr(g) * u`` for a shared gate/up (``share="all"``).

    Saves only g, u and per-token scalars; backward recomputes the h-sized intermediates chunk
    by chunk instead of autograd storing every one of them. Gradients equal the plain
    formula's (straight-through / rectangle kernel for jumprelu, exact for shifted_relu, the
    sigmoid surrogate for cats).
    """

    @staticmethod
    def forward(ctx, g, u, c_d, c_s, theta, kind: str, eps: float):
        shape, g, u, c_d, c_s = g.shape, *_rows(g, u, c_d, c_s)
        # Decided here for backward too: is_compiling() is False when compiled code runs it.
        # The chunked path fills `out` in place, so it must never be traced: torch 2.11's compile
        # drops the gradient of a returned tensor edited in place (pytorch/pytorch#180642).
        chunked = g.device.type == "cpu" and not torch.compiler.is_compiling()
        if not chunked:  # one functional pass: what torch.compile and GPUs fuse best
            out, scale = _mix_chunk(kind, theta, g, u, c_d, c_s)
        else:
            out, scale = torch.empty_like(g), torch.empty_like(c_d)
            for rows in _row_chunks(g):
                _mix_chunk(kind, theta, g[rows], u[rows], c_d[rows], c_s[rows], (out[rows], scale[rows]))
        ctx.save_for_backward(g, u, c_d, c_s, theta, scale)
        ctx.kind, ctx.eps, ctx.shape, ctx.chunked = kind, eps, shape, chunked
        return out.view(shape)

    @staticmethod
    def backward(ctx, grad_h):
        g, u, c_d, c_s, theta, scale = ctx.saved_tensors
        (grad_h,) = _rows(grad_h)
        args = (ctx.kind, ctx.eps, theta)
        if not ctx.chunked:
            grads = _mix_chunk_backward(*args, g, u, c_d, c_s, scale, grad_h)
        else:
            grads = [torch.empty_like(t) for t in (g, u, c_d, c_s, c_s)]
            for rows in _row_chunks(g):
                _mix_chunk_backward(*args, g[rows], u[rows], c_d[rows], c_s[rows], scale[rows],
                                    grad_h[rows], [t[rows] for t in grads])
        grad_g, grad_u, grad_c_d, grad_c_s, theta_terms = grads
        grad_theta = _theta_grad(ctx.kind, ctx.eps, theta, scale, c_s, theta_terms)
        lead = ctx.shape[:-1]
        return (grad_g.view(ctx.shape), grad_u.view(ctx.shape), grad_c_d.view(*lead, 1),
                grad_c_s.view(*lead, 1), grad_theta, None, None)


def _rows(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor as a contiguous 2-d [tokens, last dim] view."""
    return [t.contiguous().view(-1, t.shape[-1]) for t in tensors]


def _row_chunks(t: torch.Tensor) -> list[slice]:
    """Slices splitting the rows of a 2-d `t` into chunks of about CHUNK_ELEMENTS."""
    rows = max(1, CHUNK_ELEMENTS // t.shape[1])
    return [slice(start, start + rows) for start in range(0, t.shape[0], rows)]


def _mask(compare, a: torch.Tensor, b, eager: bool, out: torch.Tensor | None = None):
    """``compare(a, b)`` (torch.gt / torch.lt) as 0/1 in a's dtype. In CPU eager mode it is
    written directly (into `out` if given): boolean masks and ``torch.where`` take 4-15x longer
    than float arithmetic there; compiled, the plain form fuses into the surrounding kernel."""
    if not eager:
        return compare(a, b).to(a.dtype)
    return compare(a, b, out=torch.empty_like(a) if out is None else out)


def _parts(kind: str, theta, g: torch.Tensor, silu: torch.Tensor, scale: torch.Tensor, eager: bool):
    """(thr(g), its 0/1 active mask, score - theta) of one chunk, given the rms scale; the
    score is g / rms(g), or |silu(g)| / rms(silu(g)) for cats. (Comparing g with
    theta * rms instead is as exact, but compiles to a 5x slower CPU kernel.)"""
    above = (silu.abs() if kind == "cats" else g).div(scale).sub_(theta.to(g.dtype))
    active = _mask(torch.gt, above, 0.0, eager)
    if kind == "shifted_relu":
        return above.clamp(min=0).mul_(scale), active, above
    return (silu if kind == "cats" else g) * active, active, above


def _mix_chunk(kind, theta, g, u, c_d, c_s, out=(None, None)):
    """``(c_d * silu(g) + c_s * thr(g)) * u`` and the rms scale of one chunk; written into
    `out` = (mixed, scale) slices when given."""
    silu = F.silu(g)
    scale = _rms(silu if kind == "cats" else g)
    if out[1] is not None:
        scale = out[1].copy_(scale)
    sparse = _parts(kind, theta, g, silu, scale, eager=out[0] is not None)[0]
    if out[0] is None:
        return (c_d * silu + c_s * sparse) * u, scale
    return torch.mul(silu.mul_(c_d).addcmul_(sparse, c_s), u, out=out[0]), scale


def _mix_chunk_backward(kind, eps, theta, g, u, c_d, c_s, scale, grad_h, out=(None,) * 5):
    """One chunk's gradients [g, u, c_d, c_s, per-token theta terms]; written into `out`
    slices when given."""
    silu = F.silu(g)
    eager = out[0] is not None
    sparse, active, above = _parts(kind, theta, g, silu, scale, eager)
    grad_pre = grad_h * u  # gradient w.r.t. each path's activation before its mix weight
    grad_c_d = torch.sum(grad_pre * silu, -1, keepdim=True, out=out[2])
    grad_c_s = torch.sum(grad_pre * sparse, -1, keepdim=True, out=out[3])
    if kind == "cats":
        grad_g, theta_terms = _cats_backward(eps, g, silu, c_d, c_s, scale, above, active, grad_pre, out)
    else:
        grad_g, theta_terms = _gate_backward(kind, eps, g, c_d, c_s, above, active, grad_pre, eager, out)
    # last: it turns `silu` into the mix in place, after the backward helpers have read it
    grad_u = torch.mul(silu.mul_(c_d).addcmul_(sparse, c_s), grad_h, out=out[1])
    return grad_g, grad_u, grad_c_d, grad_c_s, theta_terms


def _gate_backward(kind, eps, g, c_d, c_s, above, active, grad_pre, eager, out):
    """jumprelu's and shifted_relu's (grad_g, theta terms): d thr / d g = 1 where active; theta
    terms sum grad_pre over the active set (shifted_relu) or the rectangle window (jumprelu).
    Consumes `above` and `grad_pre` in place."""
    masked = grad_pre * active
    grad_g = _silu_backward(grad_pre * c_d, g, out[0]).addcmul_(masked, c_s)
    if kind == "jumprelu":  # rectangle kernel: |g / rms - theta| < eps / 2
        distance = above.abs_()
        masked = grad_pre.mul_(_mask(torch.lt, distance, eps / 2, eager, out=distance))
    return grad_g, torch.sum(masked, -1, keepdim=True, out=out[4])


def _silu_backward(grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``grad * d silu(x) / dx`` in one pass, into `out` when given."""
    if out is None:
        return torch.ops.aten.silu_backward(grad, x)
    return torch.ops.aten.silu_backward.grad_input(grad, x, grad_input=out)


def _cats_backward(eps, g, silu, c_d, c_s, scale, above, active, grad_pre, out):
    """cats' (grad_g, theta terms): thr = a * (hard + soft - sg(soft)), a = silu(g),
    soft = sigmoid((|a| / rms - theta) / eps); d thr / d a = hard + |a| * soft' / (eps * rms),
    d thr / d theta = -a * soft' / eps."""
    magnitude = silu.abs()
    soft = torch.sigmoid(above.div_(eps))
    slope = torch.ops.aten.sigmoid_backward(grad_pre, soft)  # grad_pre * soft * (1 - soft)
    theta_terms = torch.sum(slope * silu, -1, keepdim=True, out=out[4])
    grad_a = slope.mul_(magnitude).div_(scale * eps).add_(grad_pre * active).mul_(c_s)
    grad_a.addcmul_(grad_pre, c_d)
    return _silu_backward(grad_a, g, out[0]), theta_terms


def _theta_grad(kind, eps, theta, scale, c_s, theta_terms) -> torch.Tensor:
    """d loss / d theta from the per-token sums in `theta_terms`.

    shifted_relu: thr = relu(g - theta * rms) gives -rms per active element; jumprelu: the
    rectangle kernel -(theta / eps) on J = thr / rms, whose upstream gradient is
    grad_pre * c_s * rms; cats: -(1 / eps) * sum(grad_pre * soft' * a) * c_s.
    """
    if kind == "cats":
        total = -(theta_terms * c_s).sum() / eps
    else:
        total = (theta_terms * c_s * scale).sum()
        total = total * (-theta.to(total.dtype) / eps) if kind == "jumprelu" else -total
    return total.to(theta.dtype).reshape(theta.shape)


FUSED_THRESHOLDS = KINDS  # the fused kernel covers every kind


def fused_mix(g, u, c_d, c_s, theta, kind: str, eps: float) -> torch.Tensor:
    """``c_d * silu(g) * u + c_s * thr(g) * u`` through the fused kernel."""
    return _FusedDualMix.apply(g, u, c_d, c_s, theta, kind, eps)
