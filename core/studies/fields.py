"""Checked reading of a study file's TOML tables (core.studies.study): every error is one
ValueError naming the file and the field, e.g. ``studies/mine.toml: axis.values: duplicate values 128``.
"""

import math
from pathlib import Path


class Fields:
    """Reads and checks the fields of one TOML table; each error names the file and the field."""

    def __init__(self, path: Path, table: dict, prefix: str = ""):
        self.path, self.table, self.prefix = path, table, prefix

    def fail(self, field: str, problem: str) -> ValueError:
        """The error of `field` (raise it): ``<file>: <table.>field: problem``."""
        return ValueError(f"{self.path}: {self.prefix}{field}: {problem}")

    def check_keys(self, allowed: set[str]) -> None:
        """An unknown key is an error (a typo would otherwise be silently ignored)."""
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def get(self, field: str, kind: type | tuple[type, ...], default=None):
        """The value of `field` if it is a `kind` (`default` when absent)."""
        value = self.table.get(field, default)
        if value is not default and not _is(value, kind):
            raise self.fail(field, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def number(self, field: str, value) -> float:
        """`value` as a float if it is a finite positive number."""
        if not _is(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise self.fail(field, f"expected a positive number, got {value!r}")
        return float(value)

    def items(self, field: str, kind: type | tuple[type, ...], default: tuple = (),
              empty: bool = False) -> tuple:
        """A non-empty (or with `empty`, any) list of distinct `kind` values; `default` when absent."""
        values = self.table.get(field)
        if values is None:
            return default
        if not isinstance(values, list) or not (values or empty):
            raise self.fail(field, f"expected a non-empty list, got {values!r}")
        for value in values:
            if not _is(value, kind):
                raise self.fail(field, f"expected a list of {_kind_name(kind)}, got {value!r}")
        duplicates = sorted({repr(v) for v in values if values.count(v) > 1})
        if duplicates:
            raise self.fail(field, f"duplicate values {', '.join(duplicates)}")
        return tuple(values)


def _is(value, kind: type | tuple[type, ...]) -> bool:
    """isinstance, but a TOML boolean is no number (bool subclasses int in Python)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "a table", list: "a list",
             bool: "a boolean"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
