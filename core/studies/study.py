"""A study is a file: ``studies/<name>.toml`` (a built-in, found by name) or any path (a user's).

What it names, and what it runs (core.studies.plan):

- ``preset``, ``variants`` (labels, e.g. ``dual+ffn_share=none``), ``seeds``;
- ``steps`` per run, or ``tokens_per_param`` (steps from the baseline's non-embedding parameters
  at each point of the axis, so every point is equally trained), or neither (the preset's);
- ``lrs``: the learning-rate grid tried at every point (absent: the preset's lr);
- ``shared_lr`` (one of ``lrs``): every variant is also compared at this one lr;
- ``data`` (a data source) and ``overrides`` (``key=value`` settings of every run);
- ``[select]`` with ``fraction``: each variant's best lr from a short sweep (the first seed,
  ``fraction`` of the steps) over ``lrs``, then every seed at it; without ``[select]`` every seed
  trains at every lr of the grid;
- ``[axis]``: an outer axis, either ``rungs = [{name = "d96-L3", set = ["key=value", ...]}, ...]``
  (model sizes, smallest first) or ``key = "model.ffn_hidden"`` with ``values = [...]``.

Every field is checked when the file is read; a bad one raises one ValueError naming the file and
the field, before anything is written.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from core import variants
from core.config import apply_overrides, parse_variant, preset
from core.jobs.launch import grid
from core.runs import validate_name
from core.studies.fields import Fields

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"  # the built-ins
TOP_KEYS = {"description", "preset", "variants", "seeds", "steps", "tokens_per_param", "lrs", "shared_lr",
            "data", "overrides", "select", "axis"}


@dataclass(frozen=True)
class Point:
    """One point of a study's axis: its name in experiment names ("" without an axis) and settings."""

    name: str
    overrides: tuple[str, ...] = ()

    def settings(self, ffn: str) -> list[str]:
        """The point's settings that apply to variant `ffn`: an axis over one variant's option (e.g.
        dual's ffn_threshold) leaves the variants without that option (the baseline) unchanged."""
        return [setting for setting in self.overrides if _applies(setting, ffn)]


@dataclass(frozen=True)
class Study:
    """A study read from its file; see the module docstring for what each field means."""

    name: str  # the file's stem: prefix of every experiment name
    path: Path
    text: str  # the file as read (recorded in the study's manifest)
    preset: str
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]  # empty: the preset's lr, no lr in experiment names
    steps: int | None = None
    tokens_per_param: float | None = None
    shared_lr: float | None = None
    fraction: float | None = None  # the short sweep's share of the steps; None: no selection
    axis: str = ""  # "", "rungs" or a config key
    points: tuple[Point, ...] = (Point(""),)
    data: str | None = None
    overrides: tuple[str, ...] = ()
    description: str = ""

    @property
    def selects(self) -> bool:
        """Whether each variant's lr is selected by a short sweep."""
        return self.fraction is not None


def _applies(setting: str, ffn: str) -> bool:
    """Whether `setting` (key=value) is for every variant, or an FFN option that `ffn` has."""
    section, _, name = setting.partition("=")[0].rpartition(".")
    if section not in ("", "model", "ffn_options"):
        return True
    owners = [v for v in variants.names() if variants.spec(v).option(name)]
    return not owners or ffn in owners


def builtin_names() -> list[str]:
    """Names of the built-in studies (studies/*.toml)."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))


def study_path(name_or_path: str | Path) -> Path:
    """The file of a built-in study `name`, or `name_or_path` itself when it names a file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        return Path(text)
    validate_name(text, "study name")
    path = STUDIES_DIR / f"{text}.toml"
    if not path.is_file():
        raise ValueError(f"unknown study {text!r}; choose one of {', '.join(builtin_names())} or give a "
                         "path to a .toml file")
    return path


def load_study(name_or_path: str | Path) -> Study:
    """The study of a built-in name or a file path, every field checked (ValueError otherwise)."""
    path = study_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the study file: {error}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not a valid TOML file: {error}") from None
    return parse_study(raw, path, text)


def parse_study(raw: dict, path: Path, text: str = "") -> Study:
    """A Study from a parsed TOML table; `path`'s stem names it. ValueError on any bad field."""
    fields = Fields(path, raw)
    try:
        name = validate_name(path.stem, "study name")
    except ValueError as error:
        raise ValueError(f"{path}: name: {error}") from None
    fields.check_keys(TOP_KEYS)
    preset_name = fields.get("preset", str)
    if preset_name is None:
        raise fields.fail("preset", "missing (e.g. preset = \"tiny\")")
    try:
        preset(preset_name)
    except ValueError as error:
        raise fields.fail("preset", str(error)) from None
    study = Study(
        name=name, path=path, text=text, preset=preset_name,
        variants=fields.items("variants", str, ("swiglu", "dual")),
        seeds=fields.items("seeds", int, (0, 1, 2)),
        lrs=tuple(fields.number("lrs", v) for v in fields.items("lrs", (int, float))),
        steps=_steps(fields), tokens_per_param=_tokens_per_param(fields),
        shared_lr=_shared_lr(fields), fraction=_fraction(fields),
        data=fields.get("data", str), overrides=fields.items("overrides", str),
        description=fields.get("description", str, ""), **_axis(fields))
    _check_grid(study, fields)
    return study


def _steps(fields: Fields) -> int | None:
    steps = fields.get("steps", int)
    if steps is not None and steps < 1:
        raise fields.fail("steps", f"expected a positive integer, got {steps}")
    if steps is not None and "tokens_per_param" in fields.table:
        raise fields.fail("steps", "give steps or tokens_per_param, not both")
    return steps


def _tokens_per_param(fields: Fields) -> float | None:
    value = fields.table.get("tokens_per_param")
    return None if value is None else fields.number("tokens_per_param", value)


def _shared_lr(fields: Fields) -> float | None:
    value = fields.table.get("shared_lr")
    if value is None:
        return None
    shared = fields.number("shared_lr", value)
    if shared not in fields.table.get("lrs", []):
        raise fields.fail("shared_lr", f"{shared:g} is not one of lrs")
    return shared


def _fraction(fields: Fields) -> float | None:
    table = fields.get("select", dict)
    if table is None:
        return None
    select = Fields(fields.path, table, "select.")
    select.check_keys({"fraction"})
    fraction = select.number("fraction", table.get("fraction", 1.0))
    if fraction > 1:
        raise select.fail("fraction", f"expected a fraction of the steps in (0, 1], got {fraction:g}")
    if not fields.table.get("lrs"):
        raise fields.fail("select", "selecting each variant's best lr needs an lr grid (lrs)")
    return fraction


def _axis(fields: Fields) -> dict:
    """The axis's kind and points (rungs, or a config key's values)."""
    table = fields.get("axis", dict)
    if table is None:
        return {}
    axis = Fields(fields.path, table, "axis.")
    axis.check_keys({"rungs", "key", "values"})
    if ("rungs" in table) == ("key" in table):
        raise fields.fail("axis", "give either rungs or key (with values)")
    if "rungs" in table:
        return {"axis": "rungs", "points": _rungs(axis)}
    return {"axis": axis.get("key", str), "points": _key_points(axis)}


def _rungs(axis: Fields) -> tuple[Point, ...]:
    points = []
    for i, rung in enumerate(axis.items("rungs", dict)):
        fields = Fields(axis.path, rung, f"axis.rungs[{i}].")
        fields.check_keys({"name", "set"})
        name = fields.get("name", str)
        try:
            validate_name(name, "rung name")
        except ValueError as error:
            raise fields.fail("name", str(error)) from None
        points.append(Point(name, fields.items("set", str, empty=True)))  # empty: the preset's shape
    names = [p.name for p in points]
    if len(set(names)) < len(names):
        raise axis.fail("rungs", "duplicate rung names")
    return tuple(points)


def _key_points(axis: Fields) -> tuple[Point, ...]:
    key = axis.get("key", str)
    if not key:
        raise axis.fail("key", "missing")
    if key.split(".")[-1] in ("lr", "steps", "seed"):
        raise axis.fail("key", f"{key} has its own field (lrs, steps, seeds)")
    values = axis.items("values", (str, int, float, bool))
    if "values" not in axis.table:
        raise axis.fail("values", "missing")
    points = []
    for value in values:
        name = f"{key.split('.')[-1]}={_shown(value)}"
        try:
            validate_name(name, "axis point name")
        except ValueError as error:
            raise axis.fail("values", str(error)) from None
        setting = _shown(value) if isinstance(value, bool) else value  # JSON's true/false
        points.append(Point(name, (f"{key}={setting}",)))
    return tuple(points)


def _shown(value: str | int | float | bool) -> str:
    """A value as it appears in an axis point's name: 0.001 for 1e-3, true for True."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_grid(study: Study, fields: Fields) -> None:
    """Apply every setting and build one cell of every variant at every point (at the first lr), so
    that a bad setting, data source or variant fails now, naming its field."""
    base = preset(study.preset)
    checks = [("data", [f"data.source={study.data}"] if study.data is not None else []),
              ("overrides", list(study.overrides))]
    checks += [(f"axis.rungs[{i}].set" if study.axis == "rungs" else "axis.values",
                point.settings(base.model.ffn)) for i, point in enumerate(study.points)]
    for field, settings in checks:
        try:
            apply_overrides(base, settings)
        except ValueError as error:
            raise fields.fail(field, str(error)) from None
    lr = [f"train.lr={study.lrs[0]}"] if study.lrs else []
    for variant in study.variants:
        for point in study.points:
            try:
                grid(study.preset, [variant], [study.seeds[0]],
                     [*study.overrides, *point.settings(parse_variant(variant)[0]), *lr],
                     study.steps, study.data)
            except ValueError as error:
                raise fields.fail("variants", f"{variant!r}: {error}") from None
