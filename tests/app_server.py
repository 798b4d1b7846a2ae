"""Start `python app.py` as a real subprocess on a free port, for client and browser tests."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(runs_dir: Path, extra_env: dict | None = None, timeout: float = 90):
    """Yield the URL of an app serving `runs_dir`; stop it afterwards."""
    proc, url, log = start_app(runs_dir, extra_env, timeout)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def start_app(runs_dir: Path, extra_env: dict | None = None, timeout: float = 90):
    """Start an app serving `runs_dir` and wait until it answers: (process, URL, its log file).
    The caller stops the process and closes the log."""
    port = free_port()
    env = {**os.environ, "RUNS_DIR": str(runs_dir), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", **(extra_env or {})}
    log = open(Path(tempfile.gettempdir()) / f"explorer-app-{port}.log", "wb")  # noqa: SIM115 - the caller's
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, proc, timeout)
    except BaseException:
        proc.kill()
        log.close()
        raise
    return proc, url, log


def _wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"app did not answer on {url} within {timeout} s")
