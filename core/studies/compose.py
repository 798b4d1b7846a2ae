"""A study composed in a form (the app's Studies tab) becomes a study file: the same TOML that
``python -m core.sweep --study FILE`` runs, saved next to the studies' manifests under the runs
root. Every field is checked (by core.studies.study, on the very text that is saved) before
anything is written; a study larger than MAX_RUNS is refused."""

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from core.fsutil import atomic_write_bytes
from core.runs import runs_root, validate_name
from core.studies.manifest import FOLDER, read_manifest
from core.studies.progress import run_count
from core.studies.study import Study, builtin_names, parse_study

MAX_RUNS = 500  # a larger study is a cluster job: write its file and run core.sweep --study


@dataclass
class Form:
    """What the form asks for; see core.studies.study for each field's meaning."""

    name: str
    preset: str
    variants: list[str]
    seeds: list[int]
    steps: int | None = None
    lrs: list[float] = field(default_factory=list)
    select: bool = False  # each variant at its own best lr (needs lrs)
    fraction: float = 1.0  # the best-lr sweep's share of the steps
    axis_key: str = ""  # a config key, e.g. model.ffn_options.ffn_threshold ("" for none)
    axis_values: list[str] = field(default_factory=list)  # as typed: numbers, true/false or text
    description: str = ""


def study_text(form: Form) -> str:
    """The study file of `form` (TOML)."""
    lines = [f"description = {_string(form.description)}", f"preset = {_string(form.preset)}",
             f"variants = [{', '.join(_string(v) for v in form.variants)}]",
             f"seeds = [{', '.join(str(int(s)) for s in form.seeds)}]"]
    if form.steps is not None:
        lines.append(f"steps = {int(form.steps)}")
    if form.lrs:
        lines.append(f"lrs = [{', '.join(_number(lr) for lr in form.lrs)}]")
    if form.select:
        lines += ["", "[select]", f"fraction = {_number(form.fraction)}"]
    if form.axis_key:
        values = ", ".join(_value(v) for v in form.axis_values)
        lines += ["", "[axis]", f"key = {_string(form.axis_key)}", f"values = [{values}]"]
    return "\n".join(lines) + "\n"


def compose(form: Form, root: str | Path | None, max_runs: int = MAX_RUNS) -> Study:
    """The study of `form`, every field checked (one ValueError, nothing written)."""
    return from_text(form.name, study_text(form), root, max_runs)


def from_text(name: str, text: str, root: str | Path | None, max_runs: int = MAX_RUNS) -> Study:
    """The study of a study file's `text`, to be saved as `name` under the runs root, every field
    checked (one ValueError, nothing written): a built-in's name, or the name of another study that
    ran here, is refused, and so is a study of more than `max_runs` runs."""
    name = validate_name(str(name or "").strip(), "study name")
    if name in builtin_names():
        raise ValueError(f"study name {name!r} is a built-in study's; choose another name")
    try:
        raw = tomllib.loads(str(text))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"the study file is not valid TOML: {error}") from None
    study = parse_study(raw, runs_root(root) / FOLDER / f"{name}.toml", str(text))
    most = run_count(study)[1]
    if most > max_runs:
        raise ValueError(f"the study trains up to {most:,} runs; at most {max_runs:,} may be launched here "
                         "(write a study file and run it with python -m core.sweep --study FILE)")
    manifest = read_manifest(root, name)
    if manifest is not None and manifest.get("text") != study.text:
        raise ValueError(f"a different study named {name!r} already ran here; choose another name")
    return study


def save(study: Study) -> Path:
    """Write the study's file (atomically); returns its path."""
    atomic_write_bytes(study.path, study.text.encode("utf-8"))
    return study.path


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(text))


def _number(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return repr(value)


def _value(text: str) -> str:
    """A typed axis value as TOML: an integer, a number, true/false, else a string."""
    text = str(text).strip()
    if text in ("true", "false"):
        return text
    for kind in (int, float):
        try:
            return _number(kind(text)) if kind is float else str(kind(text))
        except ValueError:
            continue
    return _string(text)
