"""Tables as the app shows them: numbers rounded for reading, full precision kept elsewhere.

Losses to 4 decimals, p-values to 3 significant digits, memory to 2 decimals, durations as
"3 min 20 s"; Table 1 cells as core.stats writes them for every Table 1. The CSV download and
the API return the unrounded numbers.
"""

import math

import pandas as pd

from core.analysis.stats import table1_cells
from core.health import EXPLANATIONS, badge

RUN_COLUMNS = ["run", "variant", "seed", "state", "job", "step", "steps", "progress", "eta", "train_loss",
               "val_loss", "health", "error"]


def duration(seconds) -> str:
    """'45 s', '3 min 20 s', '2 h 05 min'; '' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """The Launch tab's live table of runs."""
    frame = pd.DataFrame(rows, columns=[*RUN_COLUMNS, "eta_s"])
    frame["eta"] = [duration(v) for v in frame.pop("eta_s")]
    frame["progress"] = [f"{100 * v:.0f}%" if v is not None else "" for v in frame["progress"]]
    frame["health"] = [badge(alarms) if isinstance(alarms, list) else "" for alarms in frame["health"]]
    for column in ("train_loss", "val_loss"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").round(4)
    return frame


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Table 1 of the Results and Overview tabs: the cells the CLI, report and Hub card show."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return pd.DataFrame(table1_cells(frame))


def health_note(rows: list[dict]) -> str:
    """What each alarm in a Table 1's health column means ("" when no run raised one)."""
    cells = " ".join(str(row.get("health") or "") for row in rows)
    kinds = [kind for kind in EXPLANATIONS if kind in cells]
    return "\n".join(f"- **{kind}**: {EXPLANATIONS[kind]}" for kind in kinds)


RECOMPUTING = "*Recomputing the wall-time estimate for the grid above...*"


def estimate_text(estimate: dict, shown_plan: str | None) -> str:
    """The Launch tab's line on how long the grid will take here, shown only under the grid it was
    computed for: when `shown_plan` (the key of the grid listed above the line) is not the
    estimate's plan, the line says it is being recomputed; with no grid shown, it is empty."""
    if shown_plan is None:
        return ""
    if estimate.get("plan") != shown_plan:
        return RECOMPUTING
    if estimate["errors"]:
        return "**Cannot estimate the wall time:** " + "; ".join(estimate["errors"])
    if estimate["seconds"] is None and estimate.get("waiting"):
        return ("*The wall time will be estimated once the running runs finish (timing steps beside "
                "them would slow them down).*")
    if estimate["seconds"] is None:
        return (f"*Estimating the wall time of these {estimate['runs']} run(s) on this machine: timing a "
                f"few steps of each new run shape ({estimate['pending']} run(s) to go)...*")
    per_step = ", ".join(f"{label} {seconds:.3g} s" for label, seconds in estimate["step_s"].items())
    at_once = "one at a time" if estimate["concurrent"] == 1 else f"{estimate['concurrent']} at a time"
    return (f"**Estimated wall time on this machine: {duration(estimate['seconds'])}** for "
            f"{estimate['runs']} run(s), {at_once} (measured step: {per_step}; first tokenization of "
            "a new corpus not included)")


def _run_range(fewest: int, most: int) -> str:
    """'25' or '10-18' runs (a study with a shared lr trains more when the best lrs differ)."""
    return str(fewest) if most == fewest else f"{fewest}-{most}"


def progress_text(progress: dict) -> str:
    """A study's progress in one line: its phase, runs by state and the ETA of the whole study."""
    states = ("completed", "running", "queued", "failed", "waiting")
    counts = ", ".join(f"{progress[k]} {k}" for k in states if progress[k]) or "no runs yet"
    total = _run_range(progress["runs"], progress["runs_most"])
    eta = f"; about {duration(progress['eta_s'])} left" if progress.get("eta_s") else ""
    state = f" ({progress['state']})" if progress.get("state") else ""
    error = f"\n\n**Stopped:** {progress['error']}" if progress.get("error") else ""
    return f"**Phase:** {progress['phase']}{state}; {counts} of {total} runs{eta}{error}"


def study_estimate_text(estimate: dict) -> str:
    """A study's run count and its estimated wall time here, or that it is being measured."""
    runs = f"{_run_range(estimate['runs'], estimate['runs_most'])} runs."
    if estimate["errors"]:
        return f"{runs} **Cannot estimate the wall time:** " + "; ".join(estimate["errors"])
    if estimate["seconds"] is None:
        return f"{runs} *Estimating the wall time: timing a few steps of each run shape; preview again.*"
    return f"{runs} Estimated wall time on this machine: {duration(estimate['seconds'])}"


COMPARE_COLUMNS = ["colour", "x", "n", "mean", "std", "min", "max", "seeds", "runs"]


def compare_table(rows: list[dict], colour: str = "colour", x: str = "x") -> pd.DataFrame:
    """The Compare tab's numbers: one row per (colour, x), the columns named after the keys,
    statistics to 4 decimals, the seeds and runs each row collapses."""
    frame = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    for column in ("mean", "std", "min", "max"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").round(4)
    for column in ("seeds", "runs"):
        frame[column] = [", ".join(str(v) for v in values) for values in frame[column]]
    frame["x"] = [str(v) for v in frame["x"]]  # numbers and categories in one column
    return frame.rename(columns={"colour": colour, "x": x} if colour != x else {"x": x})
