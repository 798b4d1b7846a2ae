"""What a run needs from its device: peak memory of every stage, and the micro-batch that fits.

Every stage of a run is bounded by the micro-batch: a training micro-step (forward + backward
through the chunked loss), an evaluation micro-batch (with the routing probe), the interference
probe (at most 8 sequences), the knock-out losses (evaluation forwards) and the checkpoint copy.
:func:`choose_micro_batch` picks the largest micro-batch whose measured stages fit the device's
free memory (``train.grad_accum=0``); ``python -m core.train ... --plan`` prints
:func:`run_plan` without training.

Memory is measured, not modelled: on CUDA with the allocator's peak counter (an out-of-memory
error counts as "does not fit"), on CPU as the peak bytes of live tensors from the profiler's
memory events (deterministic; peak RSS of identical processes varies by +-0.03 GB).
"""

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

from core.config import RunConfig, variant_label
from core.model import CausalLM, model_flops_per_token, parameter_counts, weights_state
from core.training.diagnostics import (
    RoutingProbe,
    forced_route,
    interference_probe,
    knockout_names,
    mean_val_loss,
    split_layers,
)

# Share of the device's free memory a run may plan to use. CUDA: the caching allocator needs
# head-room for fragmentation. CPU: leave room for the token arrays, the tokenizer and the app.
MEMORY_FRACTION = {"cuda": 0.9, "cpu": 0.5}
PROBE_ROWS = 8  # sequences of the interference probe (core.train uses the same cap)
TRAIN_STAGE, EVAL_STAGE, CHECKPOINT = "train micro-step", "eval micro-batch", "checkpoint copy"

AutocastFactory = Callable[[], object]
Report = Callable[[str], None]  # told what is measured next (a paper-size plan takes minutes)


class DoesNotFit(ValueError):
    """No micro-batch of the global batch fits the device's memory."""


def measure_peak(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensors `fn` allocates on `device` above what is live when it starts."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _cpu_tensor_peak(fn)


def _cpu_tensor_peak(fn: Callable[[], object]) -> int:
    """Peak live tensor bytes during `fn`, from the profiler's allocation and free events."""
    from torch.profiler import ProfilerActivity, profile

    with _profiler_lines_dropped(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


@contextmanager
def _profiler_lines_dropped() -> Iterator[None]:
    """Kineto writes a "USDT ... profiler_start/stop" line straight to file descriptor 2 each time
    it starts and stops, with no setting to silence it: capture fd 2 meanwhile and pass every
    other line on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if "SyncActivityProfilerHandler" not in line:
                    sys.stderr.write(line)


def free_bytes(device: torch.device) -> int:
    """Memory the device can still give: CUDA free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget(config: RunConfig, device: torch.device) -> int:
    """Bytes a run may plan for on `device`: its share of the free memory, at most
    ``train.memory_budget_gb`` where that is set (a shared GPU, a host with other work)."""
    budget = int(free_bytes(device) * MEMORY_FRACTION.get(device.type, 0.9))
    if config.train.memory_budget_gb:
        budget = min(budget, int(config.train.memory_budget_gb * 1e9))
    return budget


def weight_bytes(model: CausalLM) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def optimizer_bytes(model: CausalLM) -> int:
    """AdamW's two fp32 moments per parameter: not allocated until the first step."""
    return 2 * sum(p.numel() * 4 for p in model.parameters())


def _random_batch(config: RunConfig, rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids from a private generator: measuring never moves the global RNG."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.model.vocab_size, (rows, config.train.seq_len + 1), generator=generator)
    ids = ids.to(device)
    return ids[:, :-1], ids[:, 1:]


def _train_micro_step(model: CausalLM, x, y, autocast: AutocastFactory) -> None:
    """Forward and backward of one micro-batch as the trainer runs it; the weights' .grad is
    left as it was found (None, as between optimizer steps)."""
    try:
        with autocast():
            model(x, y, return_logits=False).loss.backward()
    finally:
        for p in model.parameters():
            p.grad = None


def _eval_micro_batch(model: CausalLM, x, y, autocast: AutocastFactory) -> None:
    """One evaluation forward as ``core.training.trainer.evaluate`` runs it, routing probe included."""
    model.eval()
    try:
        with torch.no_grad(), RoutingProbe(model), autocast():
            model(x, y, return_logits=False)
    finally:
        model.train()


def stage_functions(model: CausalLM, config: RunConfig, device: torch.device, micro_batch: int,
                    autocast: AutocastFactory, stages: tuple[str, ...] | None = None) -> dict[str, Callable]:
    """Zero-argument callables running each stage once at `micro_batch` on random tokens."""
    x, y = _random_batch(config, micro_batch, device)
    rows = min(PROBE_ROWS, micro_batch)
    out = {TRAIN_STAGE: lambda: _train_micro_step(model, x, y, autocast),
           EVAL_STAGE: lambda: _eval_micro_batch(model, x, y, autocast)}
    if config.train.diagnostics and split_layers(model):
        out["interference probe"] = lambda: interference_probe(model, x[:rows], y[:rows], device, autocast)
    knockouts = knockout_names(model) if config.train.diagnostics else []
    if knockouts:

        def knockout() -> None:
            with forced_route(model, knockouts[-1]):
                mean_val_loss(model, [(x, y)], device, autocast)

        out["knock-out"] = knockout
    out[CHECKPOINT] = lambda: weights_state(model)
    return {name: fn for name, fn in out.items() if stages is None or name in stages}


def _is_oom(error: BaseException) -> bool:
    text = str(error).lower()
    return (isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text
            or "can't allocate memory" in text)


def stage_peaks(model: CausalLM, config: RunConfig, device: torch.device, micro_batch: int,
                autocast: AutocastFactory = nullcontext, stages: tuple[str, ...] | None = None,
                report: Report | None = None) -> dict[str, float]:
    """Peak bytes each stage allocates above the resident weights; inf where CUDA ran out.
    `report` is told each stage before it is measured."""
    peaks = {}
    for name, fn in stage_functions(model, config, device, micro_batch, autocast, stages).items():
        if report:
            report(f"{name} at micro-batch {micro_batch}")
        try:
            peaks[name] = float(measure_peak(fn, device))
        except RuntimeError as error:
            if not _is_oom(error):
                raise
            peaks[name] = float("inf")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return peaks


def micro_batch_candidates(per_rank: int) -> list[int]:
    """Micro-batches that split a rank's share of the global batch evenly, largest first."""
    return [m for m in range(per_rank, 0, -1) if per_rank % m == 0]


def choose_micro_batch(model: CausalLM, config: RunConfig, device: torch.device, per_rank: int,
                       autocast: AutocastFactory = nullcontext, report: Report | None = None
                       ) -> tuple[int, dict[str, float]]:
    """The largest micro-batch dividing `per_rank` whose every stage (training micro-step,
    evaluation, probes, knock-out) fits :func:`memory_budget` with AdamW's moments still to
    come, and the stages' measured peaks there. Predicts linearly from micro-batches 1 and 2,
    then confirms by measuring; DoesNotFit names the stage that fails at 1."""
    budget = memory_budget(config, device) - optimizer_bytes(model)
    sizing = tuple(name for name in stage_functions(model, config, device, 1, autocast) if name != CHECKPOINT)

    measured: dict[int, tuple[float, dict[str, float]]] = {}

    def need(m: int) -> tuple[float, dict[str, float]]:
        if m not in measured:  # micro-batch 2 serves the slope and may be a candidate too
            peaks = stage_peaks(model, config, device, m, autocast, sizing, report)
            measured[m] = (max(peaks.values()), peaks)
        return measured[m]

    one, peaks = need(1)
    if one > budget:
        stage = max(peaks, key=peaks.get)
        raise DoesNotFit(_does_not_fit_message(config, device, stage, one, budget + optimizer_bytes(model)))
    slope = max(need(2)[0] - one, 1.0) if per_rank > 1 else 1.0
    for m in micro_batch_candidates(per_rank)[:-1]:
        if one + slope * (m - 1) > budget:
            continue
        worst, at_m = need(m)
        if worst <= budget:
            return m, at_m
    return 1, peaks


def resolve_micro_batch(model: CausalLM, config: RunConfig, device: torch.device, ranks: int = 1,
                        autocast: AutocastFactory = nullcontext, report: Report | None = None) -> int:
    """The micro-batch of one of `ranks` ranks: as ``train.grad_accum`` sets it, or
    (``grad_accum=0``) the largest that fits, by :func:`choose_micro_batch`."""
    per_rank, accum = config.train.batch_size // ranks, config.train.grad_accum
    if not accum:
        return choose_micro_batch(model, config, device, per_rank, autocast, report)[0]
    if per_rank % accum:
        raise ValueError(f"batch_size ({config.train.batch_size}) must be divisible by "
                         f"grad_accum x ranks ({accum} x {ranks})")
    return per_rank // accum


def _does_not_fit_message(config: RunConfig, device: torch.device, stage: str, need: float,
                          budget: float) -> str:
    return (f"the {stage} needs {need / 1e9:.2f} GB at micro-batch 1 (seq_len {config.train.seq_len}, "
            f"vocab {config.model.vocab_size}) but {device} offers {budget / 1e9:.2f} GB for it; "
            "lower train.seq_len or the model size, raise train.memory_budget_gb if set, or use a "
            "device with more memory")


def matmul_peak(device: torch.device, bf16: bool) -> float:
    """Best of several large matmuls, FLOP/s: the machine's achievable dense peak right now."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 8192 if device.type == "cuda" else _cpu_matmul_size(dtype)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(8 if device.type == "cuda" else 5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best


def _cpu_matmul_size(dtype: torch.dtype, largest: int = 1536) -> int:
    """The side of the CPU peak's matrices: doubled from 256 while one product takes under 50 ms,
    up to `largest`. A CPU without native bf16 multiplies bf16 ~100x slower than fp32: at 1536 its
    peak alone would take minutes."""
    n = 256
    while n < largest:
        a = torch.randn(n, n, dtype=dtype)
        start = time.perf_counter()
        a @ a
        if time.perf_counter() - start > 0.05:
            break
        n = min(2 * n, largest)
    return n


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_plan(model: CausalLM, config: RunConfig, device: torch.device,
             autocast: AutocastFactory = nullcontext, precision: dict | None = None,
             report: Report | None = None) -> dict:
    """Everything ``--plan`` prints, measured on `device` at the micro-batch the run would use.
    `precision`: core.training.precision.precision_record of the run (default: fp32, as a
    nullcontext `autocast` runs); `report`: as in :func:`stage_peaks`."""
    precision = precision or {"dtype": "fp32", "native_bf16_cpu": False}
    train = config.train
    if train.grad_accum:
        micro_batch = train.batch_size // train.grad_accum
        peaks = stage_peaks(model, config, device, micro_batch, autocast, report=report)
    else:
        micro_batch, peaks = choose_micro_batch(model, config, device, train.batch_size, autocast, report)
        peaks.update(stage_peaks(model, config, device, micro_batch, autocast, (CHECKPOINT,), report))
    tokens = train.batch_size * train.seq_len
    flops = 3 * model_flops_per_token(config.model, train.seq_len) * tokens  # forward + 2x backward
    resident = weight_bytes(model) + optimizer_bytes(model)
    plan = {"preset": config.preset, "variant": variant_label(config.model), "device": str(device),
            "params": parameter_counts(model), "tokens_per_step": tokens, "batch_size": train.batch_size,
            "seq_len": train.seq_len, "micro_batch": micro_batch, "dtype": precision["dtype"],
            "native_bf16_cpu": precision["native_bf16_cpu"],
            "grad_accum": train.batch_size // micro_batch, "auto": train.grad_accum == 0,
            "flops_per_step": flops, "weights_gb": weight_bytes(model) / 1e9,
            "optimizer_gb": optimizer_bytes(model) / 1e9, "free_gb": free_bytes(device) / 1e9,
            "stages_gb": {name: (resident + peak) / 1e9 for name, peak in peaks.items()}}
    if device.type == "cuda":
        peak_flops = matmul_peak(device, precision["dtype"] == "bf16")
        plan.update(matmul_tflops=peak_flops / 1e12, step_s_at_peak=flops / peak_flops)
    return plan


def progress_lines() -> Report:
    """A :data:`Report` writing one line per stage to stderr, with the time so far:
    ``memory plan: interference probe at micro-batch 8 (3 min 02 s in)``."""
    started = time.monotonic()

    def report(what: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - started), 60)
        print(f"memory plan: {what} ({minutes} min {seconds:02d} s in)", file=sys.stderr, flush=True)

    return report


def format_plan(plan: dict) -> str:
    """The plan as the aligned text ``--plan`` prints."""
    params = plan["params"]
    how = "auto" if plan["auto"] else "set"
    lines = [f"plan: preset {plan['preset']}, {plan['variant']}, on {plan['device']} "
             f"({plan['free_gb']:.2f} GB free)",
             f"  parameters        {params['total'] / 1e6:.2f}M "
             f"(non-embedding {params['non_embedding'] / 1e6:.2f}M)",
             f"  tokens per step   {plan['tokens_per_step']:,} ({plan['batch_size']} x {plan['seq_len']})",
             f"  micro-batch       {plan['micro_batch']} x {plan['grad_accum']} accumulation ({how})",
             f"  precision         {_precision_line(plan)}",
             f"  FLOPs per step    {plan['flops_per_step']:.3e} (forward + backward)",
             f"  resident          weights {plan['weights_gb']:.2f} GB + AdamW moments "
             f"{plan['optimizer_gb']:.2f} GB",
             "  peak memory per stage (resident included, measured at the micro-batch):"]
    lines += [f"    {name:<20s} {gb:8.2f} GB" for name, gb in plan["stages_gb"].items()]
    if "step_s_at_peak" in plan:
        lines.append(f"  step time         >= {plan['step_s_at_peak']:.3f} s at the measured matmul peak "
                     f"({plan['matmul_tflops']:.0f} TFLOP/s; 100% MFU)")
    return "\n".join(lines)


def _precision_line(plan: dict) -> str:
    """The dtype the run trains in, with why on a CPU (native bf16 products or not)."""
    how = "bf16 autocast" if plan["dtype"] == "bf16" else "fp32"
    if not plan["device"].startswith("cpu"):
        return how
    native = "has" if plan["native_bf16_cpu"] else "has no"
    return f"{how} (this CPU {native} native bf16 matrix products)"


__all__ = ["DoesNotFit", "measure_peak", "free_bytes", "memory_budget", "stage_peaks", "choose_micro_batch",
           "resolve_micro_batch", "micro_batch_candidates", "matmul_peak", "run_plan", "format_plan",
           "progress_lines"]
