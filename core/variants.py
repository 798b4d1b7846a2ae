"""The FFN variant registry: what each variant is, as data (no torch).

A variant declares an :class:`FFNSpec` (its options, the statistics it reports, how its matrices
count) and registers its ``nn.Module`` with :func:`register_ffn`. A built-in variant keeps its spec
in ``core/ffns/<name>_spec.py`` (no torch: validating a config imports only that) and its module in
``core/ffns/<name>.py`` (imported when a model is built); a user's own variant is one file, spec
and module, loaded with :func:`load_plugin` (``--ffn-module``, ``EXPLORER_FFN_MODULES``).
Config validation, labels, the app's Launch form, inspection and diagnostics loop over this
registry; nothing outside a variant's file names a variant.
"""

import hashlib
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Built-in variants, each the module core/ffns/<name>.py. Order = order in listings and the app.
BUILTIN = ("swiglu", "geglu", "relu2", "dual", "moe")
BASELINE = "swiglu"  # the reference every variant is matched against and compared with
PLUGIN_ENV = "EXPLORER_FFN_MODULES"  # plugin files for the app and its jobs, os.pathsep-separated
FFN_MATCHES = ("width", "params", "active")  # how an FFN's hidden width h is chosen (ModelConfig)


def coerce(value: Any, kind: type, where: str) -> Any:
    """`value` as a `kind` (bool, int, float or str), for config fields and variant options alike:
    ints are accepted where floats are expected, whole floats where ints are; ValueError
    starting with `where` otherwise."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            value = math.inf
    if kind is float and isinstance(value, float):
        if not math.isfinite(value):  # NaN passes every "> 0" check, and inf is no setting
            raise ValueError(f"{where}: expected a finite number, got {str(value)[:40]}")
        return value
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r:.60}")
    return value


@dataclass(frozen=True)
class Option:
    """One config field of a variant; its type is the type of `default`."""

    name: str  # key in ModelConfig.ffn_options, in --set and in run labels (e.g. moe_experts)
    default: bool | int | float | str
    help: str  # one line, shown by --list and as the app's field info
    choices: tuple = ()  # allowed values (empty: any value of the type within the bounds)
    minimum: float | None = None  # smallest allowed value (numbers)
    exclusive: bool = False  # minimum itself is not allowed (a value must be > minimum)

    def check(self, value: Any, variant: str) -> Any:
        """`value` coerced to the option's type; ValueError naming the option when it is invalid."""
        where = f"{variant} option {self.name}"
        value = coerce(value, type(self.default), where)
        if self.choices and value not in self.choices:
            raise ValueError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r:.60}")
        if self.minimum is not None and (value < self.minimum or self.exclusive and value == self.minimum):
            relation = ">" if self.exclusive else ">="
            raise ValueError(f"{where} must be {relation} {self.minimum:g}, got {value!r}")
        return value


@dataclass(frozen=True)
class Stat:
    """A statistic the variant's forward reports with ``return_stats=True``."""

    name: str  # key in the forward's stats dict
    meaning: str  # one line: what it measures (legends, report glossary)
    per: str = "token"  # "token": a [B, T] tensor per layer; "layer": a scalar per layer
    low: float = 0.0  # range for colouring and axes
    high: float | None = 1.0  # None: the range of the values shown


@dataclass(frozen=True)
class FFNSpec:
    """Everything about a variant except its computation, as data."""

    name: str  # registry key, the value of ModelConfig.ffn
    summary: str  # one line for listings and the app
    options: tuple[Option, ...] = ()
    stats: tuple[Stat, ...] = ()
    # d x h matrices in the whole FFN, and those one token multiplies with (they differ for a
    # mixture of experts); they set h when ffn_match is params / active, and the FLOP count.
    matrices: Callable[[dict], float] = lambda options: 3
    active_matrices: Callable[[dict], float] | None = None
    # parameters besides the d x h matrices (routers, scalars), from d and the options
    extra_params: Callable[[int, dict], int] = lambda d, options: 0
    extra_flops: Callable[[int, dict], int] = lambda d, options: 0  # per token, forward
    check: Callable[[dict], None] | None = None  # cross-option validation; raises ValueError
    source: str = ""  # "" for built-ins; a plugin's file path
    sha256: str = ""  # a plugin file's hash, recorded in config.json

    def active(self, options: dict) -> float:
        return (self.active_matrices or self.matrices)(options)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def resolve(self, options: dict | None) -> dict[str, Any]:
        """All options of this variant, defaults filled in, each checked; unknown keys are errors."""
        options = dict(options or {})
        unknown = sorted(set(options) - {o.name for o in self.options})
        if unknown:
            known = ", ".join(o.name for o in self.options) or "none"
            raise ValueError(f"ffn={self.name} has no option {', '.join(unknown)} (its options: {known})")
        resolved = {o.name: o.check(options.get(o.name, o.default), self.name) for o in self.options}
        if self.check:
            self.check(resolved)
        return resolved

    def token_stats(self) -> tuple[Stat, ...]:
        return tuple(s for s in self.stats if s.per == "token")

    def layer_stats(self) -> tuple[Stat, ...]:
        return tuple(s for s in self.stats if s.per == "layer")


_SPECS: dict[str, FFNSpec] = {}
_MODULES: dict[str, type] = {}
_LOADING: list[tuple[str, str]] = []  # (path, sha256) of the plugin file being imported now


def register_ffn(declared: FFNSpec) -> Callable[[type], type]:
    """Class decorator: register an ``nn.Module`` class as the FFN variant `spec` describes.

    The class is built as ``cls(config: ModelConfig)`` and called as
    ``forward(x [B, T, d], return_stats=False) -> (y [B, T, d], aux_loss scalar, stats dict)``;
    see ``core/ffns/base.py`` for the optional hooks (initialisation, diagnostics, knock-outs).
    """
    path, sha256 = plugin_origin()
    if path and declared.name in BUILTIN:
        raise ValueError(f"{declared.name!r} is a built-in FFN variant; give yours another name")
    if path:
        declared = replace(declared, source=path, sha256=sha256)
    # A built-in's module registers the very spec object its spec file registered already.
    if declared.name in _SPECS and _SPECS[declared.name] is not declared:
        raise ValueError(f"an FFN variant named {declared.name!r} is already registered "
                         f"({_SPECS[declared.name].source or 'built in'})")

    def add(cls: type) -> type:
        _SPECS[declared.name] = declared
        _MODULES[declared.name] = cls
        cls.spec = declared
        return cls

    return add


def _import_builtin(name: str) -> None:
    """Register a built-in's spec from its torch-free spec file (its module comes later)."""
    _SPECS[name] = importlib.import_module(f"core.ffns.{name}_spec").SPEC


def names() -> tuple[str, ...]:
    """Every registered variant: the built-ins, then loaded plugins."""
    for name in BUILTIN:
        if name not in _SPECS:
            _import_builtin(name)
    return BUILTIN + tuple(n for n in _SPECS if n not in BUILTIN)


def spec(name: str) -> FFNSpec:
    """The spec of variant `name`; ValueError listing the variants when there is none."""
    if not isinstance(name, str):
        raise ValueError(f"ffn must be a variant name, got {name!r:.60}")
    if name in BUILTIN and name not in _SPECS:
        _import_builtin(name)
    if name not in _SPECS:
        hint = f"; a plugin variant needs --ffn-module PATH or {PLUGIN_ENV}"
        raise ValueError(f"unknown ffn {name!r:.60}; registered: {', '.join(names())}{hint}")
    return _SPECS[name]


def module_class(name: str) -> type:
    """The ``nn.Module`` class of variant `name` (a built-in's module is imported now)."""
    spec(name)
    if name not in _MODULES:
        importlib.import_module(f"core.ffns.{name}")  # registers the class with the spec
    return _MODULES[name]


def hidden_size(model: Any) -> int:
    """Hidden width h of a ModelConfig's FFN: explicit, SwiGLU's width, or matched to SwiGLU's
    total (``params``) or per-token (``active``) parameters of its d x h matrices."""
    if model.ffn_hidden:
        return model.ffn_hidden
    if model.ffn_match == "width":
        return model.intermediate_size
    variant = spec(model.ffn)
    if model.ffn_match == "params":
        count = variant.matrices(model.ffn_options)
    else:
        count = variant.active(model.ffn_options)
    return max(1, round(model.intermediate_size * 3 / count))


def parameter_count(model: Any) -> int:
    """Parameters of one FFN layer, from the spec's formula."""
    variant = spec(model.ffn)
    matrices = variant.matrices(model.ffn_options)
    return round(matrices * model.hidden_size * hidden_size(model)) + variant.extra_params(
        model.hidden_size, model.ffn_options)


def flops_per_token(model: Any) -> int:
    """Forward matmul FLOPs of one FFN layer per token (2 per multiply-add)."""
    variant = spec(model.ffn)
    dense = 2 * variant.active(model.ffn_options) * model.hidden_size * hidden_size(model)
    return round(dense) + variant.extra_flops(model.hidden_size, model.ffn_options)


# ---------------------------------------------------------------------------- plugins


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_plugin(path: str | Path) -> list[str]:
    """Import a user's FFN file (which registers its variants); return the names it added.

    Plugins run code: they are loaded only from an explicit flag or variable, never from a run
    folder or the Hub. Loading the same file twice is a no-op.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"FFN module {path} is not a .py file")
    module_name = f"ffn_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    if module_name in sys.modules:
        return [n for n, s in _SPECS.items() if s.source == str(path)]
    before = set(_SPECS)
    _LOADING.append((str(path), file_sha256(path)))
    try:
        _import_file(module_name, path)
        added = sorted(set(_SPECS) - before)
        if not added:
            raise ValueError(f"FFN module {path} registered no variant (decorate a class with "
                             "@register_ffn(FFNSpec(...)))")
    except Exception as error:
        # nothing half-loaded stays: neither the module nor a variant it registered before failing
        sys.modules.pop(module_name, None)
        for name in set(_SPECS) - before:
            del _SPECS[name], _MODULES[name]
        if isinstance(error, ValueError) and str(path) in str(error):
            raise
        raise ValueError(f"FFN module {path} failed to load: {type(error).__name__}: {error}") from error
    finally:
        _LOADING.pop()
    return added


def _import_file(module_name: str, path: Path) -> None:
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    loader.loader.exec_module(module)


def plugin_origin() -> tuple[str, str]:
    """(path, sha256) of the plugin file being loaded now, or ("", "") for a built-in."""
    return _LOADING[-1] if _LOADING else ("", "")


def load_plugins_from_env(environ: dict | None = None) -> list[str]:
    """Load every file named in $EXPLORER_FFN_MODULES (os.pathsep-separated)."""
    value = (os.environ if environ is None else environ).get(PLUGIN_ENV, "")
    added = []
    for item in (p for p in value.split(os.pathsep) if p.strip()):
        added += load_plugin(item.strip())
    return added


def load_plugins(paths: list[str]) -> list[str]:
    """Load $EXPLORER_FFN_MODULES, then each of `paths` (``--ffn-module``); the names added."""
    added = load_plugins_from_env()
    for path in paths:
        added += load_plugin(path)
    return added


def check_plugin_record(name: str, path: str, sha256: str) -> None:
    """Refuse to reopen a run of plugin variant `name` unless the same file is loaded."""
    known = _SPECS.get(name)
    if known is None or not known.source:
        raise ValueError(f"this run uses ffn={name!r} from {path}; load that file with --ffn-module "
                         f"{path} (or {PLUGIN_ENV}) to reopen it")
    if known.sha256 != sha256:
        raise ValueError(f"ffn={name!r} was trained with {path} (sha256 {sha256[:12]}), but the loaded "
                         f"file {known.source} has sha256 {known.sha256[:12]}: the module changed")


__all__ = ["BUILTIN", "BASELINE", "PLUGIN_ENV", "FFN_MATCHES", "Option", "Stat", "FFNSpec",
           "register_ffn", "names", "spec", "module_class", "hidden_size", "parameter_count",
           "flops_per_token", "load_plugin", "load_plugins", "load_plugins_from_env", "check_plugin_record",
           "plugin_origin", "file_sha256", "coerce"]
