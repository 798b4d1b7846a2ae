"""App settings from the environment: bind address, runs root, demo-mode caps, optional auth."""

import os
from dataclasses import dataclass

from core.jobs.executors import EXECUTORS, slurm_available
from ui.service import Limits

# Demo mode (a public Space): small presets, bounded runs and queue, one run at a time.
DEMO_LIMITS = Limits(presets=("micro", "tiny"), max_steps=300, max_seeds=3, max_queue=6,
                     max_text_chars=2_000, locked=True)


@dataclass
class Settings:
    host: str  # bind address; 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise
    port: int  # GRADIO_SERVER_PORT, default 7860
    runs_dir: str | None  # RUNS_DIR, default ./runs
    limits: Limits  # launch/inspect caps (demo mode or none)
    max_concurrent: int | None  # runs training at once (None: 1 on CPU, one per GPU)
    auth: tuple[str, str] | None  # EXPLORER_AUTH=user:password enables basic auth
    demo: bool  # EXPLORER_DEMO=1
    executors: tuple[str, ...]  # where the Launch tab may run grids: local, and slurm where sbatch is
    executor: str  # the one it starts with: EXPLORER_EXECUTOR, else local


def _auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("EXPLORER_AUTH must look like user:password")
    return user, password


def app_settings(env: dict | None = None) -> Settings:
    """Read the settings from `env` (default os.environ)."""
    env = os.environ if env is None else env
    demo = env.get("EXPLORER_DEMO", "") not in ("", "0", "false", "False")
    try:
        port = int(env.get("GRADIO_SERVER_PORT", "7860"))
        concurrent = int(env["EXPLORER_MAX_CONCURRENT"]) if env.get("EXPLORER_MAX_CONCURRENT") else None
    except ValueError as error:
        raise SystemExit(f"bad number in the environment: {error}") from None
    executor = env.get("EXPLORER_EXECUTOR") or "local"
    if executor not in EXECUTORS:
        raise SystemExit(f"EXPLORER_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    executors = ("local",)
    if not demo and (executor == "slurm" or slurm_available()):  # a Space never submits to a cluster
        executors = EXECUTORS
    return Settings(host=env.get("GRADIO_SERVER_NAME", "127.0.0.1"), port=port,
                    runs_dir=env.get("RUNS_DIR") or None, limits=DEMO_LIMITS if demo else Limits(),
                    max_concurrent=1 if demo else concurrent, auth=_auth(env.get("EXPLORER_AUTH")),
                    demo=demo, executors=executors, executor=executor if executor in executors else "local")
