"""``python -m core.atlas RUN [--compare RUN2] ...``: compute, print and export atlases."""

import argparse
import os
import sys

import torch
from tokenizers import Tokenizer

from core import variants
from core.analysis.atlas.compute import (
    DEFAULT_TOKENS,
    TOP_K,
    Atlas,
)
from core.analysis.atlas.export import check_out, export_atlases
from core.analysis.atlas.store import (
    run_atlases,
)
from core.analysis.atlas.tables import (
    compare_summary,
    layer_summary,
    mean_loss,
    token_table,
)


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
                                            "per unit and per layer (see core/analysis/atlas/).")
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
