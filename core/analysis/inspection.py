"""Per-token inspection of a trained run: its FFN's own statistics and next-token loss on user text.

One forward pass with ``return_stats=True`` gives everything: each per-token statistic the
variant declares ([L][T]: the dual path's router weight and sparse zero fraction, a mixture's
chosen expert, ...), each per-layer one ([L]: the dual path's threshold and path scales), and
the logits from which per-token losses follow. Variants that declare none (SwiGLU) give empty
dicts. Loaded models are kept in a small thread-safe LRU cache keyed by the
run's files, so an app calling repeatedly (from several threads) loads each run once.
"""

import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tokenizers import Tokenizer

from core import variants
from core.config import RunConfig, variant_label
from core.model import CausalLM, build_model, load_weights_state
from core.runs import Run

CACHE_SIZE = 4  # models kept loaded; the app compares a few runs side by side
# Load/hit counters of the model cache (tests and diagnostics read them).
MODEL_CACHE_STATS = {"loads": 0, "hits": 0}
# Text is cut to max_tokens * this many characters before tokenizing, so a 100k-character paste
# costs no more than a context's worth; BPE tokens are far shorter than 16 characters on average.
CHARS_PER_TOKEN = 16
# Extra tokens required past the limit when the text was cut by characters: the cut may split the
# last word, whose tokens then differ from the uncut text's; they must fall outside the kept ones.
_CUT_MARGIN = 8

_CACHE: "OrderedDict[tuple, tuple[CausalLM, Tokenizer]]" = OrderedDict()
_CACHE_LOCK = threading.Lock()  # guards _CACHE; held only for dict operations
_LOAD_LOCK = threading.Lock()  # one load at a time, so two threads never load the same run twice


@dataclass
class Inspection:
    """Per-token view of one run on one text (layers 0-based; T = len(tokens))."""

    run: str  # "experiment/run"
    variant: str  # variant label from config.json, e.g. "dual+ffn_threshold=cats"
    tokens: list[str]  # each token's text; "".join(tokens) is the inspected (possibly cut) text
    ids: list[int]  # token ids
    token_loss: list[float | None]  # loss of predicting token t from tokens < t; None for t = 0
    token_stats: dict[str, list[list[float]]]  # per-token statistic name -> [L][T]
    layer_stats: dict[str, list[float]]  # per-layer statistic name -> [L]
    stat_info: dict[str, dict]  # name -> {meaning, per, low, high} as the variant declares it
    truncated: bool  # the text was cut to max_tokens
    max_tokens: int  # the token limit in force (at most the model's context)
    mean_loss: float | None  # mean of the non-None token losses; None for a single token

    def to_dict(self) -> dict:
        """JSON-friendly dict; non-finite floats (a diverged model) become None."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _label(run: Run) -> str:
    return f"{run.experiment}/{run.name}"


# ---------------------------------------------------------------- loading


def _cache_key(run: Run, device: str) -> tuple:
    """Identity of the run's files: a republished model.safetensors (new inode/mtime) misses."""
    parts: list[Any] = [str(run.path), str(device)]
    for name, what in (("config.json", "no config.json (not a run directory?)"),
                       ("model.safetensors", "no weights yet (model.safetensors); it may still be "
                                             "queued or before its first checkpoint"),
                       ("tokenizer.json", "no tokenizer.json")):
        try:
            st = run.file(name).stat()
        except FileNotFoundError:
            raise ValueError(f"run {_label(run)} has {what}") from None
        parts.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(parts)


def _read_run_config(run: Run) -> RunConfig:
    raw = run.read_config()
    if raw is None:
        raise ValueError(f"run {_label(run)} has no readable config.json")
    try:
        return RunConfig.from_dict(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"run {_label(run)}: config.json does not describe a model: {error}") from None


def _load_uncached(run: Run, device: str) -> tuple[CausalLM, Tokenizer]:
    config = _read_run_config(run)
    with torch.random.fork_rng(devices=[]):  # building inits weights; leave the caller's RNG alone
        model = build_model(config.model)
    try:
        weights = run.load_weights()
    except FileNotFoundError as error:  # removed between the stat and now
        raise ValueError(str(error)) from None
    # Shipped weights may be bf16; inspection runs in fp32 so losses match the training eval.
    load_weights_state(model, {k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    try:
        tokenizer = Tokenizer.from_file(str(run.file("tokenizer.json")))
    except Exception as error:  # tokenizers raises its own exception type for bad JSON
        raise ValueError(f"run {_label(run)}: tokenizer.json cannot be read: {error}") from None
    MODEL_CACHE_STATS["loads"] += 1
    return model.to(device).eval(), tokenizer


def _cache_get(key: tuple) -> tuple[CausalLM, Tokenizer] | None:
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            MODEL_CACHE_STATS["hits"] += 1
        return found


def _cache_put(key: tuple, loaded: tuple[CausalLM, Tokenizer]) -> None:
    with _CACHE_LOCK:
        # A run's older versions are dead weight once a newer one is loaded.
        for old in [k for k in _CACHE if k[:2] == key[:2]]:
            del _CACHE[old]
        _CACHE[key] = loaded
        while len(_CACHE) > max(1, CACHE_SIZE):
            _CACHE.popitem(last=False)


def load_run_model(run: Run, device: str = "cpu") -> tuple[CausalLM, Tokenizer]:
    """The run's model (fp32, eval mode, on `device`) and tokenizer, from a small LRU cache.

    Cached per (run path, device, config/weights/tokenizer file identity), so a run whose
    model.safetensors was republished since is loaded again. Thread-safe. ValueError when the
    run has no config, no weights or no tokenizer, or its weights do not fit its config.
    """
    key = _cache_key(run, device)
    found = _cache_get(key)
    if found is not None:
        return found
    with _LOAD_LOCK:
        found = _cache_get(key)  # another thread may have loaded it while we waited
        if found is not None:
            return found
        loaded = _load_uncached(run, device)
        _cache_put(key, loaded)
        return loaded


def clear_model_cache() -> None:
    """Drop every cached model (tests; freeing memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# ---------------------------------------------------------------- tokenizing


def _encode_prefix(tokenizer: Tokenizer, text: str, limit: int) -> tuple[str, Any]:
    """Encode just enough of `text` to know its first `limit` tokens (and whether there are more)."""
    chars = limit * CHARS_PER_TOKEN
    while True:
        chunk = text[:chars]
        encoding = tokenizer.encode(chunk, add_special_tokens=False)  # as the training data was
        if len(chunk) == len(text) or len(encoding.ids) > limit + _CUT_MARGIN:
            return chunk, encoding
        chars *= 4  # unusually long tokens (e.g. runs of spaces): widen the window


def _token_texts(text: str, offsets: list[tuple[int, int]], keep: int) -> list[str]:
    """Each kept token's span of `text`, so that "".join() gives back the (cut) text.

    Byte-level BPE splits one character (an emoji) over several tokens that all report that
    character's span; the first gets the character and the rest get "".
    """
    pieces, cursor = [], 0
    for _, end in offsets[:keep]:
        end = max(end, cursor)
        pieces.append(text[cursor:end])
        cursor = end
    if keep == len(offsets) and pieces:
        pieces[-1] += text[cursor:]  # characters no token claims (trimmed offsets) stay visible
    return pieces


def _token_limit(model: CausalLM, max_tokens: int | None) -> int:
    context = model.config.max_position_embeddings
    if max_tokens is None:
        return context
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return min(max_tokens, context)  # the model never saw positions past its context


# ---------------------------------------------------------------- inspecting


def _token_losses(logits: torch.Tensor, ids: torch.Tensor) -> list[float | None]:
    """Next-token losses from logits [T, V] and ids [T]: position t-1 predicts ids[t]."""
    log_probs = logits[:-1].float().log_softmax(-1)
    nll = -log_probs.gather(-1, ids[1:, None])[:, 0]
    return [None, *nll.cpu().tolist()]


def _layer_stats(model: CausalLM, stats: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The variant's declared stats: [L, 1, T] per-token ones -> [L][T] lists, [L] per-layer
    ones -> lists; with each one's declaration."""
    spec = variants.spec(model.config.ffn)
    missing = [s.name for s in spec.stats if s.name not in stats]
    if missing:
        raise ValueError(f"ffn={model.config.ffn} declares statistics its forward did not return: "
                         f"{', '.join(missing)}")
    return {"token_stats": {s.name: stats[s.name][:, 0].float().cpu().tolist() for s in spec.token_stats()},
            "layer_stats": {s.name: stats[s.name].float().cpu().tolist() for s in spec.layer_stats()},
            "stat_info": {s.name: {"meaning": s.meaning, "per": s.per, "low": s.low, "high": s.high}
                          for s in spec.stats}}


def _forward(model: CausalLM, ids: list[int], device: str) -> tuple[list[float | None], dict[str, Any]]:
    with torch.inference_mode():
        input_ids = torch.tensor([ids], device=device)
        output = model(input_ids, return_stats=True)
        return _token_losses(output.logits[0], input_ids[0]), _layer_stats(model, output.stats)


def inspect_text(run: Run, text: str, max_tokens: int | None = None, device: str = "cpu") -> Inspection:
    """Routing, sparsity and per-token loss of `run`'s model on `text`, in one forward pass.

    `max_tokens` defaults to (and is capped at) the model's context; longer text is cut and
    ``truncated`` is set. ValueError for empty or whitespace-only text.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("enter some text to inspect")
    model, tokenizer = load_run_model(run, device)
    limit = _token_limit(model, max_tokens)
    chunk, encoding = _encode_prefix(tokenizer, text, limit)
    ids = encoding.ids[:limit]
    if not ids:
        raise ValueError("the text has no tokens to inspect")
    if max(ids) >= model.config.vocab_size:
        raise ValueError(f"run {_label(run)}: tokenizer id {max(ids)} is outside the model's "
                         f"vocabulary ({model.config.vocab_size})")
    losses, stats = _forward(model, ids, device)
    scored = [x for x in losses if x is not None]
    config = run.read_config() or {}
    return Inspection(
        run=_label(run), variant=config.get("variant") or variant_label(model.config),
        tokens=_token_texts(chunk, encoding.offsets, len(ids)), ids=list(ids), token_loss=losses,
        **stats, truncated=len(encoding.ids) > limit, max_tokens=limit,
        mean_loss=sum(scored) / len(scored) if scored else None)


__all__ = ["Inspection", "inspect_text", "load_run_model", "clear_model_cache", "MODEL_CACHE_STATS",
           "CACHE_SIZE", "CHARS_PER_TOKEN"]
