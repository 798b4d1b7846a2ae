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

from core.analysis.atlas.cli import default_threads, main
from core.analysis.atlas.compute import (
    CACHE_STATS,
    CONTEXT,
    DEFAULT_TOKENS,
    TOP_K,
    Atlas,
    compute_atlas,
    windows_per_batch,
)
from core.analysis.atlas.export import check_out, export_atlases, read_table, write_table
from core.analysis.atlas.store import (
    cache_key,
    check_settings,
    named_run,
    resolve_run,
    run_atlases,
    same_tokenizer,
    token_stream,
)
from core.analysis.atlas.tables import (
    compare_summary,
    compare_table,
    histograms,
    layer_summary,
    mean_loss,
    token_table,
    unit_contexts,
    unit_table,
)
from core.analysis.atlas.view import atlas_view

__all__ = ["Atlas", "compute_atlas", "run_atlases", "atlas_view", "token_table", "unit_table",
           "unit_contexts", "histograms", "layer_summary", "mean_loss", "compare_table",
           "compare_summary", "export_atlases", "read_table", "write_table", "check_out",
           "check_settings", "resolve_run", "named_run", "token_stream", "same_tokenizer", "cache_key",
           "windows_per_batch", "default_threads", "main", "CACHE_STATS", "DEFAULT_TOKENS", "TOP_K",
           "CONTEXT"]
