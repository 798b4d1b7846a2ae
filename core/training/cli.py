"""``python -m core.train``: flags, the config and run folder they name, ``--plan`` and
``--time-steps``, and the process set-up (allocator, signals) around :func:`core.training.trainer.train`.
"""

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

from core import variants
from core.config import RunConfig, apply_overrides, parse_variant, preset, variant_label
from core.model import build_model
from core.runs import Run, runs_root, validate_name
from core.trackers import LOG_TO_HELP, parse_backends
from core.training.compile_check import require_compiled_gradients
from core.training.plan import format_plan, progress_lines, resolve_micro_batch, run_plan
from core.training.precision import precision_record
from core.training.signals import EXIT_PREEMPTED, RunPreempted, handle_stop_signals, ignore_file_size_signal
from core.training.trainer import (
    Dist,
    _failure_message,
    autocast_context,
    build_optimizer,
    eval_micro_batches,
    evaluate,
    optimizer_step,
    resolve_device,
    train,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description="Train one run.")
    p.add_argument("--preset", default=None, help="micro, tiny, small or paper (default micro)")
    p.add_argument("--config", default=None, metavar="PATH",
                   help="start from a config file instead of a preset, e.g. a run's config.json "
                        "(flags below still apply on top)")
    p.add_argument("--ffn", default=None, help="FFN variant (python -m core.config --list shows them)")
    p.add_argument("--ffn-module", action="append", default=[], metavar="PATH",
                   help="a .py file registering your own FFN variant (repeatable; also "
                   f"${variants.PLUGIN_ENV})")
    p.add_argument("--variant", default=None, help="variant label, e.g. dual+ffn_share=none")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--data", default=None, help="builtin, fineweb, hf:owner/name[:config] or a path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--experiment", default="default", help="experiment folder inside the runs root")
    p.add_argument("--run", default=None, help="run name (default <variant>-s<seed>)")
    p.add_argument("--run-dir", default=None, help="explicit run folder (overrides --experiment/--run)")
    p.add_argument("--runs-dir", default=None, help="runs root (default $RUNS_DIR or ./runs)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-to", default="", metavar="NAMES", help=LOG_TO_HELP)
    p.add_argument("--plan", action="store_true",
                   help="print parameters, micro-batch, FLOPs and peak memory per stage; do not train")
    p.add_argument("--time-steps", type=int, default=0, metavar="N",
                   help="time N optimizer steps and one evaluation on random tokens, print JSON; "
                   "do not train")
    return p


def time_steps(config: RunConfig, n: int, progress: bool = True) -> dict:
    """``--time-steps N``: seconds per optimizer step (median of `n`, after one warm-up step) and
    for one evaluation, on random tokens with the run's model, micro-batch and optimizer.

    With ``train.compile`` the step is compiled as in training (after the same gradient
    self-check), so the warm-up step holds the compilation: ``first_step_s`` reports it, and an
    estimate counts it once, as start-up, where the steps run at the compiled speed. With
    `progress`, the memory plan of an automatic micro-batch reports each stage on stderr."""
    device = resolve_device(config, Dist())
    if config.train.compile:
        require_compiled_gradients(config.model, device)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).to(device)
    step_model = torch.compile(model) if config.train.compile else model
    optimizer = build_optimizer(model, config, device)
    autocast = functools.partial(autocast_context, config, device)
    report = progress_lines() if progress else None
    micro = resolve_micro_batch(model, config, device, autocast=autocast, report=report)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.model.vocab_size, (config.train.batch_size, config.train.seq_len + 1),
                        generator=generator).to(device)
    batch = eval_micro_batches([(ids[:, :-1], ids[:, 1:])], micro, Dist())

    def step():
        return optimizer_step(model, step_model, optimizer, batch, config, device)

    first, *times = [_timed(step, device) for _ in range(n + 1)]
    eval_s = _timed(lambda: evaluate(model, batch * config.train.eval_batches, config, device), device)
    return {"step_s": sorted(times)[len(times) // 2], "first_step_s": first, "eval_s": eval_s,
            "micro_batch": micro, "device": str(device), "compile": config.train.compile}


def _timed(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def print_plan(config: RunConfig, progress: bool = True) -> None:
    """``--plan``: measure every stage on this machine's device at the micro-batch the run would
    use, on random tokens (no data is loaded, nothing is written); with `progress`, a line on
    stderr as each stage starts."""
    device = resolve_device(config, Dist())
    if config.train.compile:
        require_compiled_gradients(config.model, device)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).to(device)
    autocast = functools.partial(autocast_context, config, device)
    precision = precision_record(config.train.dtype, device)
    report = progress_lines() if progress else None
    print(format_plan(run_plan(model, config, device, autocast, precision, report)))


def config_from_args(args: argparse.Namespace, stored: dict | None = None) -> RunConfig:
    """Build the run config from CLI flags; with --resume and no shape flags, the stored one."""
    shaped = any(v is not None for v in (args.preset, args.config, args.ffn, args.variant, args.seed,
                                         args.steps, args.data)) or args.overrides
    if args.resume and stored is not None and not shaped:
        return RunConfig.from_dict(stored)
    overrides = []
    if args.variant:
        overrides += parse_variant(args.variant)[1]
    if args.ffn:
        overrides.append(f"model.ffn={args.ffn}")
    overrides += [f"train.seed={args.seed}"] * (args.seed is not None)
    overrides += [f"train.steps={args.steps}"] * (args.steps is not None)
    overrides += [f"data.source={args.data}"] * (args.data is not None)
    return apply_overrides(_base_config(args), overrides + args.overrides)


def _base_config(args: argparse.Namespace) -> RunConfig:
    """The preset, or the config file of --config (a run's config.json reproduces that run)."""
    if args.config is None:
        return preset(args.preset or "micro")
    if args.preset is not None:
        raise ValueError("give --preset or --config, not both")
    try:
        raw = json.loads(Path(args.config).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--config {args.config}: cannot be read as JSON: {error}") from None
    try:
        return RunConfig.from_dict(raw)
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"--config {args.config}: not a run config: {error}") from None


def resolve_run(args: argparse.Namespace, config: RunConfig | None) -> Run:
    """The run folder named by --run-dir, or by --experiment/--run inside the runs root."""
    if args.run_dir:
        return Run(args.run_dir)
    validate_name(args.experiment, "experiment name")
    name = args.run or f"{variant_label(config.model)}-s{config.train.seed}"
    return Run.at(runs_root(args.runs_dir), args.experiment, name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ignore_file_size_signal()
    handle_stop_signals()
    try:
        variants.load_plugins(args.ffn_module)
        trackers = parse_backends(args.log_to)
        config = config_from_args(args)
        run = resolve_run(args, config)
        if args.resume:
            config = config_from_args(args, run.read_config())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time_steps < 0:
        print(f"error: --time-steps must be >= 1, got {args.time_steps}", file=sys.stderr)
        return 2
    if args.plan or args.time_steps:
        try:
            if args.plan:
                print_plan(config, progress=not args.no_progress)
            else:
                print(json.dumps(time_steps(config, args.time_steps, progress=not args.no_progress)))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        summary = train(config, run, resume=args.resume, progress=not args.no_progress, trackers=trackers)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunPreempted as stop:
        print(f"{run.path}: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
    except Exception as error:  # the run's status holds the same message
        print(f"error: {_failure_message(error)}", file=sys.stderr)
        return 1
    if summary.get("final_val_loss") is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"{run.path}: final val loss {summary['final_val_loss']:.4f} after {summary['steps']} steps")
    return 0
