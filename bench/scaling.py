"""Where cost grows faster than linear: step time as sequence length and width double, and
token-cache build time against corpus size.

    python bench/scaling.py [--preset micro] [--ffn swiglu dual] [--device auto]

Each row doubles one dimension of the preset; `x prev` is the step-time ratio to the row before
(2.0 = linear in that dimension). Token-cache rows build a fresh cache (BPE + tokenization) for
the first N bytes of the builtin corpus in a temporary cache folder.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import DataConfig, apply_overrides, preset  # noqa: E402
from core.model import build_model  # noqa: E402


def step_time(preset_name: str, overrides: list[str], device: torch.device, steps: int = 4) -> float:
    """Median forward+backward+AdamW step time of one configuration (synthetic ids)."""
    config = apply_overrides(preset(preset_name), overrides)
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.model.vocab_size, (config.train.batch_size, config.train.seq_len + 1),
                        device=device)
    bf16 = device.type == "cuda"
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids[:, :-1], ids[:, 1:], return_logits=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step is warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def sweep_dimension(args, ffn: str, name: str, values: list[dict], device) -> list[dict]:
    rows, previous = [], None
    for setting in values:
        overrides = [f"ffn={ffn}"] + [f"{k}={v}" for k, v in setting.items()]
        seconds = step_time(args.preset, overrides, device)
        rows.append({"ffn": ffn, "dimension": name, **setting, "step_s": seconds,
                     "x_prev": seconds / previous if previous else None})
        previous = seconds
    return rows


def model_rows(args, device) -> list[dict]:
    base = preset(args.preset)
    seq, width = base.train.seq_len, base.model.hidden_size
    seqs = [{"seq_len": seq * 2**i, "max_position_embeddings": seq * 2**i} for i in range(args.doublings + 1)]
    widths = [{"hidden_size": width * 2**i, "intermediate_size": 4 * width * 2**i}
              for i in range(args.doublings + 1)]
    rows = []
    for ffn in args.ffn:
        rows += sweep_dimension(args, ffn, "seq_len", seqs, device)
        rows += sweep_dimension(args, ffn, "width", widths, device)
    return rows


def cache_rows(sizes: list[int], vocab: int) -> list[dict]:
    from core.training.data import load_tokens

    rows, previous = [], None
    for size in sizes:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["EXPLORER_CACHE"] = cache
            start = time.perf_counter()
            data = load_tokens(DataConfig(max_bytes=size), vocab, progress=False)
            seconds = time.perf_counter() - start
        rows.append({"bytes": size, "tokens": int(len(data.train) + len(data.val)), "build_s": seconds,
                     "x_prev": seconds / previous if previous else None})
        previous = seconds
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="micro")
    p.add_argument("--ffn", nargs="+", default=["swiglu", "dual"])
    p.add_argument("--doublings", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-sizes", type=int, nargs="+",
                   default=[1_500_000, 3_000_000, 6_000_000, 12_000_000])
    p.add_argument("--vocab", type=int, default=8192)
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    result = {"model": model_rows(args, device), "token_cache": cache_rows(args.cache_sizes, args.vocab)}
    for row in result["model"]:
        dims = {k: v for k, v in row.items() if k in ("seq_len", "hidden_size")}
        ratio = f"{row['x_prev']:.2f}" if row["x_prev"] else "-"
        print(f"{row['ffn']:7s} {row['dimension']:8s} {dims} step {row['step_s'] * 1e3:8.1f} ms  "
              f"x prev {ratio}")
    for row in result["token_cache"]:
        ratio = f"{row['x_prev']:.2f}" if row["x_prev"] else "-"
        print(f"cache {row['bytes']:>11,d} bytes {row['tokens']:>10,d} tokens  {row['build_s']:6.2f} s  "
              f"x prev {ratio}")
    out = REPO / "bench" / "results" / f"scaling-{device.type}-{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
