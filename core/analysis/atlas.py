"""Routing atlas: how a run routes, sparsifies and predicts over a corpus, not one text.

One pass over N tokens (the run's validation split, or a text file tokenized with the run's
tokenizer), streamed in windows of the run's sequence length as the training evaluation reads
them (window k holds positions kT .. kT+T-1; position i is predicted from its window's tokens
before it and predicts ids[i+1]). Per batch of windows: one forward with ``return_stats=True``
plus each layer's ``FFN.unit_activity`` hook (core/ffns/base.py) on the FFN's input. Only
running sums are kept (nothing of size N x units except a top-k per unit):

- per vocabulary token: occurrences; per layer the mean and std (ddof 0) of every per-token
  statistic the variant declares (dual: router_sparse, zero_frac; moe: top_expert, top_weight;
  relu2: zero_frac; SwiGLU none); the mean and std of the loss of *predicting* the token (its
  ``loss_count`` occurrences as a target, as the Inspect view shows a token's loss);
- per unit (dual's sparse-path units, relu2's hidden units, moe's experts): activation
  frequency, dead and always-on flags, and the top-k activating positions with their
  contexts (CONTEXT tokens either side in the token stream);
- per layer: histograms of each bounded per-token statistic (router weight, zero fraction,
  moe top weight) and of the score a learned cut compares (dual: g / rms(g) against theta).

Results are cached in the run folder (``atlas-<key>.npz``), keyed by the weights file's
identity (inode, size, mtime), config.json, the token stream and the settings; a new
model.safetensors gives a new key and the stale file is removed on the next write.
``python -m core.atlas RUN`` is the CLI; :func:`atlas_view` is what the app's Atlas view calls.
"""

import argparse
import hashlib
import io
import json
import logging
import math
import operator
import os
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from core import variants
from core.analysis.inspection import CHARS_PER_TOKEN, load_run_model
from core.config import RunConfig, variant_label
from core.fsutil import atomic_write_bytes
from core.model import CausalLM
from core.runs import Run, runs_root
from core.training.data import load_tokens

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
# Tokens required past the limit when a text file was read only in part: the cut may split the
# last word, whose ids then differ from those of the whole file.
_CUT_MARGIN = 8
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


# ---------------------------------------------------------------- accumulation


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


# ---------------------------------------------------------------- runs, data, cache


def resolve_run(spec: "str | Path | Run", runs_dir: str | Path | None = None) -> Run:
    """The run named by `spec`: ``EXPERIMENT/RUN`` under the runs root, or a run folder."""
    if isinstance(spec, Run):
        run = spec
    else:
        text = str(spec)
        parts = text.strip("/").split("/")
        run = Run(text)
        if len(parts) == 2 and not Path(text).is_absolute():
            try:
                candidate = Run.at(runs_root(runs_dir), *parts)
            except ValueError:
                candidate = None
            if candidate is not None and candidate.exists():
                run = candidate
    if not run.exists():
        raise ValueError(f"no run {str(spec)!r}: give EXPERIMENT/RUN under {runs_root(runs_dir)} or a run "
                         "folder with config.json")
    return run


def named_run(spec: "str | Run", runs_dir: str | Path | None = None) -> Run:
    """A :class:`Run` as is, or ``EXPERIMENT/RUN`` under the runs root only (what the app passes:
    a name never reaches outside the root); ValueError otherwise."""
    if isinstance(spec, Run):
        return spec
    experiment, sep, name = str(spec).partition("/")
    if not sep:
        raise ValueError(f"run {str(spec)[:60]!r} should look like experiment/run")
    run = Run.at(runs_root(runs_dir), experiment, name)  # validates both names
    if not run.exists():
        raise ValueError(f"no run {str(spec)!r} under {runs_root(runs_dir)}")
    return run


def _label(run: Run) -> str:
    return f"{run.experiment}/{run.name}"


def check_settings(tokens: Any, data: Any, top_k: Any = TOP_K) -> None:
    """ValueError, before anything is loaded or written, for a bad token count, data or top-k."""
    for name, value in (("tokens", tokens), ("top_k", top_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r:.60}")
    if not isinstance(data, str) or not data:
        raise ValueError(f"data must be 'val' or a text file's path, got {data!r:.60}")
    if data != "val" and not Path(data).expanduser().is_file():
        raise ValueError(f"data {data!r}: no such file (give 'val' for the run's validation split, "
                         "or a text file)")


def _run_config(run: Run) -> RunConfig:
    return RunConfig.from_dict(run.read_config() or {})


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers give the same ids to the same pieces."""
    return a.get_vocab(with_added_tokens=True) == b.get_vocab(with_added_tokens=True)


def token_stream(run: Run, tokenizer: Tokenizer, data: str, tokens: int) -> tuple[np.ndarray, str]:
    """Up to `tokens` + 1 ids of `data` (``val``: the run's validation split from the token
    cache; else a text file encoded with the run's tokenizer) and a description of the source."""
    if data == "val":
        config = _run_config(run)
        cached = load_tokens(config.data, config.model.vocab_size, progress=False)
        if not same_tokenizer(cached.tokenizer, tokenizer):
            raise ValueError(f"run {_label(run)}: its tokenizer.json differs from the tokenizer of its data "
                             f"cache ({config.data.source}); give a text file as data instead")
        ids = np.asarray(cached.val[:tokens + 1], dtype=np.int64)
        return ids, f"val:{config.data.source}"
    path = Path(data).expanduser().resolve()
    return _file_ids(path, tokenizer, tokens + 1), f"file:{path}"


def _file_ids(path: Path, tokenizer: Tokenizer, limit: int) -> np.ndarray:
    """The first `limit` ids of a UTF-8 text file, reading only as much of it as they need."""
    chars = limit * CHARS_PER_TOKEN
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(chars)
        while True:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            more = f.read(chars) if len(ids) <= limit + _CUT_MARGIN else ""
            if not more:
                return np.asarray(ids[:limit], dtype=np.int64)
            text += more
            chars *= 2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(run: Run, ids: np.ndarray, settings: dict, weights: list | None = None) -> str:
    """Key of an atlas: the weights file's identity (`weights`, default: read now), config.json,
    the token stream, the settings."""
    record = {"recipe": ATLAS_RECIPE, "weights": weights or _weights_stamp(run),
              "config": _sha(run.file("config.json").read_bytes()), "tokens": _sha(ids.tobytes()),
              **settings}
    return _sha(json.dumps(record, sort_keys=True).encode())[:16]


def _cache_path(run: Run, key: str) -> Path:
    return run.file(f"atlas-{key}.npz")


def _load_cached(path: Path) -> Atlas | None:
    try:
        return Atlas.from_file(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # torn or foreign: recompute
        log.warning("ignoring unreadable atlas cache %s: %s", path, error)
        return None


def _store(run: Run, atlas: Atlas, path: Path) -> None:
    """Write the atlas atomically, dropping the run's other atlases made from other weights.
    A read-only run folder (a shipped demo) only loses the cache."""
    weights = atlas.meta["weights"]
    try:
        for old in run.path.glob("atlas-*.npz"):
            stale = old != path and _cached_weights(old) != weights
            if stale:
                old.unlink(missing_ok=True)
        atomic_write_bytes(path, atlas.to_bytes())
    except OSError as error:
        log.warning("atlas of %s not cached: %s", _label(run), error)


def _cached_weights(path: Path) -> list | None:
    """The weights stamp an atlas file was made from (None if unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"])).get("weights")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _weights_stamp(run: Run) -> list:
    """model.safetensors' identity: a new checkpoint is a new file (inode), size or mtime."""
    st = run.file("model.safetensors").stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns]


@dataclass
class _Loaded:
    """A run with its model and tokenizer loaded (inputs validated)."""

    run: Run
    model: CausalLM
    tokenizer: Tokenizer
    config: RunConfig


def _load(spec: "str | Path | Run", runs_dir, device: str) -> _Loaded:
    run = resolve_run(spec, runs_dir)
    model, tokenizer = load_run_model(run, _device(device))
    return _Loaded(run, model, tokenizer, _run_config(run))


def _device(device: str) -> str:
    """cpu, cuda[:N], or auto (cuda when there is one); ValueError for anything else."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not str(device).split(":")[0] == "cuda":
        raise ValueError(f"device must be cpu, cuda[:N] or auto, got {device!r:.40}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device here (use cpu or auto)")
    return device


def _atlas_of(loaded: _Loaded, ids: np.ndarray, source: str, top_k: int, seq_len: int,
              refresh: bool, progress: Progress | None) -> Atlas:
    """The cached atlas of a loaded run on `ids`, or a freshly computed (and cached) one."""
    run = loaded.run
    settings = {"data": source, "top_k": top_k, "context": CONTEXT, "seq_len": seq_len,
                "bins": [STAT_BINS, SCORE_BINS]}
    weights = _weights_stamp(run)  # once: the key and the stored stamp must agree
    path = _cache_path(run, cache_key(run, ids, settings, weights))
    cached = None if refresh else _load_cached(path)
    if cached is not None:
        CACHE_STATS["hits"] += 1
        cached.meta["cached"] = True
        return cached
    atlas = compute_atlas(loaded.model, ids, top_k, CONTEXT, seq_len, progress=progress)
    config = run.read_config() or {}
    atlas.meta.update(run=_label(run), variant=config.get("variant") or atlas.meta["variant"],
                      data=source, weights=weights, cached=False)
    _store(run, atlas, path)
    CACHE_STATS["computed"] += 1
    return atlas


def run_atlases(run: "str | Path | Run", tokens: int = DEFAULT_TOKENS, data: str = "val",
                top_k: int = TOP_K, compare: "str | Path | Run | None" = None, *,
                runs_dir: str | Path | None = None, device: str = "cpu", refresh: bool = False,
                progress: Progress | None = None) -> tuple[list[Atlas], Tokenizer]:
    """The atlas of `run` (and of `compare`, on the very same tokens and windows) over
    `tokens` tokens of `data`, from the run folder's cache when it holds one; and the tokenizer.
    `progress(done, total)` counts positions over every atlas computed (not those cached).

    ValueError (nothing written) for an unknown run, a run without weights or tokenizer,
    tokens or top_k <= 0, a data file that does not exist, or runs with different tokenizers.
    """
    check_settings(tokens, data, top_k)
    loaded = [_load(spec, runs_dir, device) for spec in ([run] if compare is None else [run, compare])]
    first = loaded[0]
    if len(loaded) == 2 and not same_tokenizer(first.tokenizer, loaded[1].tokenizer):
        raise ValueError(f"runs {_label(first.run)} and {_label(loaded[1].run)} use different tokenizers: "
                         "their atlases cannot be aligned on the same tokens")
    ids, source = token_stream(first.run, first.tokenizer, data, tokens)
    if len(ids) < 2:
        raise ValueError(f"data {source} holds {len(ids)} token(s); an atlas needs at least 2")
    seq_len = min(first.config.train.seq_len, *(x.model.config.max_position_embeddings for x in loaded))
    atlases = []
    for index, one in enumerate(loaded):
        # one bar over both runs: run i's positions come after run i-1's
        step = None if progress is None else partial(_shifted, progress, index, len(loaded))
        atlases.append(_atlas_of(one, ids, source, top_k, seq_len, refresh, step))
    return atlases, first.tokenizer


def _shifted(progress: Progress, index: int, runs: int, done: int, total: int) -> None:
    progress(index * total + done, runs * total)


# ---------------------------------------------------------------- tables


def _mean_std(total: np.ndarray, squares: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std from sums; NaN where count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        var = np.where(count > 0, squares / count - mean * mean, np.nan)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _decode(tokenizer: Tokenizer | None, ids: list[list[int]]) -> list[str]:
    if tokenizer is None:
        return [" ".join(map(str, row)) for row in ids]
    return tokenizer.decode_batch([[i for i in row if i >= 0] for row in ids], skip_special_tokens=False)


def token_table(atlas: Atlas, tokenizer: Tokenizer | None = None, layer: int | None = None) -> pd.DataFrame:
    """One row per vocabulary token seen (as input or target): token_id, token, count,
    loss_count, loss_mean, loss_std, and per declared per-token statistic its mean and std:
    ``<stat>_mean_L<i>`` for every layer, or ``<stat>_mean`` for the one `layer` given.
    Rows by count, most frequent first."""
    a = atlas.arrays
    seen = np.flatnonzero((a["count"] > 0) | (a["loss_count"] > 0))
    table: dict[str, Any] = {"token_id": seen, "token": _decode(tokenizer, [[i] for i in seen]),
                             "count": a["count"][seen], "loss_count": a["loss_count"][seen]}
    table["loss_mean"], table["loss_std"] = (x[seen] for x in _mean_std(a["loss_sum"], a["loss_sq"],
                                                                          a["loss_count"]))
    layers = range(atlas.layers) if layer is None else [_check_layer(atlas, layer)]
    for name in atlas.meta["stats"]:
        for i in layers:
            mean, std = _mean_std(a[f"sum__{name}"][i], a[f"sq__{name}"][i], a["count"])
            suffix = "" if layer is not None else f"_L{i}"
            table[f"{name}_mean{suffix}"], table[f"{name}_std{suffix}"] = mean[seen], std[seen]
    frame = pd.DataFrame(table)
    return frame.sort_values(["count", "token_id"], ascending=[False, True], kind="stable",
                             ignore_index=True)


def _check_layer(atlas: Atlas, layer: Any) -> int:
    return _index(layer, atlas.layers, "layer")


def _index(value: Any, size: int, what: str) -> int:
    """`value` as an index in 0..size-1: ints, numpy ints and whole floats (a UI number field
    sends 3.0); ValueError otherwise."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        index = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        index = None
    if index is None or not 0 <= index < size:
        raise ValueError(f"{what} must be 0..{size - 1}, got {value!r:.40}")
    return index


def unit_table(atlas: Atlas, tokenizer: Tokenizer | None = None, layer: int | None = None,
               contexts: bool = True) -> pd.DataFrame | None:
    """One row per (layer, unit): active (positions), frequency, dead, always_on, max_value, and
    with `contexts` the top-k as ``top<r>_value``, ``top<r>_position``, ``top<r>_context`` (the
    context text with the token in [[ ]]). None for a variant without units."""
    if not atlas.has_units:
        return None
    a, n = atlas.arrays, atlas.meta["tokens"]
    layers = range(atlas.layers) if layer is None else [_check_layer(atlas, layer)]
    frames = [_unit_rows(a, n, i, tokenizer, contexts, atlas.meta["context"]) for i in layers]
    return pd.concat(frames, ignore_index=True)


def _unit_rows(a: dict, n: int, layer: int, tokenizer, contexts: bool, context: int) -> pd.DataFrame:
    active = a["unit_active"][layer]
    rows: dict[str, Any] = {"layer": layer, "unit": np.arange(active.size), "active": active,
                            "frequency": active / n, "dead": active == 0, "always_on": active == n,
                            "max_value": a["top_value"][layer][0]}
    if contexts:
        for rank in range(a["top_value"].shape[1]):
            rows[f"top{rank + 1}_value"] = a["top_value"][layer][rank]
            rows[f"top{rank + 1}_position"] = a["top_position"][layer][rank]
            marked = [f"{c['left']}[[{c['token']}]]{c['right']}" if c else ""
                      for c in _contexts(a, layer, rank, tokenizer, context)]
            rows[f"top{rank + 1}_context"] = marked
    return pd.DataFrame(rows)


def _contexts(a: dict, layer: int, rank: int | slice, tokenizer, context: int,
              unit: int | slice = slice(None)) -> list[dict | None]:
    """Decoded contexts (left, token, right) of top-`rank` positions (None where empty)."""
    windows = a["top_context"][layer][rank, unit].reshape(-1, 2 * context + 1)
    positions = a["top_position"][layer][rank, unit].reshape(-1)
    parts = _decode(tokenizer, [p for row in windows.tolist()
                                for p in (row[:context], row[context:context + 1], row[context + 1:])])
    out: list[dict | None] = []
    for i, position in enumerate(positions.tolist()):
        left, token, right = parts[3 * i:3 * i + 3]
        out.append({"left": left, "token": token, "right": right} if position >= 0 else None)
    return out


def unit_contexts(atlas: Atlas, layer: int, unit: int, tokenizer: Tokenizer | None = None) -> list[dict]:
    """A unit's top activating positions, strongest first: rank, value, position (in the token
    stream), left / token / right text and the context as one string."""
    if not atlas.has_units:
        raise ValueError(f"ffn={atlas.meta['ffn']} has no sparse units")
    layer, unit = _check_layer(atlas, layer), _index(unit, atlas.meta["units"], atlas.meta["unit"])
    a = atlas.arrays
    found = _contexts(a, layer, slice(None), tokenizer, atlas.meta["context"], unit)
    return [{"rank": rank + 1, "value": float(a["top_value"][layer][rank, unit]),
             "position": int(a["top_position"][layer][rank, unit]), **c,
             "text": c["left"] + c["token"] + c["right"]}
            for rank, c in enumerate(found) if c is not None]


def histograms(atlas: Atlas, layer: int) -> dict[str, dict]:
    """Per bounded per-token statistic (and ``score`` where the variant has a cut) at `layer`:
    edges [bins + 1], counts [bins], below, above (and cut: the learned threshold)."""
    _check_layer(atlas, layer)
    out = {}
    for name, info in atlas.meta["stats"].items():
        if f"hist__{name}" in atlas.arrays:
            out[name] = _hist_dict(atlas.arrays[f"hist__{name}"][layer], info["low"], info["high"])
    if "score_hist" in atlas.arrays:
        low, high = atlas.meta["score_range"]
        out["score"] = {**_hist_dict(atlas.arrays["score_hist"][layer], low, high),
                        "cut": float(atlas.arrays["cut"][layer])}
    return out


def _hist_dict(counts: np.ndarray, low: float, high: float) -> dict:
    return {"edges": np.linspace(low, high, counts.size - 1).tolist(), "counts": counts[1:-1].tolist(),
            "below": int(counts[0]), "above": int(counts[-1])}


def layer_summary(atlas: Atlas) -> list[dict]:
    """Per layer: each statistic's mean over all positions, the unit flags' fractions, the cut."""
    a, n = atlas.arrays, atlas.meta["tokens"]
    rows = []
    for layer in range(atlas.layers):
        row: dict[str, Any] = {"layer": layer}
        for name in atlas.meta["stats"]:
            row[f"{name}_mean"] = float(a[f"sum__{name}"][layer].sum() / n)
        if atlas.has_units:
            active = a["unit_active"][layer]
            row.update(unit_frequency=float(active.mean() / n), dead_frac=float((active == 0).mean()),
                       always_on_frac=float((active == n).mean()))
        if "cut" in a:
            row["cut"] = float(a["cut"][layer])
        rows.append(row)
    return rows


def mean_loss(atlas: Atlas) -> float:
    """Mean next-token loss over every position (the val loss of these windows)."""
    return float(atlas.arrays["loss_sum"].sum() / max(1, atlas.arrays["loss_count"].sum()))


def compare_summary(a: Atlas, b: Atlas) -> list[dict]:
    """Per layer and per-token statistic both runs declare: each run's mean over all positions,
    and across vocabulary tokens the count-weighted correlation of the two runs' per-token means
    (1: both route the same tokens the same way; near 0: unrelated, as a frozen random router
    against a learned one). Empty when they share no statistic (dual against SwiGLU)."""
    shared = [name for name in a.meta["stats"] if name in b.meta["stats"]]
    count = a.arrays["count"].astype(np.float64)
    rows = []
    for layer in range(min(a.layers, b.layers)):
        for name in shared:
            means = [np.divide(x.arrays[f"sum__{name}"][layer], count, out=np.zeros_like(count),
                               where=count > 0) for x in (a, b)]
            rows.append({"layer": layer, "stat": name, "mean_a": float(means[0] @ count / count.sum()),
                         "mean_b": float(means[1] @ count / count.sum()),
                         "token_correlation": _weighted_correlation(*means, count)})
    return rows


def _weighted_correlation(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float | None:
    """Pearson correlation of x and y with weights; None where either is constant."""
    w = weight / weight.sum()
    dx, dy = x - w @ x, y - w @ y
    var_x, var_y = w @ (dx * dx), w @ (dy * dy)
    if var_x <= 1e-300 or var_y <= 1e-300:
        return None
    return float((w @ (dx * dy)) / math.sqrt(var_x * var_y))


def compare_table(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two runs' token tables (same tokens) joined on the token: token_id, token, count and
    loss_count once, every other column suffixed _a / _b (also where only one run has it), and
    ``<x>_delta`` = b - a for every mean both have."""
    keys = ["token_id", "token", "count", "loss_count"]
    a, b = (t.rename(columns={c: f"{c}_{end}" for c in t.columns if c not in keys})
            for t, end in ((a, "a"), (b, "b")))
    joined = a.merge(b, on=keys, how="outer", validate="one_to_one")
    for column in a.columns:
        base = column[:-2]
        if (base.endswith("_mean") or "_mean_L" in base) and f"{base}_b" in joined:
            joined[f"{base}_delta"] = joined[f"{base}_b"] - joined[column]
    return joined.sort_values(["count", "token_id"], ascending=[False, True], ignore_index=True)


# ---------------------------------------------------------------- export


TEXT_COLUMNS = ("token", "run")  # plus every "*_context": strings when read back


def check_out(path: "str | Path") -> Path:
    """The export path, checked before any work: .csv, or .parquet when pyarrow is installed."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {str(path)!r}: give a .csv or .parquet file")
    if path.suffix.lower() == ".parquet" and not _has_pyarrow():
        raise ValueError("--out .parquet needs pyarrow (pip install pyarrow); .csv works without it")
    if not path.parent.is_dir():
        raise ValueError(f"--out {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def units_path(path: Path) -> Path:
    """Where the unit table goes beside the token table: FILE.units.csv for FILE.csv."""
    return path.with_name(f"{path.stem}.units{path.suffix}")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV or parquet (by suffix), atomically."""
    if path.suffix.lower() == ".parquet":
        data = frame.to_parquet(None, index=False)
    else:
        data = frame.to_csv(index=False).encode()
    atomic_write_bytes(path, data)


def read_table(path: "str | Path") -> pd.DataFrame:
    """A table written by :func:`write_table`, read back with text columns as strings (a token
    "nan" or "NULL" stays text) and empty numeric cells as NaN."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    header = pd.read_csv(path, nrows=0).columns
    text = [c for c in header if c in TEXT_COLUMNS or c.endswith("_context")]
    frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in header if c not in text},
                        dtype={c: str for c in text})
    return frame


def export_atlases(atlases: list[Atlas], tokenizer: Tokenizer | None, path: "str | Path") -> list[Path]:
    """Write the token table (joined when two atlases) to `path` and the unit tables (a ``run``
    column when two) to :func:`units_path`; return the paths written."""
    path = check_out(path)
    tables = [token_table(a, tokenizer) for a in atlases]
    tokens = tables[0] if len(tables) == 1 else compare_table(*tables)
    units = [(a, unit_table(a, tokenizer)) for a in atlases]
    if len(atlases) > 1:  # units of two runs are not aligned: stacked, each row naming its run
        units = [(a, t.assign(run=a.meta.get("run", ""))) for a, t in units if t is not None]
    units = [t for _, t in units if t is not None]
    write_table(tokens, path)
    written = [path]
    if units:
        write_table(pd.concat(units, ignore_index=True), units_path(path))
        written.append(units_path(path))
    return written


# ---------------------------------------------------------------- the app's view


def _json_rows(frame: pd.DataFrame) -> dict:
    """{"columns", "rows"} with Python scalars, NaN as None."""
    columns = [[_scalar(v) for v in frame[c].tolist()] for c in frame.columns]
    return {"columns": list(frame.columns), "rows": [list(row) for row in zip(*columns)]}


def _scalar(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _run_block(atlas: Atlas, tokenizer: Tokenizer, layer: int, unit: int | None) -> dict:
    meta = atlas.meta
    block = {"run": meta.get("run"), "variant": meta["variant"], "layers": meta["layers"],
             "cached": meta.get("cached", False), "seconds": meta["seconds"],
             "tokens_per_s": meta["tokens_per_s"], "stats": meta["stats"],
             "layer_stats": meta["layer_stats"], "loss_mean": mean_loss(atlas),
             "summary": layer_summary(atlas)[layer], "histograms": histograms(atlas, layer),
             "unit_kind": meta["unit"], "units": None, "unit": None}
    table = unit_table(atlas, tokenizer, layer, contexts=False)
    if table is not None:
        block["units"] = _json_rows(table.drop(columns="layer"))
    if unit is not None:
        contexts = unit_contexts(atlas, layer, unit, tokenizer)  # raises for a bad unit
        unit = _index(unit, meta["units"], meta["unit"])
        row = table.iloc[unit]
        block["unit"] = {"layer": layer, "unit": unit, "active": int(row["active"]),
                         "frequency": float(row["frequency"]), "dead": bool(row["dead"]),
                         "always_on": bool(row["always_on"]), "contexts": contexts}
    return _clean(block)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return _scalar(value)


def atlas_view(run: "str | Run", layer: int = 0, unit: int | None = None, *,
               compare: "str | Run | None" = None, tokens: int = DEFAULT_TOKENS, data: str = "val",
               top_k: int = TOP_K, rows: int = 200, sort: str = "count", descending: bool = True,
               min_count: int = 1, runs_dir: str | Path | None = None, device: str = "cpu",
               progress: Progress | None = None) -> dict:
    """JSON-friendly atlas of one run (or two, aligned) at one layer, for the app's Atlas view.

    Returns ``{"settings": {...}, "runs": [block, ...], "tokens": {"columns", "rows", "total",
    "shown"}, "compare": None or the layer's rows of compare_summary}``; a block holds the run's
    labels, cache flag and speed, its statistics' declarations, the layer's summary and
    histograms, its units table and, when `unit` is given, that unit's flags and top contexts.
    A run is a :class:`Run` or ``EXPERIMENT/RUN`` under the runs root (never a path: names from
    the app stay inside the root). Token rows: the `rows` first (0: all) by `sort` (a column
    name) among tokens seen at least `min_count` times. `progress(done, total)` reports
    positions while computing (a progress bar; not called when the atlases come from the
    cache). ValueError (nothing written) for bad inputs.
    """
    run, compare = (None if x is None else named_run(x, runs_dir) for x in (run, compare))
    atlases, tokenizer = run_atlases(run, tokens, data, top_k, compare, runs_dir=runs_dir, device=device,
                                     progress=progress)
    layer = min(_check_layer(a, layer) for a in atlases)  # the same for both (3.0 from a UI is 3)
    tables = [token_table(a, tokenizer, layer) for a in atlases]
    table = tables[0] if len(tables) == 1 else compare_table(*tables)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"rows must be an integer >= 0 (0: all), got {rows!r:.40}")
    rows = rows or len(table)
    if sort not in table.columns:
        raise ValueError(f"sort must be one of {', '.join(table.columns)}; got {sort!r:.60}")
    shown = table[table["count"] >= min_count].sort_values(sort, ascending=not descending, kind="stable")
    first = atlases[0].meta
    return {"settings": {"tokens": first["tokens"], "data": first["data"], "layer": layer, "top_k": top_k,
                         "context": first["context"], "seq_len": first["seq_len"], "sort": sort},
            "runs": [_run_block(a, tokenizer, layer, unit) for a in atlases],
            "compare": None if len(atlases) < 2 else _clean(
                [r for r in compare_summary(*atlases) if r["layer"] == layer]),
            "tokens": {**_json_rows(shown.head(rows)), "total": len(table), "shown": min(rows, len(shown))}}


# ---------------------------------------------------------------- CLI


def _print_atlas(atlas: Atlas, tokenizer: Tokenizer, out=sys.stdout) -> None:
    meta = atlas.meta
    speed = f"{meta['seconds']:.1f} s, {meta['tokens_per_s']:,.0f} tok/s"
    how = f"from cache; computed in {speed}" if meta.get("cached") else speed
    print(f"{meta.get('run')} ({meta['variant']}): {meta['tokens']:,} tokens of {meta['data']} ({how}); "
          f"mean loss {mean_loss(atlas):.4f}", file=out)
    for row in layer_summary(atlas):
        cells = [f"{k} {v:.4g}" for k, v in row.items() if k != "layer"]
        if cells:  # a dense FFN (SwiGLU) declares nothing per layer
            print(f"  L{row['layer']}: " + ", ".join(cells), file=out)
    ranked = next((n for n, s in meta["stats"].items() if s["high"] is not None), None)
    if ranked is not None:
        _print_extremes(atlas, tokenizer, ranked, out)


def _print_comparison(a: Atlas, b: Atlas, out=sys.stdout) -> None:
    rows = compare_summary(a, b)
    if rows:
        print(f"{a.meta.get('run')} vs {b.meta.get('run')} on the same tokens (mean a / mean b, "
              "correlation of per-token means across the vocabulary):", file=out)
    for row in rows:
        corr = row["token_correlation"]
        shown = "n/a (constant)" if corr is None else f"{corr:+.3f}"
        print(f"  L{row['layer']} {row['stat']}: {row['mean_a']:.4f} / {row['mean_b']:.4f}, "
              f"correlation {shown}", file=out)


def _print_extremes(atlas: Atlas, tokenizer: Tokenizer, name: str, out, shown: int = 5,
                    min_count: int = 20) -> None:
    """The tokens with the highest and lowest mean of `name` at each layer (frequent ones)."""
    table = token_table(atlas, tokenizer)
    table = table[table["count"] >= min_count]
    for layer in range(atlas.layers):
        column = f"{name}_mean_L{layer}"
        ordered = table.sort_values(column, kind="stable")[["token", column]]
        high = ", ".join(f"{t!r} {v:.2f}" for t, v in ordered.iloc[::-1].head(shown).itertuples(index=False))
        low = ", ".join(f"{t!r} {v:.2f}" for t, v in ordered.head(shown).itertuples(index=False))
        print(f"  L{layer} {name} (tokens seen >= {min_count}x): highest {high}; lowest {low}", file=out)


def default_threads() -> int:
    """torch CPU threads for a CLI atlas: 1 when the 1-minute load average says other work
    already fills the cores, torch's default otherwise. On this project's 2 shared cores (load
    7-9) the 100k-token bench took 134 s with 2 threads, whose spin-waits fight the other
    processes, and 38 s with 1."""
    try:
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        busy = False
    return 1 if busy else torch.get_num_threads()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.atlas",
                                description="Routing atlas of a run over a corpus: per vocabulary token, "
                                            "per unit and per layer (see core/analysis/atlas.py).")
    p.add_argument("run", help="EXPERIMENT/RUN under the runs root, or a run folder")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="tokens to read (default %(default)s)")
    p.add_argument("--data", default="val", help="'val' (the run's validation split) or a text file")
    p.add_argument("--out", help="export FILE.csv or FILE.parquet (+ FILE.units.csv/.parquet)")
    p.add_argument("--compare", metavar="RUN2", help="a second run, on the very same tokens")
    p.add_argument("--top-k", type=int, default=TOP_K, help="activating contexts kept per unit")
    p.add_argument("--runs-dir", help="runs root (default $RUNS_DIR or ./runs)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--refresh", action="store_true", help="recompute even when cached")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: 1 while other work keeps the cores busy, else torch's)")
    p.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                   help="the FFN file of a plugin run (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m core.atlas``: 0 on success, 2 (one ``error:`` line, nothing written) on bad input."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads if args.threads > 0 else default_threads())
    try:
        variants.load_plugins(args.ffn_module)
        out = check_out(args.out) if args.out else None
        atlases, tokenizer = run_atlases(args.run, args.tokens, args.data, args.top_k, args.compare,
                                         runs_dir=args.runs_dir, device=args.device, refresh=args.refresh)
        for atlas in atlases:
            _print_atlas(atlas, tokenizer)
        if len(atlases) == 2:
            _print_comparison(*atlases)
        if atlases[0].meta["tokens"] < args.tokens:
            print(f"note: {atlases[0].meta['data']} holds only {atlases[0].meta['tokens']:,} positions "
                  f"(asked for {args.tokens:,})")
        if out is not None:
            written = export_atlases(atlases, tokenizer, out)
            print("wrote " + ", ".join(map(str, written)))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["Atlas", "compute_atlas", "run_atlases", "atlas_view", "token_table", "unit_table",
           "unit_contexts", "histograms", "layer_summary", "mean_loss", "compare_table", "compare_summary",
           "export_atlases", "read_table", "write_table", "check_out", "check_settings", "resolve_run",
           "named_run", "token_stream", "same_tokenizer", "cache_key", "windows_per_batch",
           "default_threads", "main", "CACHE_STATS", "DEFAULT_TOKENS", "TOP_K", "CONTEXT"]
