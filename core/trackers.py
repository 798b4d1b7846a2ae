"""Mirror a run's metric lines to experiment trackers: Trackio, TensorBoard and W&B.

``metrics.jsonl`` stays the record every view reads; a mirror is a best-effort copy of it. The
training thread only puts each line on a queue; one background thread opens the backends, logs
and closes them. A backend that is not installed or raises is reported once on stderr and
dropped, so a tracker can neither stop nor slow a run. Each backend's package is imported only
when that backend is asked for.

Where each writes: TensorBoard event files in ``<run>/tensorboard/``; W&B in ``<run>/wandb/``
(or ``$WANDB_DIR``), offline unless credentials are configured; Trackio in its local store
(``$TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``).
"""

import contextlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BACKENDS = ("trackio", "tensorboard", "wandb")
LOG_TO_HELP = f"mirror the metrics to trackers, comma-separated: {', '.join(BACKENDS)}"
WANDB_HOST = "https://api.wandb.ai"
_STOP = object()  # queue sentinel: close the backends and end the thread
_FAILED = object()  # what a backend call that raised returns


def parse_backends(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Backend names from ``"trackio,tensorboard"`` (or a list of names), in order, without
    repeats; ValueError naming an unknown one."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = []
    for item in items:
        name = item.strip().lower() if isinstance(item, str) else item
        if name and name not in BACKENDS:
            raise ValueError(f"unknown tracker {str(name)[:40]!r}; choose from {', '.join(BACKENDS)}")
        if name and name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class RunInfo:
    """What a backend is told about the run it mirrors."""

    project: str  # the experiment
    name: str  # the run
    group: str  # the variant label: the seeds of one variant sit together
    folder: Path  # the run folder (TensorBoard and W&B write inside it)
    config: dict = field(default_factory=dict)  # config.json
    resume: bool = False  # continuing an interrupted run
    start_step: int = 0  # the step it continues from (lines after it were logged by the lost part)


class Backend(Protocol):
    """One tracker, opened for one run by its constructor."""

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TrackioBackend:
    """Trackio's local SQLite store (``$TRACKIO_DIR``); a resumed run continues its Trackio run."""

    package = "trackio"

    def __init__(self, info: RunInfo):
        import trackio

        # System-metric sampling is off: the mirror carries the trainer's lines, nothing else.
        self._run = trackio.init(project=info.project, name=info.name, group=info.group,
                                 config=info.config, resume="allow" if info.resume else "never",
                                 embed=False, auto_log_cpu=False, auto_log_gpu=False)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def close(self) -> None:
        self._run.finish()


class TensorBoardBackend:
    """Event files in ``<run>/tensorboard/``, flushed after every line so a live board follows."""

    package = "tensorboard"

    def __init__(self, info: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run hides what the lost part logged after its checkpoint, as metrics.jsonl does.
        purge = info.start_step + 1 if info.resume else None
        self._writer = SummaryWriter(log_dir=str(info.folder / "tensorboard"), purge_step=purge)
        # Indented lines render as a code block in TensorBoard's markdown text view.
        text = json.dumps(info.config, indent=2, sort_keys=True).replace("\n", "\n    ")
        self._writer.add_text("config", "    " + text)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def wandb_logged_in() -> bool:
    """True when W&B credentials are configured (WANDB_API_KEY, an identity token file or the
    netrc entry ``wandb login`` writes); nothing is sent to check them."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return read_netrc_auth(host=os.environ.get("WANDB_BASE_URL") or WANDB_HOST) is not None
    except Exception:  # an unreadable netrc or a moved helper: stay offline
        return False


def wandb_mode() -> str:
    """W&B's mode: WANDB_MODE when it asks for offline or disabled; online only when logged
    in, so a user without an account never waits on the network or a login prompt."""
    requested = os.environ.get("WANDB_MODE", "").strip().lower()
    if requested in ("offline", "dryrun", "disabled"):
        return "disabled" if requested == "disabled" else "offline"
    return "online" if wandb_logged_in() else "offline"


class WandbBackend:
    """A W&B run in ``<run>/wandb/`` (``$WANDB_DIR`` when set), offline unless logged in."""

    package = "wandb"

    def __init__(self, info: RunInfo):
        import wandb

        where = {} if os.environ.get("WANDB_DIR") else {"dir": str(info.folder)}
        # console="off": W&B must not wrap this process's stdout/stderr; no system-stats sampler.
        settings = wandb.Settings(console="off", x_disable_stats=True)
        self._run = wandb.init(project=info.project, name=info.name, group=info.group,
                               config=info.config, mode=wandb_mode(), settings=settings, **where)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def close(self) -> None:
        self._run.finish()


ADAPTERS: dict[str, Callable[[RunInfo], Backend]] = {
    "trackio": TrackioBackend, "tensorboard": TensorBoardBackend, "wandb": WandbBackend}


def metric_values(record: dict) -> dict[str, float]:
    """The numeric values of a metrics line, without its step (booleans are not metrics)."""
    return {key: value for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


class Mirror:
    """Copies metric lines to the chosen backends from a background thread.

    :meth:`log` never blocks and never raises for a backend's sake; :meth:`close` waits a bounded
    time for the backends to flush. With no backends it does nothing at all.
    """

    def __init__(self, backends: Iterable[str], info: RunInfo | None, queue_size: int = 10_000):
        self.backends = parse_backends(list(backends))
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._warned: set[str] = set()
        self._thread: threading.Thread | None = None
        if self.backends:
            self._thread = threading.Thread(target=self._work, args=(info,), name="metrics-mirror",
                                            daemon=True)
            self._thread.start()

    def log(self, record: dict) -> None:
        """Queue one metrics line (a dict with a ``step``) for every backend."""
        if self._thread is None:
            return
        try:
            self._queue.put_nowait((int(record["step"]), metric_values(record)))
        except queue.Full:  # the backends fell behind: drop lines rather than hold training
            self._warn("queue", "warning: metrics mirror: the trackers fell behind; dropping metric lines")

    def close(self, timeout: float = 30.0) -> None:
        """Flush and close every backend, waiting at most `timeout` seconds."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # a backend is stuck: the join below gives up too
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._warn("close", f"warning: metrics mirror: the trackers did not finish within {timeout:g} s; "
                       "some lines may be missing there")
        self._thread = None

    # the background thread ----------------------------------------------------------------------
    def _work(self, info: RunInfo) -> None:
        opened = {name: self._call(name, "open", ADAPTERS[name], info) for name in self.backends}
        live = {name: backend for name, backend in opened.items() if backend is not _FAILED}
        while (item := self._queue.get()) is not _STOP:
            step, values = item
            for name, backend in list(live.items()):
                if self._call(name, "log", backend.log, step, values) is _FAILED:
                    del live[name]
        for name, backend in live.items():
            self._call(name, "close", backend.close)

    def _call(self, name: str, stage: str, fn: Callable, *args: Any) -> Any:
        """`fn(*args)`, or _FAILED after warning once that backend `name` is disabled."""
        try:
            return fn(*args)
        except BaseException as error:  # even SystemExit: a tracker must never end this thread
            package = getattr(ADAPTERS.get(name), "package", name)
            if isinstance(error, ImportError):
                reason = f"could not import {package} ({error}); pip install {package}"
            else:
                reason = f"{stage} failed: {type(error).__name__}: {error}"
            self._warn(name, f"warning: metrics mirror to {name} disabled: {reason}")
            return _FAILED

    def _warn(self, key: str, message: str) -> None:
        """Print `message` on stderr, once per `key`."""
        if key not in self._warned:
            self._warned.add(key)
            print(message, file=sys.stderr, flush=True)
