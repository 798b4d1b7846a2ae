"""Atlas tables written as CSV or parquet, and read back with token texts kept as text."""

from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer

from core.analysis.atlas.compute import FORMATS, Atlas
from core.analysis.atlas.tables import compare_table, token_table, unit_table
from core.fsutil import atomic_write_bytes

TEXT_COLUMNS = ("token", "run")  # plus every "*_context": strings when read back


def check_out(path: "str | Path") -> Path:
    """The export path, checked before any work: .csv, or .parquet when pyarrow is installed."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {str(path)!r}: give a .csv or .parquet file")
    if path.suffix.lower() == ".parquet" and not _has_pyarrow():
        raise ValueError("--out .parquet needs pyarrow (pip install pyarrow); .csv works without it")
    if not path.parent.is_dir():
        raise ValueError(f"--out {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def units_path(path: Path) -> Path:
    """Where the unit table goes beside the token table: FILE.units.csv for FILE.csv."""
    return path.with_name(f"{path.stem}.units{path.suffix}")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV or parquet (by suffix), atomically."""
    if path.suffix.lower() == ".parquet":
        data = frame.to_parquet(None, index=False)
    else:
        data = frame.to_csv(index=False).encode()
    atomic_write_bytes(path, data)


def read_table(path: "str | Path") -> pd.DataFrame:
    """A table written by :func:`write_table`, read back with text columns as strings (a token
    "nan" or "NULL" stays text) and empty numeric cells as NaN."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    header = pd.read_csv(path, nrows=0).columns
    text = [c for c in header if c in TEXT_COLUMNS or c.endswith("_context")]
    frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in header if c not in text},
                        dtype={c: str for c in text})
    return frame


def export_atlases(atlases: list[Atlas], tokenizer: Tokenizer | None, path: "str | Path") -> list[Path]:
    """Write the token table (joined when two atlases) to `path` and the unit tables (a ``run``
    column when two) to :func:`units_path`; return the paths written."""
    path = check_out(path)
    tables = [token_table(a, tokenizer) for a in atlases]
    tokens = tables[0] if len(tables) == 1 else compare_table(*tables)
    units = [(a, unit_table(a, tokenizer)) for a in atlases]
    if len(atlases) > 1:  # units of two runs are not aligned: stacked, each row naming its run
        units = [(a, t.assign(run=a.meta.get("run", ""))) for a, t in units if t is not None]
    units = [t for _, t in units if t is not None]
    write_table(tokens, path)
    written = [path]
    if units:
        write_table(pd.concat(units, ignore_index=True), units_path(path))
        written.append(units_path(path))
    return written
