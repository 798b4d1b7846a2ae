"""Wall time of the routing atlas (core.analysis.atlas) on the shipped `tiny` dual run (CPU, fp32).

    python bench/atlas.py [--run runs/demo/dual-s0] [--tokens 100000] [--repeats 1] [--threads N]
                          [--out bench/results/atlas.json]

Copies the run's config, weights and tokenizer to a temp folder (the atlas caches into its run
folder; the shipped one stays untouched), warms the token cache of its validation split (the
first time this builds the BPE and the token ids: timed apart, as "data_s"), then times the
atlas itself (`--repeats` fresh computations, and one call served from the cache) and prints
tokens/s and the wall time. The 1-min load average is recorded: the cores may be shared.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.analysis import atlas, inspection  # noqa: E402
from core.runs import Run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FILES = ("config.json", "model.safetensors", "tokenizer.json")


def copy_run(source: Path, root: Path) -> Run:
    """The run's files needed for an atlas, in a scratch run folder."""
    target = root / source.parent.name / source.name
    target.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(source / name, target / name)
    return Run(target)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(run: Run, tokens: int, repeats: int) -> dict:
    """Seconds of: the data (token cache), the model load, each fresh atlas, a cached one."""
    model, tokenizer = inspection.load_run_model(run)
    data_s, _ = timed(lambda: atlas.token_stream(run, tokenizer, "val", tokens))
    inspection.clear_model_cache()
    fresh = []
    for _ in range(repeats):
        inspection.clear_model_cache()
        wall, (found, _) = timed(lambda: atlas.run_atlases(run, tokens, refresh=True))
        fresh.append({"wall_s": wall, "compute_s": found[0].meta["seconds"]})
    cached_s, (again, _) = timed(lambda: atlas.run_atlases(run, tokens))
    n = found[0].meta["tokens"]
    wall = statistics.median(r["wall_s"] for r in fresh)
    return {"tokens": n, "data_s": data_s, "fresh": fresh, "wall_s": wall, "tokens_per_s": n / wall,
            "compute_tokens_per_s": n / statistics.median(r["compute_s"] for r in fresh),
            "cached_s": cached_s, "cache_hit": again[0].meta["cached"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo/dual-s0")
    parser.add_argument("--tokens", type=int, default=atlas.DEFAULT_TOKENS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: the CLI's rule, atlas.default_threads)")
    parser.add_argument("--out", default=str(RESULTS / "atlas.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or atlas.default_threads())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        result = measure(copy_run(Path(args.run).resolve(), Path(tmp)), args.tokens, args.repeats)
    meta = {"run": args.run, "device": "cpu", "dtype": "fp32", "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "loadavg_1m": [load_before, os.getloadavg()[0]],
            "torch": torch.__version__, "python": platform.python_version()}
    print(f"atlas of {result['tokens']:,} val tokens of {args.run}: {result['wall_s']:.1f} s wall "
          f"({result['tokens_per_s']:,.0f} tokens/s; forward + pooling {result['compute_tokens_per_s']:,.0f} "
          f"tokens/s); token stream {result['data_s']:.1f} s; cached call {result['cached_s']:.2f} s")
    print(f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
