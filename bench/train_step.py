"""Training-step benchmark: our FFN variants against each other and transformers' Qwen2, side by side.

    python bench/train_step.py --preset tiny                  # CPU, fp32
    python bench/train_step.py --preset paper --compile       # CUDA, bf16 autocast
    python bench/train_step.py --preset tiny --dtypes fp32,bf16 --candidates swiglu dual-jumprelu hf-qwen2

Candidates run interleaved (A B C ... A B C ...) in one process so machine noise hits all alike;
medians of per-step times are reported with tokens/s, MFU against a matmul peak measured in the
same run, and peak memory (CUDA: max allocated; CPU: peak RSS of a fresh process per candidate).
On CPU the whole comparison runs twice, with glibc's default allocator settings and with
MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ raised (read at process start, hence processes).
Synthetic token ids: the data pipeline is not part of the step.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from math import nan
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import apply_overrides, preset  # noqa: E402
from core.jobs.launch import MALLOC_ENV  # noqa: E402
from core.model import build_model, model_flops_per_token  # noqa: E402
from core.sharing.export import qwen2_config_dict  # noqa: E402
from core.training.plan import matmul_peak, measure_peak  # noqa: E402
from core.training.precision import resolve_dtype  # noqa: E402

CANDIDATES = {
    "swiglu": ["ffn=swiglu"],
    "geglu": ["ffn=geglu"],
    "relu2": ["ffn=relu2"],
    "moe-e4-top1": ["ffn=moe"],
    "moe-e4-top2-active": ["ffn=moe", "moe_top_k=2", "ffn_match=active"],
    "dual-jumprelu": ["ffn=dual", "ffn_threshold=jumprelu"],
    "dual-unfused": ["ffn=dual", "ffn_threshold=jumprelu", "ffn_fused=false"],
    "dual-shifted_relu": ["ffn=dual", "ffn_threshold=shifted_relu"],
    "dual-cats": ["ffn=dual", "ffn_threshold=cats"],
    "dual-share_none": ["ffn=dual", "ffn_share=none"],
    "hf-qwen2": ["ffn=swiglu"],
}


def build(name: str, preset_name: str, device: torch.device, overrides: list[str]):
    """(model, step function) of one candidate."""
    config = apply_overrides(preset(preset_name), CANDIDATES[name] + overrides)
    torch.manual_seed(0)
    if name == "hf-qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        hf_config = Qwen2Config(**{k: v for k, v in qwen2_config_dict(config.model).items()
                                   if k not in ("architectures", "model_type", "torch_dtype")})
        model = Qwen2ForCausalLM._from_config(hf_config, attn_implementation="sdpa").to(device)

        def forward(ids):
            return model(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss
    else:
        model = build_model(config.model).to(device)

        def forward(ids):
            return model(ids[:, :-1], ids[:, 1:], return_logits=False).loss
    return config, model, forward


def make_step(model, forward, device: torch.device, bf16: bool, compile_model: bool):
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, **extra)
    fwd = torch.compile(forward) if compile_model else forward

    def step(ids):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def default_micro_batch(config) -> int:
    """The preset's micro-batch; 16 where the preset sizes it to the device (grad_accum=0)."""
    if config.train.grad_accum:
        return config.train.batch_size // config.train.grad_accum
    return min(16, config.train.batch_size)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def uses_bf16(args, device: torch.device) -> bool:
    """What the trainer would run: ``train.dtype`` (from --set, default auto) resolved on this
    device (core.training.precision), on every device; --fp32 forces fp32."""
    dtype = apply_overrides(preset(args.preset), args.set).train.dtype
    return not args.fp32 and resolve_dtype(dtype, device) == "bf16"


def time_candidates(args, device: torch.device) -> dict:
    bf16 = uses_bf16(args, device)
    prepared, memory = {}, {}
    for name in args.candidates:
        base = _cuda_reset(device)
        config, model, forward = build(name, args.preset, device, args.set)
        batch = args.batch or default_micro_batch(config)
        ids = torch.randint(0, config.model.vocab_size, (batch, config.train.seq_len + 1), device=device)
        step = make_step(model, forward, device, bf16, args.compile)
        for _ in range(args.warmup):
            step(ids)
        sync(device)
        if device.type == "cuda":  # this candidate's own peak: weights, optimizer, activations
            memory[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
        prepared[name] = (config, step, ids)
    times = {name: [] for name in prepared}
    for _ in range(args.rounds):  # interleaved: A B C ... A B C ...
        for name, (_, step, ids) in prepared.items():
            for _ in range(args.steps):
                sync(device)
                start = time.perf_counter()
                step(ids)
                sync(device)
                times[name].append(time.perf_counter() - start)
    peak = matmul_peak(device, bf16)
    rows = {name: _row(prepared[name][0], prepared[name][2], times[name], peak) for name in prepared}
    if device.type == "cpu":
        for name, (_, step, ids) in prepared.items():
            rows[name]["matmul_s"] = matmul_time(step, ids)
    for name, gb in memory.items():
        rows[name]["peak_mem_gb"] = gb
    return rows | {"_peak_flops": peak}


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def matmul_time(step, ids) -> float:
    """Seconds of one step spent in matrix products and attention kernels (profiler, CPU).

    The floor no elementwise work or allocator setting can go below at this matmul speed.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(ids)
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6


def _cuda_reset(device: torch.device) -> int:
    """Reset CUDA peak tracking; return the bytes already allocated (other candidates)."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _row(config, ids, times: list[float], peak: float) -> dict:
    batch, seq = ids.shape[0], ids.shape[1] - 1
    median = statistics.median(times)
    flops = 3 * model_flops_per_token(config.model, seq) * batch * seq
    return {"step_s": median, "tok_s": batch * seq / median, "mfu": flops / median / peak,
            "batch": batch, "seq_len": seq, "steps_timed": len(times)}


def peak_memory(args, name: str, device: torch.device) -> dict:
    """CUDA: max allocated over a few steps. CPU: the candidate's own process's peak RSS, and
    the peak of live tensor bytes during one step (like CUDA's max allocated: deterministic,
    where RSS varies by a few percent between identical processes)."""
    bf16 = uses_bf16(args, device)
    config, model, forward = build(name, args.preset, device, args.set)
    batch = args.batch or default_micro_batch(config)
    ids = torch.randint(0, config.model.vocab_size, (batch, config.train.seq_len + 1), device=device)
    step = make_step(model, forward, device, bf16, args.compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):
        step(ids)
    sync(device)
    if device.type == "cuda":
        return {"peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}
    return {"peak_mem_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_tensor_gb": measure_peak(lambda: step(ids), device) / 2**30}


def _child(args, extra: list[str], env: dict) -> dict:
    cmd = [sys.executable, __file__, *_forward_args(args), *extra]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forward_args(args) -> list[str]:
    flags = ["--preset", args.preset, "--device", args.device, "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--threads", str(args.threads),
             "--candidates", *args.candidates]
    flags += ["--batch", str(args.batch)] * bool(args.batch) + ["--compile"] * args.compile
    flags += ["--fp32"] * args.fp32 + [f for s in args.set for f in ("--set", s)]
    return flags


def run_all(args, device: torch.device) -> dict:
    """{label: rows}: one comparison per dtype of --dtypes (labels end in /fp32, /bf16) or, without
    it, in the dtype train.dtype resolves to; on CPU each with both allocator settings."""
    if not args.dtypes:
        return _run_dtype(args, device, "")
    result = {}
    for dtype in args.dtypes:
        settings = [*args.set, f"train.dtype={dtype}"]
        chosen = argparse.Namespace(**{**vars(args), "set": settings, "fp32": False})
        result.update(_run_dtype(chosen, device, f"/{dtype}"))
    return result


def _run_dtype(args, device: torch.device, suffix: str) -> dict:
    if device.type == "cuda":
        return {f"default{suffix}": time_candidates(args, device)}
    envs = {"default": {k: v for k, v in os.environ.items() if k not in MALLOC_ENV},
            "malloc_tuned": {**os.environ, **MALLOC_ENV}}
    envs = {k: v for k, v in envs.items() if args.malloc in ("both", k)}
    result = {}
    for label, env in envs.items():
        rows = _child(args, ["--worker", "time"], env)
        for name in args.candidates:
            rows[name].update(_child(args, ["--worker", "memory", "--only", name], env))
        result[f"{label}{suffix}"] = rows
    return result


def print_table(result: dict, baseline: str) -> None:
    for label, rows in result.items():
        peak = rows.get("_peak_flops", float("nan"))
        print(f"\n[{label}]  measured matmul peak {peak / 1e9:,.0f} GFLOP/s")
        print(f"{'candidate':20s} {'step ms':>8s} {'mm ms':>7s} {'tok/s':>8s} {'MFU':>6s} {'mem GB':>7s} "
              f"{'tensor GB':>9s} {'time/' + baseline:>12s} {'mem/' + baseline:>11s} "
              f"{'tensor/' + baseline:>14s}")
        base = rows.get(baseline, {})
        for name, row in rows.items():
            if name.startswith("_"):
                continue
            ratios = [row.get(k, nan) / base.get(k, nan) for k in ("step_s", "peak_mem_gb", "peak_tensor_gb")]
            print(f"{name:20s} {row['step_s'] * 1e3:8.1f} {row.get('matmul_s', nan) * 1e3:7.1f} "
                  f"{row['tok_s']:8,.0f} {row['mfu']:6.1%} {row['peak_mem_gb']:7.2f} "
                  f"{row.get('peak_tensor_gb', nan):9.3f} {ratios[0]:12.3f} {ratios[1]:11.3f} "
                  f"{ratios[2]:14.3f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--steps", type=int, default=3, help="timed steps per candidate per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=0,
                   help="micro-batch (default: preset batch / grad_accum, or 16 where that is auto)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile every candidate")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast, whatever train.dtype resolves to")
    p.add_argument("--dtypes", type=lambda text: text.split(","), default=[],
                   help="compare in each dtype side by side, e.g. fp32,bf16 (each with its own matmul peak)")
    p.add_argument("--malloc", choices=["both", "default", "malloc_tuned"], default="both")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, help="output file (default bench/results/...)")
    p.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--only", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.worker == "time":
        print(json.dumps(time_candidates(args, device)))
        return 0
    if args.worker == "memory":
        print(json.dumps(peak_memory(args, args.only, device)))
        return 0
    result = run_all(args, device)
    print_table(result, "swiglu")
    meta = {"preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu x{torch.get_num_threads()}", "torch": torch.__version__, "compile": args.compile,
            "bf16": uses_bf16(args, device), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    out = Path(args.json or REPO / "bench" / "results" / f"train_step-{device.type}-{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": result}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
