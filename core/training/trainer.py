"""Training loop: ``python -m core.train`` on CPU, one GPU, or many under ``torchrun``
(its command line: core/training/cli.py; its signals: core/training/signals.py).

AdamW (decay on matrices only), warmup + cosine, grad clipping, fixed-set evaluation,
atomic checkpoints and exact resume. Rank 0 alone writes the run directory.
"""

import errno
import math
import os
import platform
import resource
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from core.config import RunConfig, variant_label
from core.health import check as health_check
from core.jobs import launch
from core.lifecycle import check_transition
from core.metrics import AUX_LOSS, ELAPSED, GRAD_NORM, LR, PEAK_MEM, STEP, TOK_S, TOKENS, TRAIN_LOSS, VAL_LOSS
from core.model import CausalLM, build_model, load_weights_state, parameter_counts, weights_state
from core.runs import Run
from core.trackers import Mirror, RunInfo, parse_backends
from core.training.compile_check import require_compiled_gradients
from core.training.data import Batches, check_data, load_tokens, val_batches
from core.training.diagnostics import RoutingProbe, interference_probe, knockout_losses
from core.training.plan import PROBE_ROWS, micro_batch_candidates, progress_lines, resolve_micro_batch
from core.training.precision import precision_record, resolve_dtype
from core.training.signals import PREEMPT, RunPreempted


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Dist:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(config: RunConfig, world: Dist) -> torch.device:
    """`auto` picks CUDA when present (one GPU per local rank), else CPU."""
    name = config.train.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world.world_size > 1:
        name = f"cuda:{world.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA device is available")
    return torch.device(name)


def autocast_context(config: RunConfig, device: torch.device):
    """bf16 autocast where the run trains in bf16 (``train.dtype`` resolved by
    core.training.precision: asked, or ``auto`` on CUDA and on CPUs with native bf16 products);
    none otherwise (fp32: a CPU without native bf16 emulates its products, several times
    slower than fp32)."""
    if resolve_dtype(config.train.dtype, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def lr_at(step: int, config: RunConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay."""
    train = config.train
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    span = max(1, train.steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    floor = train.lr * train.min_lr_ratio
    return floor + (train.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def fused_optimizer(device: torch.device) -> bool:
    """Fused AdamW kernels on CUDA; foreach elsewhere (tests pin fused against it on CPU)."""
    return device.type == "cuda"


def build_optimizer(model: CausalLM, config: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (theta, alphas, norms and biases are exempt)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.train.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    extra = {"fused": True} if fused_optimizer(device) else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(config.train.beta1, config.train.beta2),
                             **extra)


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: max allocated; CPU: the process's max resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def eval_micro_batches(batches: list, micro_batch: int, world: "Dist") -> list:
    """This rank's share of the fixed val set in micro-batches: every val batch's rows split
    across ranks (as the training batch is), then into micro-batches."""
    out = []
    for x, y in batches:
        x, y = x.tensor_split(world.world_size)[world.rank], y.tensor_split(world.world_size)[world.rank]
        if not len(x):
            raise ValueError(f"the val set has batches of {len(y)} sequences, fewer than the "
                             f"{world.world_size} ranks; raise data.val_fraction or data.max_bytes")
        out += list(zip(x.split(micro_batch), y.split(micro_batch)))
    return out


@torch.no_grad()
def evaluate(model: CausalLM, batches: list, config: RunConfig, device: torch.device,
             world: "Dist | None" = None) -> dict:
    """Mean val loss per target token over `batches` (this rank's micro-batches, see
    :func:`eval_micro_batches`), pooled over ranks, plus per-layer routing/threshold/sparsity
    metrics (dual). The loss is summed chunk by chunk: no logits, no gradient work."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, target count
    with RoutingProbe(model) as probe:  # routing/threshold/sparsity/alpha metrics of the same pass
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast_context(config, device):
                out = model(x, y, return_logits=False)
            targets = (y != -100).sum().double()
            totals += torch.stack([(out.loss - out.aux_loss).double() * targets, targets])
        if world is not None and world.world_size > 1:
            dist.all_reduce(totals)
            probe.all_reduce(dist.all_reduce)
    model.train()
    return {VAL_LOSS: (totals[0] / totals[1].clamp(min=1)).item(), **probe.metrics()}


def optimizer_step(model: CausalLM, step_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   micro_batches: list, config: RunConfig, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step over `micro_batches` (gradients accumulated; under DDP synced on the last
    micro-batch only): what training and ``--time-steps`` both run. Returns the mean loss, the mean
    aux loss and the gradient norm before clipping, on device."""
    accum = len(micro_batches)
    loss_sum = torch.zeros((), device=device)
    aux_sum = torch.zeros((), device=device)
    no_sync = getattr(step_model, "no_sync", nullcontext)
    for i, (x, y) in enumerate(micro_batches):
        with (nullcontext() if i == accum - 1 else no_sync()), autocast_context(config, device):
            out = step_model(x, y, return_logits=False)
            (out.loss / accum).backward()
        loss_sum += out.loss.detach().float() / accum
        aux_sum += out.aux_loss.detach().float() / accum
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip or float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, aux_sum, grad_norm


class Trainer:
    """One training run: model, optimizer, data and the run directory it reports to."""

    def __init__(self, config: RunConfig, run: Run | None, world: Dist, progress: bool = True):
        self.config, self.run, self.world, self.progress = config, run, world, progress
        self.device = resolve_device(config, world)
        if config.train.batch_size % world.world_size:
            raise ValueError(f"batch_size ({config.train.batch_size}) must be divisible by the "
                             f"{world.world_size} ranks")
        check_data(config.data)  # seconds, before the minutes of measuring memory below
        if config.train.compile:  # before any data work: a broken compiler fails fast
            require_compiled_gradients(config.model, self.device)
        torch.manual_seed(config.train.seed)
        self.model = build_model(config.model).to(self.device)
        if run is not None:  # like every check that needs no compute: before the memory plan
            check_disk(run, parameter_counts(self.model)["total"])
        self.micro_batch = self._micro_batch(config.train.batch_size // world.world_size)
        self.grad_accum = config.train.batch_size // world.world_size // self.micro_batch
        self.tokens_data = self._load_tokens(progress)
        self.batches = Batches(self.tokens_data.train, config.train.batch_size, config.train.seq_len,
                               config.train.seed)
        self.val = val_batches(self.tokens_data.val, config.train.batch_size, config.train.seq_len,
                               config.train.eval_batches)
        self.val_share = eval_micro_batches(self.val, self.micro_batch, world)
        self.optimizer = build_optimizer(self.model, config, self.device)
        self.step, self.tokens, self.elapsed = 0, 0, 0.0
        self.last_finite_loss: float | None = None
        self.mirror: Mirror | None = None  # rank 0's copy of the metric lines to trackers
        self.step_model = self._wrap_model()

    def _micro_batch(self, per_rank: int) -> int:
        """The configured micro-batch, or (grad_accum=0) the largest that fits every rank."""
        ranks = self.world.world_size
        report = progress_lines() if self.progress and self.world.main else None
        micro = resolve_micro_batch(self.model, self.config, self.device, ranks, self._autocast, report)
        if self.config.train.grad_accum == 0 and ranks > 1:  # ranks accumulate alike: the smallest
            chosen = torch.tensor(micro, device=self.device)
            dist.all_reduce(chosen, op=dist.ReduceOp.MIN)
            micro = max(m for m in micro_batch_candidates(per_rank) if m <= chosen.item())
        return micro

    def _load_tokens(self, progress: bool):
        """Rank 0 builds the token cache first; the other ranks then open it."""
        distributed = self.world.world_size > 1
        if distributed and not self.world.main:
            dist.barrier()
        data = load_tokens(self.config.data, self.config.model.vocab_size,
                           progress=progress and self.world.main)
        if distributed and self.world.main:
            dist.barrier()
        return data

    def _wrap_model(self) -> torch.nn.Module:
        model = self.model
        if self.config.train.compile:
            model = torch.compile(model)
        if self.world.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    # checkpoint state ---------------------------------------------------------------------------
    def trainer_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "tokens": self.tokens,
                "elapsed": self.elapsed, "torch_rng": torch.get_rng_state(),
                "last_finite_loss": self.last_finite_loss}

    def restore(self, weights: dict, state: dict) -> None:
        load_weights_state(self.model, {k: v.to(self.device) for k, v in weights.items()})
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.tokens, self.elapsed = state["step"], state["tokens"], state["elapsed"]
        self.last_finite_loss = state.get("last_finite_loss")

    def save_checkpoint(self) -> None:
        if self.world.main and self.run is not None:
            self.run.save_checkpoint(weights_state(self.model), self.trainer_state(), self.step)

    # one step ------------------------------------------------------------------------------------
    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step over the global batch; returns (loss, aux, grad norm) on device."""
        lr = lr_at(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.batches.get(self.step, self.world.rank, self.world.world_size)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        rows = [slice(i * self.micro_batch, (i + 1) * self.micro_batch) for i in range(self.grad_accum)]
        result = optimizer_step(self.model, self.step_model, self.optimizer, [(x[r], y[r]) for r in rows],
                                self.config, self.device)
        self.step += 1
        self.tokens += self.config.train.batch_size * self.config.train.seq_len
        return result

    def _global_mean(self, *values: torch.Tensor) -> list[float]:
        stacked = torch.stack([v.float() for v in values])
        if self.world.world_size > 1:
            dist.all_reduce(stacked)
            stacked /= self.world.world_size
        return stacked.tolist()

    # the loop ------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to `train.steps`, logging, evaluating and checkpointing; returns the summary."""
        cfg = self.config.train
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.progress and self.world.main),
                   desc=self.run.name if self.run else "train", unit="step", dynamic_ncols=True)
        window_start, window_tokens, tok_rates = time.perf_counter(), 0, []
        while self.step < cfg.steps:
            loss, aux, grad_norm = self.train_step()
            window_tokens += cfg.batch_size * cfg.seq_len
            bar.update(1)
            done = self.step == cfg.steps
            log_due = self.step % cfg.log_every == 0 or done
            checkpoint_due = self.step % cfg.checkpoint_every == 0 or done
            # A checkpoint step off the log cadence still checks loss and gradient, so NaN weights
            # never replace the last good checkpoint (the check is collective under DDP).
            if log_due or (checkpoint_due and not self._finite(loss, grad_norm)):
                loss_v, aux_v, norm_v = self._global_mean(loss, aux, grad_norm)
                now = time.perf_counter()
                rate = window_tokens / max(now - window_start, 1e-9)
                self.elapsed += now - window_start
                window_start, window_tokens = now, 0
                tok_rates.append(rate)
                record = self._train_record(loss_v, aux_v, norm_v, rate)
                if math.isfinite(loss_v) and (self.step % cfg.eval_every == 0 or done):
                    record.update(self._evaluate())
                    window_start = time.perf_counter()  # evaluation is not training throughput
                self._log(record)  # logged before the check: the curves show where it broke
                self._check_finite(record)
                bar.set_postfix(loss=f"{loss_v:.3f}", tok_s=f"{rate:,.0f}")
            if checkpoint_due:
                self.save_checkpoint()
                window_start = time.perf_counter()  # checkpoint time is not training throughput
            if not done and self._preempt_requested():
                if not checkpoint_due:
                    self.save_checkpoint()
                raise RunPreempted(f"preempted at step {self.step}: checkpointed; continue with --resume")
        bar.close()
        return self._summary(tok_rates)

    def _autocast(self):
        return autocast_context(self.config, self.device)

    def _preempt_requested(self) -> bool:
        """Whether any rank got SIGUSR1: every rank stops at the same step (one tiny all-reduce)."""
        if self.world.world_size == 1:
            return PREEMPT.is_set()
        flag = torch.tensor(float(PREEMPT.is_set()), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _evaluate(self) -> dict:
        """Val loss and routing metrics; on rank 0 also the pathway-interference probe."""
        record = evaluate(self.model, self.val_share, self.config, self.device, self.world)
        if self.config.train.diagnostics and self.world.main:
            x, y = self.val[0]
            rows = max(1, min(PROBE_ROWS, self.micro_batch, x.shape[0]))
            record.update(interference_probe(self.model, x[:rows], y[:rows], self.device, self._autocast))
        return record

    def _finite(self, *values: torch.Tensor) -> bool:
        return all(math.isfinite(v) for v in self._global_mean(*values))

    def _check_finite(self, record: dict) -> None:
        """Raise TrainingDiverged when the loss or the gradient norm is NaN/inf: a NaN gradient
        has already poisoned the weights. Remembers the last finite train loss."""
        if math.isfinite(record[TRAIN_LOSS]):
            self.last_finite_loss = record[TRAIN_LOSS]
        for key in (TRAIN_LOSS, VAL_LOSS, GRAD_NORM):
            value = record.get(key)
            if value is not None and not math.isfinite(value):
                raise TrainingDiverged(f"{key} became {value} at step {self.step}; last finite train "
                                       f"loss {self.last_finite_loss}")

    def _train_record(self, loss: float, aux: float, grad_norm: float, rate: float) -> dict:
        return {STEP: self.step, TOKENS: self.tokens, ELAPSED: round(self.elapsed, 3),
                LR: lr_at(self.step - 1, self.config), TRAIN_LOSS: loss - aux, AUX_LOSS: aux,
                GRAD_NORM: grad_norm, TOK_S: rate, PEAK_MEM: peak_memory_gb(self.device)}

    def _log(self, record: dict) -> None:
        if self.world.main and self.run is not None:
            self.run.append_metrics(record)
            if self.mirror is not None:
                self.mirror.log(record)
            health = {"health": self._health()} if VAL_LOSS in record else {}
            self.run.write_status("running", step=self.step, pid=os.getpid(), **health)

    def _health(self) -> list[dict]:
        """The alarms of every metric line logged so far (core.health), re-read at each evaluation
        so a resumed run is judged on its whole history."""
        records, _ = self.run.read_metrics(0)
        return [alarm.to_dict() for alarm in health_check(records)]

    def _summary(self, tok_rates: list[float]) -> dict:
        records, _ = self.run.read_metrics(0) if self.run else ([], 0)
        val = [r[VAL_LOSS] for r in records if VAL_LOSS in r]
        steady = tok_rates[1:] or tok_rates  # the first window includes warm-up
        knockout = {}
        if self.config.train.diagnostics and self.world.main:
            everything = eval_micro_batches(self.val, self.micro_batch, Dist())
            knockout = knockout_losses(self.model, everything, self.device, self._autocast)
        return {"final_val_loss": val[-1] if val else None, "steps": self.step, "tokens": self.tokens,
                **({"knockout": knockout} if knockout else {}),
                "health": [alarm.to_dict() for alarm in health_check(records)],
                "elapsed_s": self.elapsed, "tok_s": sum(steady) / max(1, len(steady)),
                "peak_mem_gb": peak_memory_gb(self.device),
                "params_total": parameter_counts(self.model)["total"],
                "variant": variant_label(self.config.model), "seed": self.config.train.seed,
                "world_size": self.world.world_size}


def run_record(config: RunConfig, device: torch.device | str, world_size: int = 1,
               micro_batch: int | None = None) -> dict:
    """What config.json holds (core.jobs.launch.run_record), with the running torch's version
    and the precision the run trains in on `device`."""
    precision = precision_record(config.train.dtype, device)
    return launch.run_record(config, str(device), world_size, micro_batch, torch.__version__, precision)


def _failure_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"disk full or file too large while writing ({error.strerror}): {error.filename or ''}"
    return f"{type(error).__name__}: {error}"


# Free disk a run needs before it starts: two checkpoints of weights (4 B per parameter) and AdamW's
# moments (8 B), the newest written beside the previous one before that is removed.
CHECKPOINT_BYTES_PER_PARAM = 2 * (4 + 8)


def check_disk(run: Run, params: int) -> None:
    """ValueError when the disk under `run` has less free space than two checkpoints of a model
    of `params` parameters need."""
    folder = next((p for p in (run.path, *run.path.parents) if p.exists()), None)
    if folder is None:
        return
    need = params * CHECKPOINT_BYTES_PER_PARAM
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ValueError(f"{folder} has {free / 1e9:.2f} GB free but the run's checkpoints need about "
                         f"{need / 1e9:.2f} GB; free some space or choose another --runs-dir")


def prepare_run(run: Run, config: RunConfig, resume: bool) -> bool:
    """Check `run` can take `config` (core.lifecycle's config check and transitions); return True
    when it resumes from a checkpoint (the lifecycle's resume rule)."""
    run.check_config(config)
    status = run.read_status().get("state")
    has_checkpoint = run.resumes()
    if run.read_config() is not None and has_checkpoint and not resume:
        raise ValueError(f"run folder {run.path} already has a checkpoint ({status}); pass --resume "
                         "to continue it, or choose another --run")
    if not resume:
        check_transition(status, "running")  # a completed run is never trained again
    return resume and has_checkpoint


def train(config: RunConfig, run: Run | None, resume: bool = False, progress: bool = True,
          trackers: tuple[str, ...] = ()) -> dict:
    """Train `config`, reporting to `run` (None: no files) and mirroring its metric lines to
    `trackers` (names of :data:`core.trackers.BACKENDS`); returns the summary dict."""
    trackers = parse_backends(trackers)  # a bad name fails before anything is written
    world = init_distributed(resolve_device(config, Dist()).type)
    try:
        summary = _train(config, run, world, resume, progress, trackers)
        if world.world_size > 1:
            # Rank 0 still runs the final probes, knock-outs and writes after the last collective:
            # a rank that tore its process group down meanwhile was seen to die of SIGABRT (gloo),
            # and torchrun then killed rank 0 mid-probe. Every rank leaves together.
            dist.barrier()
        return summary
    finally:
        if world.world_size > 1:
            dist.destroy_process_group()


def _train(config: RunConfig, run: Run | None, world: Dist, resume: bool, progress: bool,
           trackers: tuple[str, ...]) -> dict:
    resuming = prepare_run(run, config, resume) if run is not None else False
    if run is not None and resume and run.read_status().get("state") == "completed":
        return run.read_summary()
    trainer = Trainer(config, run, world, progress)  # data errors surface before any file is made
    if run is None:
        return trainer.fit()
    if not world.main:
        _restore_if(trainer, run, resuming)
        return trainer.fit()
    with run.lock():
        return _train_main(trainer, run, resuming, trackers)


def _restore_if(trainer: Trainer, run: Run, resuming: bool) -> None:
    if resuming:
        checkpoint = run.load_checkpoint()
        if checkpoint is not None:
            trainer.restore(*checkpoint)


def _train_main(trainer: Trainer, run: Run, resuming: bool, trackers: tuple[str, ...]) -> dict:
    record = run_record(trainer.config, trainer.device, trainer.world.world_size, trainer.micro_batch)
    run.write_config(record)
    run.save_tokenizer(trainer.tokens_data.tokenizer_path)
    _restore_if(trainer, run, resuming)
    run.truncate_metrics(trainer.step)
    info = RunInfo(run.experiment, run.name, record["variant"], run.path, record, resuming, trainer.step)
    trainer.mirror = Mirror(trackers, info)
    try:  # completed, failed or interrupted: the trackers get what was logged
        return _fit_and_record(trainer, run)
    finally:
        trainer.mirror.close()


def _fit_and_record(trainer: Trainer, run: Run) -> dict:
    """Fit, recording the outcome in the run's status (and the summary when it completes)."""
    try:  # a SIGINT during the first status write must still end as "cancelled"
        run.write_status("running", pid=os.getpid(), step=trainer.step, error=None, started=time.time(),
                         start_step=trainer.step)
        summary = trainer.fit()
    except KeyboardInterrupt:
        run.write_status("cancelled", step=trainer.step, error="interrupted")
        raise
    except RunPreempted:
        run.write_status("preempted", step=trainer.step, error=None)
        raise
    except BaseException as error:
        _record_failure(run, trainer, error)
        raise
    run.write_summary(summary)
    run.write_status("completed", step=trainer.step)
    return summary


def _record_failure(run: Run, trainer: Trainer, error: BaseException) -> None:
    fields = {"step": trainer.step, "error": _failure_message(error)}
    if isinstance(error, TrainingDiverged):
        fields["last_finite_loss"] = trainer.last_finite_loss
    try:
        run.write_status("failed", **fields)
    except OSError as status_error:  # the disk that failed the run may refuse this too
        print(f"error: could not record the failure in {run.file('status.json')}: "
              f"{_failure_message(status_error)}", file=sys.stderr)
