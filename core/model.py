"""Qwen2-style decoder-only language model with a pluggable FFN.

Submodule names follow transformers' ``Qwen2ForCausalLM`` (``model.layers.N.self_attn.q_proj``,
``mlp.gate_proj``, ``input_layernorm`` ...), so a SwiGLU checkpoint maps onto it 1:1.
Run ``python -m core.model --preset paper --ffn swiglu`` for parameter counts and FLOPs.
"""

import argparse
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core import variants
from core.config import ModelConfig, apply_overrides, preset


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: normalise in fp32, scale in the input dtype."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE; cos/sin computed in fp32 for the positions in use."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        dim = config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq.to(device))
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to x [B, heads, T, head_dim]."""
    return (x * cos.to(x.dtype)) + (_rotate_half(x) * sin.to(x.dtype))


class Attention(nn.Module):
    """Causal grouped-query attention (bias on q/k/v, none on o) through SDPA."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, hd)
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=False)

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        batch, seq, _ = t.shape
        return t.view(batch, seq, n, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cos, sin = rope
        q = apply_rotary(self._heads(self.q_proj(x), self.num_heads), cos, sin)
        k = apply_rotary(self._heads(self.k_proj(x), self.num_kv_heads), cos, sin)
        v = self._heads(self.v_proj(x), self.num_kv_heads)
        if self.num_kv_heads != self.num_heads:
            # Explicit expansion: SDPA's enable_gqa falls back to the slow math kernel on CPU.
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """Pre-norm block: attention then FFN, each with a residual."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = variants.module_class(config.ffn)(config)

    def forward(self, x, rope, return_stats: bool = False):
        x = x + self.self_attn(self.input_layernorm(x), rope)
        y, aux, stats = self.mlp(self.post_attention_layernorm(x), return_stats)
        return x + y, aux, stats


class Qwen2Model(nn.Module):
    """Embedding, decoder layers and final norm (transformers' ``Qwen2Model``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` without keeping the [tokens, vocab] logits.

    Chunk by chunk, the forward computes the loss and, while the chunk's logits are still in
    cache, their gradient with respect to `hidden` and `weight`; backward only scales those.
    Saves the logits' memory (and its separate backward passes) where vocab >> hidden size.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, dtype: torch.dtype):
        h, t = hidden.reshape(-1, hidden.shape[-1]).to(dtype), targets.reshape(-1)
        w = weight.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)  # softmax and sums in at least fp32
        # d(mean loss)/d(logit row) = row_scale * (softmax - onehot); the scale is applied on the
        # [rows, d] side of the products, not as one more pass over [rows, vocab]
        valid = t != -100
        row_scale = valid.to(acc) / valid.sum().clamp(min=1)
        loss = torch.zeros((), device=h.device, dtype=acc)
        grad_h = torch.empty_like(h)
        # a frozen output matrix (the interference probe's passes) needs no [vocab, d] gradient
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros(weight.shape, device=weight.device, dtype=acc)
        probs = torch.empty(min(chunk, h.shape[0]), w.shape[0], device=h.device, dtype=acc)
        for start in range(0, h.shape[0], chunk):
            rows = slice(start, start + chunk)
            scale = row_scale[rows].unsqueeze(1)
            chunk_loss, grad_logits = _ce_chunk((h[rows] @ w.t()).to(acc), t[rows], scale, probs)
            # Out of place: torch 2.11's compile drops the gradient of a returned tensor that was
            # edited in place (pytorch/pytorch#180642); tests/test_train_paths.py guards this.
            loss = loss + chunk_loss
            grad_logits, scale = grad_logits.to(dtype), scale.to(dtype)  # once for both products
            grad_h[rows] = (grad_logits @ w) * scale
            if grad_w is not None:
                grad_w += (grad_logits.t() @ (h[rows] * scale)).to(acc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_shape, ctx.hidden_dtype, ctx.weight_dtype = hidden.shape, hidden.dtype, weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        grad_hidden = (grad_h * grad_loss.to(grad_h.dtype)).view(ctx.hidden_shape).to(ctx.hidden_dtype)
        grad_weight = None if grad_w is None else (grad_w * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def _ce_chunk(logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, buffer: torch.Tensor):
    """Scaled CE sum of one chunk (``sum(scale * ce_row)``) and d(ce_row)/d(logits) =
    softmax - onehot, written into `buffer` (reused across chunks).

    One fused softmax pass instead of separate max / subtract / exp / sum / scale passes; the
    log-sum-exp comes from the largest probability, which is at least 1/vocab (no underflow).
    """
    safe = targets.clamp(min=0).unsqueeze(1)
    target_logit = logits.gather(1, safe)
    peak = logits.amax(-1, keepdim=True)
    probs = torch.ops.aten._softmax.out(logits, -1, False, out=buffer[: logits.shape[0]])
    log_sum_exp = peak - probs.amax(-1, keepdim=True).log()
    loss = ((log_sum_exp - target_logit) * scale).sum()
    probs.scatter_add_(1, safe, torch.full_like(target_logit, -1.0))
    return loss, probs


# Auto chunk size of the training loss, in bytes of fp32 logits per chunk. CPU: 8 MiB (tiny: 256
# tokens) is reused from glibc's heap where chunks of 32 MiB and more are mmapped and page-faulted
# afresh every time (tiny step, default allocator: 376 ms at 256 tokens, 407 ms at 1,024; equal
# with the tuned one). GPUs: bigger chunks mean fewer, larger kernels (paper: 3,328 tokens for
# 2 GiB, where transformers holds all 32k tokens' logits at once).
LOSS_CHUNK_BYTES_CPU = 8 * 2**20
LOSS_CHUNK_BYTES_ACCELERATOR = 2 * 2**30


def loss_chunk_tokens(config: ModelConfig, device: torch.device) -> int:
    """Tokens per chunk of :func:`fused_cross_entropy`: the config's, or by vocab and device."""
    if config.loss_chunk_tokens:
        return config.loss_chunk_tokens
    budget = LOSS_CHUNK_BYTES_CPU if device.type == "cpu" else LOSS_CHUNK_BYTES_ACCELERATOR
    return max(256, budget // (4 * config.vocab_size) // 256 * 256)


def _chunked_cross_entropy(hidden, weight, targets, chunk: int, dtype: torch.dtype) -> torch.Tensor:
    """Forward-only :class:`_LinearCrossEntropy`: the same mean loss, chunk by chunk, with no
    gradient work and no buffer beyond one chunk's logits (evaluation)."""
    h, t, w = hidden.reshape(-1, hidden.shape[-1]).to(dtype), targets.reshape(-1), weight.to(dtype)
    acc = torch.promote_types(dtype, torch.float32)
    total = torch.zeros((), device=h.device, dtype=acc)
    for start in range(0, h.shape[0], chunk):
        rows = slice(start, start + chunk)
        logits = (h[rows] @ w.t()).to(acc)
        valid = t[rows] != -100
        target_logit = logits.gather(1, t[rows].clamp(min=0).unsqueeze(1)).squeeze(1)
        total = total + ((torch.logsumexp(logits, -1) - target_logit) * valid).sum()
    return total / (t != -100).sum().clamp(min=1)


def fused_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        chunk_tokens: int = 1024) -> torch.Tensor:
    """Mean next-token loss of `hidden` [B, T, d] through the output matrix, autocast-aware.

    Never holds more than `chunk_tokens` rows of logits; without a gradient to compute (no_grad,
    or inputs that need none) it only sums the loss."""
    dtype = hidden.dtype
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(hidden.device.type, enabled=False):
        if not needs_grad:
            return _chunked_cross_entropy(hidden, weight, targets, chunk_tokens, dtype)
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens, dtype)


@dataclass
class ModelOutput:
    """What a forward returns; `stats` is empty unless asked for (and for SwiGLU)."""

    logits: torch.Tensor  # [B, T, V]
    loss: torch.Tensor | None = None  # cross-entropy + aux_loss, when targets are given
    aux_loss: torch.Tensor | None = None  # sum of the FFNs' auxiliary losses (0 for swiglu)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # per-layer FFN statistics


def _stack_stats(per_layer: list[dict]) -> dict[str, torch.Tensor]:
    """Stack per-layer stats to [L, ...] (layers 0-based)."""
    if not per_layer or not per_layer[0]:
        return {}
    return {key: torch.stack([s[key] for s in per_layer]) for key in per_layer[0]}


class CausalLM(nn.Module):
    """Decoder LM with tied embeddings (transformers' ``Qwen2ForCausalLM`` layout)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Qwen2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for layer in self.model.layers:  # a variant's own initialisation (e.g. a zero router)
            layer.mlp.post_init()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                return_stats: bool = False, return_logits: bool = True) -> ModelOutput:
        """Logits for `input_ids` [B, T]; loss against `targets` [B, T] (-100 = ignore).

        ``return_logits=False`` (training) computes the loss chunk-wise without materialising
        the [B, T, vocab] logits; ``logits`` is then None.
        """
        x = self.model.embed_tokens(input_ids)
        rope = self.model.rotary_emb(input_ids.shape[1], input_ids.device)
        aux_loss, per_layer = x.new_zeros((), dtype=torch.float32), []
        for layer in self.model.layers:
            x, aux, stats = layer(x, rope, return_stats)
            aux_loss = aux_loss + aux.float()
            per_layer.append(stats)
        hidden = self.model.norm(x)
        if targets is not None and not return_logits:
            chunk = loss_chunk_tokens(self.config, hidden.device)
            ce = fused_cross_entropy(hidden, self.lm_head.weight, targets, chunk)
            return ModelOutput(None, ce + aux_loss, aux_loss, _stack_stats(per_layer))
        logits = self.lm_head(hidden)
        loss = None
        if targets is not None:
            wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
            ce = F.cross_entropy(wide.flatten(0, 1), targets.flatten(), ignore_index=-100)
            loss = ce + aux_loss
        return ModelOutput(logits, loss, aux_loss, _stack_stats(per_layer))


def build_model(config: ModelConfig) -> CausalLM:
    """The one entry point: a freshly initialised model for `config`."""
    return CausalLM(config)


def weights_state(model: CausalLM) -> dict[str, torch.Tensor]:
    """Contiguous CPU weights for safetensors; a tied lm_head is left out (it is the embedding)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def load_weights_state(model: CausalLM, weights: dict[str, torch.Tensor]) -> None:
    """Load :func:`weights_state` output (or a transformers Qwen2 state dict) into `model`."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    allowed = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"weights do not fit the model: missing {sorted(set(missing) - allowed)}, "
                         f"unexpected {sorted(unexpected)}")


def parameter_counts(model: CausalLM) -> dict[str, int]:
    """Total (tied weights counted once), embedding and non-embedding parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.model.embed_tokens.weight.numel()
    if not model.config.tie_word_embeddings:
        embedding += model.lm_head.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def config_parameter_counts(config: ModelConfig) -> dict[str, int]:
    """:func:`parameter_counts` of the model `config` describes, built on the meta device (no
    memory, no initialisation)."""
    with torch.device("meta"):
        return parameter_counts(build_model(config))


def model_flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """Forward FLOPs per token: all matmuls (lm_head included) plus causal attention scores."""
    d, hd = config.hidden_size, config.head_dim
    qkvo = 2 * d * hd * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
    attention = 2 * 2 * config.num_attention_heads * hd * seq_len / 2  # QK^T and AV, causal half
    per_layer = qkvo + attention + variants.flops_per_token(config)
    return int(config.num_hidden_layers * per_layer + 2 * d * config.vocab_size)


def _compare_variants(config) -> int:
    """One line per registered variant at its default options: widths, parameters, FLOPs."""
    print(f"{'ffn':>8s} {'h':>6s} {'ffn params/layer':>17s} {'non-emb params':>15s} {'ffn flops/tok':>14s}")
    for name in variants.names():
        model_config = apply_overrides(config, [f"model.ffn={name}"]).model
        counts = config_parameter_counts(model_config)
        print(f"{name:>8s} {variants.hidden_size(model_config):>6d} "
              f"{variants.parameter_count(model_config):>17,d} {counts['non_embedding']:>15,d} "
              f"{variants.flops_per_token(model_config):>14,d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Parameter count and FLOPs of a model config.")
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--ffn", default=None, help="FFN variant (default: the preset's); 'all' compares "
                        "every registered variant")
    parser.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                        help="a .py file registering your own FFN variant (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    try:
        for path in args.ffn_module:
            variants.load_plugin(path)
        overrides = ([f"model.ffn={args.ffn}"] if args.ffn not in (None, "all") else []) + args.overrides
        config = apply_overrides(preset(args.preset), overrides)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.ffn == "all":
        return _compare_variants(config)
    counts = config_parameter_counts(config.model)
    for key, value in counts.items():
        print(f"{key:>14s}: {value:>13,d}  ({value / 1e6:.2f}M)")
    ffn_flops = config.model.num_hidden_layers * variants.flops_per_token(config.model)
    print(f"{'ffn flops/tok':>14s}: {ffn_flops:>13,d}  (all layers, forward)")
    print(f"{'model flops/tok':>14s}: {model_flops_per_token(config.model, config.train.seq_len):>13,d}"
          f"  (forward, seq {config.train.seq_len})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
