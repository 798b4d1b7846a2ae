"""Latency of core.analysis.inspection.inspect_text on an untrained `tiny` dual run (CPU, fp32).

    python bench/inspect_latency.py [--calls 20] [--threads N ...] [--out bench/results/inspect_latency.json]

Builds two runs in a temp dir (context 256, the preset's, and 512), trains the preset's BPE on
the first 1 MB of the builtin corpus (cached after the first time), then times cold load and
the median of `--calls` inspections after warm-up: the default call (capped at the context),
max_tokens=512 on the 512-context model, and a 100k-character paste; by default at torch's
thread count and at 1 thread (on shared cores, one thread has far smaller tail latency).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.analysis import inspection  # noqa: E402
from core.config import apply_overrides, preset  # noqa: E402
from core.model import build_model, weights_state  # noqa: E402
from core.runs import Run  # noqa: E402
from core.training.data import builtin_text, load_tokenizer  # noqa: E402
from core.training.trainer import run_record  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OVERRIDES = ["model.ffn=dual", "data.max_bytes=1000000"]


def make_run(path: Path, context: int) -> Run:
    """An untrained tiny dual run on disk: config, weights, tokenizer."""
    config = apply_overrides(preset("tiny"), [*OVERRIDES, f"model.max_position_embeddings={context}"])
    run = Run(path)
    run.write_config(run_record(config, "cpu"))
    run.save_checkpoint(weights_state(build_model(config.model)), {"optimizer": {}}, step=1)
    _, tokenizer_path = load_tokenizer(config.data, config.model.vocab_size, progress=False)
    run.save_tokenizer(tokenizer_path)
    return run


def timed(fn, calls: int, warmup: int = 3) -> dict:
    """Median/min/max wall time in ms of `fn()` over `calls` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "calls": calls}


def cold_load_ms(run: Run) -> float:
    inspection.clear_model_cache()
    start = time.perf_counter()
    inspection.load_run_model(run)
    return (time.perf_counter() - start) * 1e3


def cases(root: Path) -> list[tuple]:
    """(name, run, text, max_tokens) per case; "json" times serialising the default result."""
    run256, run512 = make_run(root / "bench" / "ctx256", 256), make_run(root / "bench" / "ctx512", 512)
    text = builtin_text(max_bytes=20_000)  # a few thousand tokens of real English
    paste = (text * 6)[:100_000]
    return [("default (ctx 256)", run256, text, None), ("max_tokens=512 (ctx 512)", run512, text, 512),
            ("100k chars (ctx 256)", run256, paste, None), ("to_dict+json (ctx 256)", run256, text, "json")]


def measure(all_cases: list[tuple], calls: int, threads: int) -> list[dict]:
    """One row per case at `threads` torch threads: tokens, cold load and call timings."""
    torch.set_num_threads(threads)
    rows = []
    for name, run, body, limit in all_cases:
        cold = cold_load_ms(run)
        if limit == "json":
            result = inspection.inspect_text(run, body)
            fn = lambda r=result: json.dumps(r.to_dict())  # noqa: E731
        else:
            result = inspection.inspect_text(run, body, max_tokens=limit)
            fn = lambda r=run, b=body, m=limit: inspection.inspect_text(r, b, max_tokens=m)  # noqa: E731
        rows.append({"case": name, "threads": threads, "tokens": len(result.ids),
                     "truncated": result.truncated, "cold_load_ms": cold, **timed(fn, calls)})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'case':26s} {'threads':>7s} {'tokens':>6s} {'median ms':>10s} {'min ms':>8s} "
          f"{'max ms':>8s} {'cold load ms':>13s}")
    for r in rows:
        print(f"{r['case']:26s} {r['threads']:7d} {r['tokens']:6d} {r['median_ms']:10.1f} "
              f"{r['min_ms']:8.1f} {r['max_ms']:8.1f} {r['cold_load_ms']:13.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch CPU thread counts to time (default: torch's default and 1)")
    parser.add_argument("--out", default=str(RESULTS / "inspect_latency.json"))
    args = parser.parse_args(argv)
    thread_counts = args.threads or sorted({torch.get_num_threads(), 1}, reverse=True)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="inspect-bench-") as tmp:
        all_cases = cases(Path(tmp))
        rows = [row for n in thread_counts for row in measure(all_cases, args.calls, n)]
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Load average tells a reader whether other processes shared the cores during the run.
    meta = {"preset": "tiny", "ffn": "dual", "device": "cpu", "dtype": "fp32", "cpus": os.cpu_count(),
            "loadavg_1m": [load_before, os.getloadavg()[0]], "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}  (1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
