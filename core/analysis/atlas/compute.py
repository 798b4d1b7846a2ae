"""The atlas itself and its accumulation: one streamed pass over the tokens, running sums only."""

import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import variants
from core.config import variant_label
from core.model import CausalLM

log = logging.getLogger(__name__)

ATLAS_RECIPE = 1  # bump whenever the numbers a cached atlas holds would change
DEFAULT_TOKENS = 100_000
TOP_K = 10  # activating contexts kept per unit
CONTEXT = 8  # tokens either side of an activating token
STAT_BINS = 50  # histogram bins of a per-token statistic over its declared [low, high]
SCORE_BINS = 120  # bins of a cut's score over the variant's score_range (0.1 rms units for dual)
LOGITS_BUDGET = 64 * 2**20  # bytes of fp32 logits per forward: sets the windows per batch
MAX_WINDOWS = 16
FORMATS = (".csv", ".parquet")
Progress = Callable[[int, int], None]  # (positions done, positions in all) after each batch
# Computed/served-from-cache counters (tests and logs read them).
CACHE_STATS = {"computed": 0, "hits": 0}


@dataclass
class Atlas:
    """One run's atlas: `meta` (JSON-friendly settings and labels) and the pooled `arrays`.

    arrays: ``count`` [V] (occurrences as input), ``loss_count``/``loss_sum``/``loss_sq`` [V]
    (as a target), ``sum__<stat>``/``sq__<stat>`` [L, V], ``hist__<stat>`` [L, STAT_BINS + 2];
    with units: ``unit_active`` [L, U], ``top_value``/``top_position`` [L, k, U] (position -1:
    no k-th active position), ``top_context`` [L, k, U, 2 CONTEXT + 1] (ids, -1 past the
    stream's ends); with a score: ``score_hist`` [L, SCORE_BINS + 2], ``cut`` [L]. Histogram
    rows are (below, bins..., above).
    """

    meta: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layers(self) -> int:
        return self.meta["layers"]

    @property
    def has_units(self) -> bool:
        return "unit_active" in self.arrays

    def to_bytes(self) -> bytes:
        """The atlas as an .npz file's bytes (meta as a JSON string array: no pickle)."""
        buffer = io.BytesIO()
        # compressed: most of a [layers, vocab] sum is zeros (tokens not in the stream)
        np.savez_compressed(buffer, meta=np.array(json.dumps(self.meta)), **self.arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> "Atlas":
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            return cls(json.loads(str(data["meta"])), arrays)




def _histogram(values: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    """Counts [R, bins + 2] of `values` [R, n] per row: (below low, `bins` equal bins over
    [low, high], above high). `high` itself falls in the last bin (a router weight of exactly
    1 is in range); NaN counts as above."""
    # In place and in the values' float type: the dual score is tokens x units per layer, and
    # this form costs a fifth of a double-precision / torch.where one (histc is as slow).
    rows, width = values.shape[0], bins + 2
    index = (values - low).mul_(bins / (high - low)).add_(1).floor_().clamp_(0, bins + 1)
    index.masked_fill_(values == high, bins).nan_to_num_(nan=bins + 1)
    index += torch.arange(rows, device=values.device, dtype=index.dtype)[:, None] * width
    # small integers bin fastest on CPU; int16 holds every index while rows * width < 2**15
    small = values.device.type == "cpu" and rows * width < 2**15
    kind = torch.int16 if small else torch.int64
    return torch.bincount(index.reshape(-1).to(kind), minlength=rows * width).view(rows, width)


class _Units:
    """Running per-unit sums of one model: active counts, top-k values/positions, score counts."""

    def __init__(self, layers: int, units: int, top_k: int, device: torch.device, activity):
        self.kind, self.score_range = activity.unit, tuple(activity.score_range)
        self.active = torch.zeros(layers, units, dtype=torch.int64, device=device)
        self.top_value = torch.full((layers, top_k, units), -math.inf, device=device)
        self.top_position = torch.full((layers, top_k, units), -1, dtype=torch.int64, device=device)
        self.has_score = activity.score is not None
        self.score_hist = torch.zeros(layers, SCORE_BINS + 2, dtype=torch.int64, device=device)
        self.cut = [math.nan] * layers

    def add(self, layer: int, activity, offset: int) -> None:
        units = self.active.shape[1]
        if activity.values.shape[-1] != units:  # a reshape would silently mix positions
            raise ValueError(f"unit_activity gave {activity.values.shape[-1]} units at layer {layer}, "
                             f"{units} before: the atlas needs the same count in every layer")
        values = activity.values.detach().reshape(-1, units).float()
        self.active[layer] += (values > 0).sum(0)
        self._merge_top(layer, values, offset)
        if self.has_score:
            score = activity.score.detach().reshape(1, -1)
            self.score_hist[layer] += _histogram(score, *self.score_range, SCORE_BINS)[0]
            self.cut[layer] = float(activity.cut)

    def _merge_top(self, layer: int, values: torch.Tensor, offset: int) -> None:
        """Keep each unit's top-k (value, position) over the batches seen so far."""
        k = self.top_value.shape[1]
        batch = values.topk(min(k, values.shape[0]), dim=0)
        merged_v = torch.cat([self.top_value[layer], batch.values])
        merged_p = torch.cat([self.top_position[layer], batch.indices + offset])
        best = merged_v.topk(k, dim=0)
        self.top_value[layer] = best.values
        self.top_position[layer] = merged_p.gather(0, best.indices)


class _Sums:
    """Running sums of one model over the batches of a token stream."""

    def __init__(self, model: CausalLM, top_k: int):
        config = model.config
        self.spec = variants.spec(config.ffn)
        self.layers, self.vocab, self.top_k = config.num_hidden_layers, config.vocab_size, top_k
        self.device = next(model.parameters()).device
        self.offset = 0  # stream position of the current batch's first token
        self.owner = threading.get_ident()
        counts = {"dtype": torch.int64, "device": self.device}
        sums = {"dtype": torch.float64, "device": self.device}
        self.count, self.loss_count = torch.zeros(self.vocab, **counts), torch.zeros(self.vocab, **counts)
        self.loss_sum, self.loss_sq = torch.zeros(self.vocab, **sums), torch.zeros(self.vocab, **sums)
        stats = self.spec.token_stats()
        self.sum = {s.name: torch.zeros(self.layers, self.vocab, **sums) for s in stats}
        self.sq = {s.name: torch.zeros(self.layers, self.vocab, **sums) for s in stats}
        self.hist = {s.name: torch.zeros(self.layers, STAT_BINS + 2, **counts)
                     for s in stats if s.high is not None}
        self.units: _Units | None = None
        self.layer_stats: dict[str, list[float]] = {}

    def add_units(self, layer: int, activity) -> None:
        if self.units is None:
            units = activity.values.shape[-1]
            self.units = _Units(self.layers, units, self.top_k, self.device, activity)
        self.units.add(layer, activity, self.offset)

    def add_batch(self, x: torch.Tensor, y: torch.Tensor, output) -> None:
        """Pool one forward's inputs x, targets y [B, T] and its logits and statistics."""
        flat_x, flat_y = x.reshape(-1), y.reshape(-1)
        self.count += torch.bincount(flat_x, minlength=self.vocab)
        self.loss_count += torch.bincount(flat_y, minlength=self.vocab)
        loss = F.cross_entropy(output.logits.reshape(flat_y.numel(), -1).float(), flat_y,
                               reduction="none").double()
        self.loss_sum.index_add_(0, flat_y, loss)
        self.loss_sq.index_add_(0, flat_y, loss * loss)
        self._add_stats(flat_x, output.stats)

    def _add_stats(self, flat_x: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        missing = [s.name for s in self.spec.stats if s.name not in stats]
        if missing:
            raise ValueError(f"ffn={self.spec.name} declares statistics its forward did not return: "
                             f"{', '.join(missing)}")
        for name in self.sum:
            values = stats[name].reshape(self.layers, -1).double()
            self.sum[name].index_add_(1, flat_x, values)
            self.sq[name].index_add_(1, flat_x, values * values)
            if name in self.hist:
                stat = next(s for s in self.spec.stats if s.name == name)
                self.hist[name] += _histogram(values, stat.low, stat.high, STAT_BINS)
        self.layer_stats = {s.name: stats[s.name].float().cpu().tolist() for s in self.spec.layer_stats()}

    def finish(self, ids: np.ndarray, context: int) -> dict[str, np.ndarray]:
        """The pooled sums as numpy arrays (see :class:`Atlas`)."""
        out = {"count": self.count, "loss_count": self.loss_count, "loss_sum": self.loss_sum,
               "loss_sq": self.loss_sq}
        out.update({f"sum__{n}": t for n, t in self.sum.items()})
        out.update({f"sq__{n}": t for n, t in self.sq.items()})
        out.update({f"hist__{n}": t for n, t in self.hist.items()})
        out = {k: v.cpu().numpy() for k, v in out.items()}
        if self.units is not None:
            out.update(_unit_arrays(self.units, ids, context))
        return out


def _unit_arrays(units: _Units, ids: np.ndarray, context: int) -> dict[str, np.ndarray]:
    """Per-unit arrays, with each top position's context window cut from the token stream."""
    value, position = units.top_value.double().cpu().numpy(), units.top_position.cpu().numpy()
    empty = ~(value > 0)  # a unit active on fewer than k positions keeps zeros: not contexts
    value, position = np.where(empty, 0.0, value), np.where(empty, -1, position)
    padded = np.concatenate([np.full(context, -1), ids, np.full(context, -1)]).astype(np.int32)
    windows = padded[np.maximum(position, 0)[..., None] + np.arange(2 * context + 1)]
    windows[empty] = -1
    out = {"unit_active": units.active.cpu().numpy(), "top_value": value, "top_position": position,
           "top_context": windows}
    if units.has_score:
        out.update(score_hist=units.score_hist.cpu().numpy(), cut=np.array(units.cut))
    return out


@contextmanager
def _unit_hooks(model: CausalLM, sums: _Sums) -> Iterator[None]:
    """Feed every layer's FFN input to its unit_activity hook while the block runs."""
    handles = [layer.mlp.register_forward_pre_hook(partial(_on_ffn_input, sums, index))
               for index, layer in enumerate(model.model.layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _on_ffn_input(sums: _Sums, layer: int, module, args: tuple) -> None:
    # The model is shared with the app's inspection cache: forwards from other threads while
    # the hooks are on are not part of this atlas.
    if threading.get_ident() != sums.owner:
        return
    activity = module.unit_activity(args[0])
    if activity is not None:
        sums.add_units(layer, activity)


def _batches(ids: np.ndarray, seq_len: int, per_batch: int,
             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """(inputs, targets, first position) per batch: `per_batch` consecutive windows of
    `seq_len` positions over ids[:-1] (targets shifted by one), then a shorter last window."""
    n = len(ids) - 1
    full = n // seq_len
    stream = torch.from_numpy(ids)
    for first in range(0, full, per_batch):
        count, start = min(per_batch, full - first), first * seq_len
        window = stream[start:start + count * seq_len + 1]
        yield (window[:-1].view(count, seq_len).to(device), window[1:].view(count, seq_len).to(device),
               start)
    if n % seq_len:
        start = full * seq_len
        yield stream[None, start:n].to(device), stream[None, start + 1:n + 1].to(device), start


def windows_per_batch(seq_len: int, vocab: int) -> int:
    """Windows per forward: as many as keep the batch's fp32 logits within LOGITS_BUDGET."""
    return max(1, min(MAX_WINDOWS, LOGITS_BUDGET // (4 * seq_len * vocab)))


def compute_atlas(model: CausalLM, ids: np.ndarray, top_k: int = TOP_K, context: int = CONTEXT,
                  seq_len: int | None = None, per_batch: int | None = None,
                  progress: Progress | None = None) -> Atlas:
    """The atlas of `model` over the token stream `ids` (N + 1 ids: N input positions, each
    predicting the next id), in windows of `seq_len` (default: the model's context);
    `progress(done, total)` is called with positions after each batch.

    No run and no cache: :func:`run_atlases` wraps this for runs on disk. ValueError when the
    stream has fewer than 2 ids or an id outside the model's vocabulary.
    """
    ids = np.asarray(ids, dtype=np.int64)
    config = model.config
    if len(ids) < 2:
        raise ValueError(f"the token stream holds {len(ids)} token(s); an atlas needs at least 2")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        bad = int(ids.max() if ids.max() >= config.vocab_size else ids.min())
        raise ValueError(f"token id {bad} is outside the model's vocabulary ({config.vocab_size})")
    seq_len = min(seq_len or config.max_position_embeddings, config.max_position_embeddings)
    per_batch = per_batch or windows_per_batch(seq_len, config.vocab_size)
    sums, start = _Sums(model, top_k), time.perf_counter()
    with torch.inference_mode(), _unit_hooks(model, sums):
        for x, y, offset in _batches(ids, seq_len, per_batch, sums.device):
            sums.offset = offset
            sums.add_batch(x, y, model(x, return_stats=True))
            if progress is not None:
                progress(offset + x.numel(), len(ids) - 1)
    arrays = sums.finish(ids, context)
    seconds = time.perf_counter() - start
    return Atlas(_meta(model, sums, len(ids) - 1, seq_len, top_k, context, seconds), arrays)


def _meta(model: CausalLM, sums: _Sums, n: int, seq_len: int, top_k: int, context: int,
          seconds: float) -> dict:
    config = model.config
    units = sums.units
    return {"variant": variant_label(config), "ffn": config.ffn, "layers": config.num_hidden_layers,
            "vocab": config.vocab_size, "tokens": n, "seq_len": seq_len, "top_k": top_k,
            "context": context, "seconds": seconds, "tokens_per_s": n / max(seconds, 1e-9),
            "stats": {s.name: {"meaning": s.meaning, "low": s.low, "high": s.high}
                      for s in sums.spec.token_stats()},
            "layer_stats": sums.layer_stats, "stat_bins": STAT_BINS, "score_bins": SCORE_BINS,
            "unit": units.kind if units else None, "units": int(units.active.shape[1]) if units else 0,
            "score_range": list(units.score_range) if units and units.has_score else None}
