"""Runs, their token streams and the atlas cache in the run folder (``atlas-<key>.npz``)."""

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from core.analysis.atlas.compute import (
    ATLAS_RECIPE,
    CACHE_STATS,
    CONTEXT,
    DEFAULT_TOKENS,
    SCORE_BINS,
    STAT_BINS,
    TOP_K,
    Atlas,
    Progress,
    compute_atlas,
)
from core.analysis.inspection import CHARS_PER_TOKEN, load_run_model
from core.config import RunConfig
from core.fsutil import atomic_write_bytes
from core.model import CausalLM
from core.runs import Run, runs_root
from core.training.data import load_tokens

log = logging.getLogger(__name__)
# Tokens required past the limit when a text file was read only in part: the cut may split the
# last word, whose ids then differ from those of the whole file.
_CUT_MARGIN = 8


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
