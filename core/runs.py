"""The on-disk run contract; the only module that reads or writes ``runs/``.

Layout: ``<root>/<experiment>/<run>/`` with ``config.json``, ``metrics.jsonl``, ``status.json``,
``summary.json``, ``tokenizer.json``, ``model.safetensors`` (latest weights) and ``checkpoint/``
(weights + trainer state of one step, replaced as a whole so the pair is never torn).
A running trainer holds an exclusive ``flock`` on ``run.lock``: that, not a pid, is liveness.
"""

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import lifecycle
from core.fsutil import atomic_write_bytes, fsync_dir
from core.lifecycle import STATES, Status  # noqa: F401 - STATES: re-exported for readers of runs

# One path component; "+" and "=" are allowed after the first character because run names
# carry variant labels such as "dual+ffn_share=none-s0".
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.+=-]{0,127}")


class RunLockedError(RuntimeError):
    """Another process is training this run."""


def runs_root(runs_dir: str | Path | None = None) -> Path:
    """The runs root: `runs_dir`, else ``$RUNS_DIR``, else ``./runs``."""
    return Path(runs_dir or os.environ.get("RUNS_DIR") or "runs").absolute()


def validate_name(name: str, what: str = "name") -> str:
    """Check that `name` is one safe path component (letters, digits, - _ ., no leading dot)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 60 else f"{str(name)[:60]}..."
        raise ValueError(f"invalid {what} {shown!r}: use 1-128 letters, digits, '-', '_', '.', "
                         "'+' or '=', starting with a letter, digit, '-' or '_'")
    return name


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_synced(path: Path, data: bytes | memoryview) -> None:
    """Write a new file and fsync it (the caller makes it visible atomically)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Run:
    """One run directory and every read/write on it."""

    def __init__(self, path: str | Path):
        self.path = Path(path).absolute()

    @classmethod
    def at(cls, root: str | Path, experiment: str, name: str) -> "Run":
        """The run `name` of `experiment` under `root`; names are validated path components."""
        validate_name(experiment, "experiment name")
        validate_name(name, "run name")
        return cls(Path(root) / experiment / name)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        return self.path.parent.name

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.file("config.json").exists()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # config / status / summary ---------------------------------------------------------------
    def read_config(self) -> dict | None:
        return _read_json(self.file("config.json"))

    def write_config(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file("config.json"), config)

    def read_status(self) -> Status:
        """status.json (fields: :class:`core.lifecycle.Status`); {} before the first write. A file
        written before schemas reads the same (every field is optional)."""
        status = _read_json(self.file("status.json"))
        return status if isinstance(status, dict) else {}

    def write_status(self, state: str, **fields: Any) -> Status:
        """Replace status.json atomically, keeping earlier fields that `fields` does not set.

        ValueError for an undeclared field or a transition the lifecycle does not allow (e.g. a
        completed run made running again)."""
        lifecycle.check_fields(fields)
        old = self.read_status()
        lifecycle.check_transition(old.get("state"), state)
        status = {**old, **fields, "state": state, "updated": time.time(), "schema": lifecycle.SCHEMA}
        atomic_write_json(self.file("status.json"), status)
        return status

    def resumes(self) -> bool:
        """Whether a launch of this run continues from a checkpoint (the one resume rule)."""
        return lifecycle.should_resume(self.checkpoint_dir() is not None)

    def check_config(self, config) -> None:
        """ValueError when this folder holds a config other than `config` (a RunConfig)."""
        lifecycle.check_config(self.read_config(), config, f"{self.experiment}/{self.name} ({self.path})")

    def record_job(self, executor: str, job_id: str | None) -> dict:
        """Note the scheduler job that runs this run, keeping its state (the job may already have
        started it); every later status write keeps the note."""
        return self.write_status(self.read_status().get("state", "queued"), executor=executor, job_id=job_id)

    def read_summary(self) -> dict:
        return _read_json(self.file("summary.json")) or {}

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.file("summary.json"), summary)

    # metrics -----------------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        """Append one JSON line and flush it, so a crash loses at most the line being written."""
        line = json.dumps(record, allow_nan=True, separators=(",", ":")) + "\n"
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(line)
            f.flush()

    def read_metrics(self, cursor: int = 0) -> tuple[list[dict], int]:
        """Complete metric lines from byte offset `cursor` on, and the cursor after them.

        A torn (unterminated or unparsable) last line is left for the next call; a cursor
        beyond the file's size (the file was rewritten by a resume) starts again from 0.
        """
        path = self.file("metrics.jsonl")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return [], 0
        if cursor > size:
            cursor = 0
        with open(path, "rb") as f:
            f.seek(cursor)
            data = f.read()
        records, consumed = _parse_lines(data)
        return records, cursor + consumed

    def metrics_inode(self) -> int | None:
        """Identity of metrics.jsonl: it changes when a resume rewrites the file."""
        try:
            return self.file("metrics.jsonl").stat().st_ino
        except FileNotFoundError:
            return None

    def truncate_metrics(self, last_step: int) -> None:
        """Atomically drop metric lines logged after `last_step` (used when resuming)."""
        records, _ = self.read_metrics(0)
        kept = [r for r in records if r.get("step", 0) <= last_step]
        text = "".join(json.dumps(r, allow_nan=True, separators=(",", ":")) + "\n" for r in kept)
        atomic_write_bytes(self.file("metrics.jsonl"), text.encode())

    # checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, weights: dict, trainer_state: dict, step: int) -> None:
        """Write weights + trainer state of `step` as one unit, then point model.safetensors at them.

        The files are staged in checkpoint.tmp/ and swapped in by renames, so a crash or a full
        disk leaves the previous checkpoint/ loadable; a failed write removes the staging folder.
        """
        import torch  # only the trainer writes checkpoints: listing runs needs no torch
        from safetensors.torch import save

        staging, final, old = (self.file(n) for n in ("checkpoint.tmp", "checkpoint", "checkpoint.old"))
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
            state = io.BytesIO()
            torch.save({**trainer_state, "step": step}, state)
            # Serialized in memory and written by Python: a full disk then raises OSError
            # (ENOSPC/EFBIG) naming the file, where the safetensors and torch writers raise
            # opaque errors. Costs one checkpoint's size of memory for the moment of the save.
            _write_synced(staging / "model.safetensors", save(weights, metadata={"step": str(step)}))
            _write_synced(staging / "trainer_state.pt", state.getbuffer())
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # frees the space the status write needs
            raise
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        staging.rename(final)
        fsync_dir(self.path)
        shutil.rmtree(old, ignore_errors=True)
        self._publish_weights(final / "model.safetensors")

    def _publish_weights(self, source: Path) -> None:
        tmp = self.file(".model.safetensors.tmp")
        tmp.unlink(missing_ok=True)
        try:
            try:
                os.link(source, tmp)  # a hard link: no second copy of the weights on disk
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, self.file("model.safetensors"))
        finally:
            tmp.unlink(missing_ok=True)

    def checkpoint_dir(self) -> Path | None:
        """The newest complete checkpoint folder (falls back to the previous one mid-swap)."""
        for name in ("checkpoint", "checkpoint.old"):
            folder = self.file(name)
            if (folder / "model.safetensors").exists() and (folder / "trainer_state.pt").exists():
                return folder
        return None

    def load_checkpoint(self, map_location: str = "cpu") -> tuple[dict, dict] | None:
        """(weights, trainer_state) of the newest checkpoint, or None; never unpickles code."""
        import torch
        from safetensors.torch import load_file

        folder = self.checkpoint_dir()
        if folder is None:
            return None
        weights = load_file(str(folder / "model.safetensors"), device=str(map_location))
        state = torch.load(folder / "trainer_state.pt", map_location=map_location, weights_only=True)
        return weights, state

    def load_weights(self, map_location: str = "cpu") -> dict:
        """The latest published weights (model.safetensors), as torch tensors."""
        from safetensors.torch import load_file

        path = self.file("model.safetensors")
        if not path.exists():
            raise FileNotFoundError(f"run {self.experiment}/{self.name} has no weights yet")
        return load_file(str(path), device=str(map_location))

    def slim(self, keep_weights: bool, weights_dtype: str | None = "bfloat16") -> None:
        """Make the run shareable: drop checkpoint/trainer state, logs and lock; optionally keep
        the final weights, cast to `weights_dtype` (a torch dtype name; bf16 halves the size)."""
        for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
            shutil.rmtree(self.file(name), ignore_errors=True)
        for name in ("train.log", "run.lock"):
            self.file(name).unlink(missing_ok=True)
        weights = self.file("model.safetensors")
        if not keep_weights:
            weights.unlink(missing_ok=True)
        elif weights.exists() and weights_dtype is not None:
            import torch
            from safetensors.torch import load_file, save

            dtype = getattr(torch, weights_dtype)
            tensors = {k: v.to(dtype) for k, v in load_file(str(weights)).items()}
            atomic_write_bytes(weights, save(tensors, metadata={"dtype": weights_dtype}))

    def open_log(self):
        """train.log opened for appending bytes (a child process's stdout and stderr)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return open(self.file("train.log"), "ab")  # noqa: SIM115 - the caller owns the handle

    def log_tail(self, limit: int = 4096) -> str:
        """The last non-empty line of train.log (where a child's error message ends up)."""
        try:
            with open(self.file("train.log"), "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")[:300]

    def save_tokenizer(self, source: Path) -> None:
        atomic_write_bytes(self.file("tokenizer.json"), Path(source).read_bytes())

    # liveness ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold the run's exclusive lock for the duration; RunLockedError if already held."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file("run.lock"), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(f"run {self.experiment}/{self.name} is being trained by "
                                     "another process") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_alive(self) -> bool:
        """True while some process holds the run's lock (i.e. is training it)."""
        path = self.file("run.lock")
        if not path.exists():
            return False
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def effective_state(self) -> str:
        """The status state, with a 'running' run whose lock is free reported as failed (orphaned)."""
        state = self.read_status().get("state", "queued")
        if state == "running" and not self.is_alive():
            return "failed (orphaned)"
        return state


def _parse_lines(data: bytes) -> tuple[list[dict], int]:
    """Parse complete JSON lines of `data`; return the records and the bytes consumed."""
    records, consumed = [], 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break  # torn tail: wait for the writer to finish it
        consumed += len(raw)
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a line torn by a crash and later appended to: skip, never fail
        if isinstance(record, dict):
            records.append(record)
    return records, consumed


def list_experiments(root: str | Path | None = None) -> list[str]:
    """Experiment names under the runs root, sorted."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def slurm_folder(root: str | Path | None, name: str) -> Path:
    """Where submitit keeps the job scripts, pickles and logs of grid or recipe `name`."""
    return runs_root(root) / ".slurm" / validate_name(name, "experiment name")


def list_runs(root: str | Path | None, experiment: str) -> list[Run]:
    """Runs of `experiment` that have a config, sorted by name."""
    folder = runs_root(root) / validate_name(experiment, "experiment name")
    if not folder.is_dir():
        return []
    runs = (Run(p) for p in sorted(folder.iterdir()) if p.is_dir() and _NAME.fullmatch(p.name))
    return [run for run in runs if run.exists()]


def experiment_stamp(root: str | Path | None, experiment: str) -> tuple:
    """What changes whenever a run of `experiment` is added, writes a status or summary, or logs a
    metric line: (run, file, mtime_ns, size) of each; a cache of derived views keys on it."""
    stamp = []
    for run in list_runs(root, experiment):
        for name in ("status.json", "summary.json", "metrics.jsonl"):
            try:
                info = run.file(name).stat()
            except FileNotFoundError:
                continue
            stamp.append((run.name, name, info.st_mtime_ns, info.st_size))
    return tuple(stamp)


HUB_RECORD = ".hub.json"  # in an experiment folder: the Hub dataset repo it was pushed to or pulled from


def hub_dataset_repo(root: str | Path | None, experiment: str) -> str | None:
    """The Hub dataset repo `experiment` was last pushed to or pulled from, if any."""
    record = _read_json(runs_root(root) / validate_name(experiment, "experiment name") / HUB_RECORD)
    repo = (record or {}).get("dataset_repo")
    return repo if isinstance(repo, str) else None


def record_hub_dataset_repo(experiment_dir: Path, repo: str) -> None:
    """Remember that the experiment in `experiment_dir` lives in the Hub dataset repo `repo`
    (model cards link to it)."""
    atomic_write_json(experiment_dir / HUB_RECORD, {"dataset_repo": repo})


def experiment_records(root: str | Path | None, experiment: str) -> list[dict]:
    """Every run of `experiment` as {name, variant, seed, status, config, metrics, summary}."""
    records = []
    for run in list_runs(root, experiment):
        config = run.read_config() or {}
        metrics, _ = run.read_metrics(0)
        records.append({"name": run.name, "variant": config.get("variant", "?"),
                        "seed": config.get("seed"), "status": run.effective_state(),
                        "config": config, "metrics": metrics, "summary": run.read_summary(),
                        "path": str(run.path)})
    return records


class ExperimentWatcher:
    """Incremental view of an experiment's metrics: each poll reads only lines added since the last.

    Live views keep one watcher per experiment; runs that appear later are picked up, and a run
    whose metrics file was rewritten (resume) is re-read from the start.
    """

    def __init__(self, root: str | Path | None, experiment: str):
        self.root, self.experiment = runs_root(root), validate_name(experiment, "experiment name")
        self._cursors: dict[str, tuple[int | None, int]] = {}  # run -> (file inode, byte offset)
        self._metrics: dict[str, list[dict]] = {}
        self._info: dict[str, dict] = {}

    def poll(self) -> dict[str, dict]:
        """{run name: {variant, seed, metrics}} with every metric line read so far."""
        for run in list_runs(self.root, self.experiment):
            if run.name not in self._info:
                config = run.read_config() or {}
                self._info[run.name] = {"variant": config.get("variant", "?"), "seed": config.get("seed")}
            inode, cursor = self._cursors.get(run.name, (None, 0))
            if run.metrics_inode() != inode:  # rewritten by a resume (atomic rename): start over
                self._metrics[run.name], cursor = [], 0
            new, after = run.read_metrics(cursor)
            self._metrics.setdefault(run.name, []).extend(new)
            self._cursors[run.name] = (run.metrics_inode(), after)
        return {name: {**info, "metrics": self._metrics.get(name, [])} for name, info in self._info.items()}

    def groups(self) -> dict[str, list[list[dict]]]:
        """Metrics grouped by variant (one list per seed), for seed bands."""
        out: dict[str, list[list[dict]]] = {}
        for info in self.poll().values():
            out.setdefault(info["variant"], []).append(info["metrics"])
        return out


# Installing a whole experiment (core.hub pull) ---------------------------------------------------
def _check_replaceable(target: Path, replace: bool) -> None:
    if not target.exists():
        return
    if not replace:
        raise FileExistsError(f"experiment {target.name!r} already exists in {target.parent}")
    busy = [p.name for p in target.iterdir() if p.is_dir() and Run(p).is_alive()]
    if busy:
        raise RunLockedError(f"experiment {target.name!r} has runs in training ({', '.join(busy)}); "
                             "cancel them before replacing it")


@contextlib.contextmanager
def staged_experiment(root: str | Path | None, experiment: str, replace: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder in the runs root; when the block ends normally it becomes
    ``<root>/<experiment>`` in one rename, so readers never see a half-written experiment.

    An existing experiment raises FileExistsError before the block runs (and again before the
    swap) unless `replace`; with `replace` it is swapped out and deleted, unless one of its runs
    is training (RunLockedError). If the block raises, the folder is deleted and nothing changes.
    """
    base = runs_root(root)
    target = base / validate_name(experiment, "experiment name")
    _check_replaceable(target, replace)
    base.mkdir(parents=True, exist_ok=True)
    # Hidden (leading dot): list_experiments never shows it; same filesystem, so rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{experiment}.incoming-", dir=base))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; the experiment should look like any other
        yield staging
        _check_replaceable(target, replace)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
        target.rename(old)  # onto the empty temp folder: rename replaces an empty directory
        try:
            staging.rename(target)
        except OSError:
            old.rename(target)  # put the old experiment back: nothing changed
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)
