"""What a study ran, on disk: ``<runs root>/.studies/<study>.json``.

Written (atomically) before each phase starts, so the app and the report find every run of a
study, the running ones included: the study file's text and sha256, and each phase's kind, axis
point, lr, experiment and run names (a full-length sweep and the final runs share experiments, so
one experiment can appear in two phases). A study edited later (a grid extended) keeps the phases it
ran before. Runs made before manifests (the shipped ``runs/cpu-*``) have none: readers fall back
to the experiment-naming rules (core.studies.plan), which find them too.
"""

import hashlib
import json
import time
import tomllib
from pathlib import Path

from core.runs import atomic_write_json, list_experiments, runs_root, validate_name
from core.studies.plan import Phase, experiment_name
from core.studies.study import Study, parse_study

FOLDER = ".studies"  # a leading dot: never an experiment name


def manifest_path(root: str | Path | None, name: str) -> Path:
    """Where study `name`'s manifest lives under the runs root."""
    return runs_root(root) / FOLDER / f"{validate_name(name, 'study name')}.json"


def read_manifest(root: str | Path | None, name: str) -> dict | None:
    """The manifest of study `name`, or None if it never ran here (or the file is unreadable)."""
    try:
        manifest = json.loads(manifest_path(root, name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def record_phase(root: str | Path | None, study: Study, phase: Phase) -> None:
    """Add `phase` (and the study file's current text) to the study's manifest."""
    manifest = read_manifest(root, study.name) or {}
    phases = manifest.get("phases", [])
    same = [p for p in phases if (p.get("kind"), p.get("experiment")) == (phase.kind, phase.experiment)]
    if not same:  # a phase run again (a resumed study) keeps its place and adds any new runs
        same = [{"kind": phase.kind, "point": phase.point, "lr": phase.lr, "experiment": phase.experiment,
                 "runs": []}]
        phases.append(same[0])
    same[0]["runs"] = list(dict.fromkeys([*same[0].get("runs", []), *(cell.name for cell in phase.cells)]))
    atomic_write_json(manifest_path(root, study.name), {
        **manifest, "study": study.name, "source": str(study.path), "text": study.text,
        "sha256": hashlib.sha256(study.text.encode()).hexdigest(), "phases": phases})


def record_study(root: str | Path | None, study: Study) -> None:
    """Write the study file's current text into its manifest (created when absent)."""
    manifest = read_manifest(root, study.name) or {"phases": []}
    atomic_write_json(manifest_path(root, study.name), {
        **manifest, "study": study.name, "source": str(study.path), "text": study.text,
        "sha256": hashlib.sha256(study.text.encode()).hexdigest()})


def write_driver(root: str | Path | None, name: str, **fields) -> dict:
    """Set fields of study `name`'s ``driver`` record (who advances it and its state: "running",
    "completed", "cancelled" or "failed" with an error), keeping the rest; returns the record."""
    manifest = read_manifest(root, name) or {"study": name, "phases": []}
    driver = {**manifest.get("driver", {}), **fields, "updated": time.time()}
    atomic_write_json(manifest_path(root, name), {**manifest, "driver": driver})
    return driver


def manifests(root: str | Path | None) -> dict[str, dict]:
    """Every readable study manifest under the runs root, by study name."""
    folder = runs_root(root) / FOLDER
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            manifest = read_manifest(root, path.stem)
        except ValueError:  # not a study's name: not ours
            continue
        if manifest is not None:
            found[path.stem] = manifest
    return found


def study_experiments(root: str | Path | None, study: Study) -> list[str]:
    """Every experiment of `study` under the runs root: the manifest's, then any on disk that the
    naming rules give (sweeps and finals at every point and lr), in order, each once."""
    manifest = read_manifest(root, study.name) or {}
    names = [p["experiment"] for p in manifest.get("phases", []) if isinstance(p.get("experiment"), str)]
    lrs = study.lrs or (None,)
    names += [experiment_name(study.name, point.name, lr, sweep) for point in study.points
              for sweep in (True, False) for lr in lrs if lr is not None or not sweep]
    present = set(list_experiments(root))
    return [name for name in dict.fromkeys(names) if name in present]


def manifest_study(manifest: dict) -> Study:
    """The study a manifest recorded (its file's text as it ran, so a moved or edited file does not
    change what a resumed study launches); ValueError when the record is unusable."""
    text, source = manifest.get("text"), manifest.get("source")
    if not isinstance(text, str) or not isinstance(source, str):
        raise ValueError(f"the manifest of study {manifest.get('study')!r} holds no study file text")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{source}: not a valid TOML file: {error}") from None
    return parse_study(raw, Path(source), text)
