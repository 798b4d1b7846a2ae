"""The app's table of runs: one row per run, with the metrics read incrementally (a cursor per run)."""

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.metrics import TRAIN_LOSS, VAL_LOSS
from core.runs import Run


@dataclass
class Cursor:
    """What has been read of one run's metrics.jsonl so far."""

    started: float | None
    offset: int = 0
    step: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None


def eta_seconds(status: dict, state: str, step: int, steps: int | None) -> float | None:
    """Seconds a running run has left at its pace since it last (re)started; None otherwise."""
    started, first = status.get("started"), status.get("start_step") or 0
    if state != "running" or not steps or not started or step <= first:
        return None
    return (time.time() - started) / (step - first) * (steps - step)


class MetricCursors:
    """A cursor per run folder, so each poll reads only the metric lines logged since the last."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cursors: dict[Path, Cursor] = {}

    def read(self, run: Run, status: dict) -> Cursor:
        """Fold the lines logged since the last call into the run's cursor and return it."""
        with self._lock:
            cursor = self._cursors.get(run.path)
            # Each (re)start of train writes a new `started`; a resume may have rewritten metrics.
            if cursor is None or cursor.started != status.get("started"):
                cursor = self._cursors[run.path] = Cursor(status.get("started"))
            records, offset = run.read_metrics(cursor.offset)
            if offset < cursor.offset:  # the file shrank under us: read_metrics started over
                cursor = self._cursors[run.path] = Cursor(status.get("started"))
            cursor.offset = offset
            for record in records:
                cursor.step = record.get("step", cursor.step)
                cursor.train_loss = record.get(TRAIN_LOSS, cursor.train_loss)
                cursor.val_loss = record.get(VAL_LOSS, cursor.val_loss)
            return cursor


def row(run: Run, status: dict, state: str, cursor: Cursor, live: bool) -> dict:
    """The UI's row of `run` in its effective `state` (see JobManager.status for the keys)."""
    config = run.read_config() or {}
    steps = (config.get("train") or {}).get("steps")
    step = status.get("step") or cursor.step or 0
    progress = 1.0 if state == "completed" else min(1.0, step / steps) if steps else 0.0
    return {"experiment": run.experiment, "run": run.name, "variant": config.get("variant"),
            "seed": config.get("seed"), "state": state, "step": step, "steps": steps,
            "progress": progress, "eta_s": eta_seconds(status, state, step, steps),
            "live": live, "job": status.get("job_id"),
            "train_loss": cursor.train_loss, "val_loss": cursor.val_loss, "error": status.get("error"),
            "health": status.get("health") or []}
