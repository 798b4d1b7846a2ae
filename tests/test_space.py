"""The Space image: Dockerfile contents, the smoke script that replays it, the entrypoint, and
.dockerignore. No Docker engine runs here, so scripts/space_smoke.sh is the Dockerfile's check and
these tests keep it in step with the Dockerfile. The smoke script itself is slow (it builds a venv)
and runs only with SPACE_SMOKE=1.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
SMOKE = REPO / "scripts" / "space_smoke.sh"
ENTRYPOINT = REPO / "scripts" / "space_entrypoint.sh"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return out


def of(kind: str) -> list[str]:
    return [args for word, args in instructions() if word == kind]


def env_pairs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(text))


def smoke_calls(functions: str) -> list[tuple[str, list[str]]]:
    """(function, arguments) of every call of `functions` (a regex) in the smoke script, in order."""
    text = SMOKE.read_text().replace("\\\n", " ")
    calls = re.finditer(rf"^({functions}) (.+)$", text, re.M)
    return [(m[1], shlex.split(m[2], comments=True)) for m in calls]


def after_user(kind: str) -> list[str]:
    """Instructions of `kind` that run as the unprivileged user (what the smoke script replays)."""
    words = [w for w, _ in instructions()]
    start = words.index("USER")
    return [args for i, (word, args) in enumerate(instructions()) if word == kind and i > start]


# ---------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_a_cpu_space_as_uid_1000():
    assert of("FROM") == ["python:3.11-slim"]
    root_runs = [args for args in of("RUN") if args not in after_user("RUN")]
    assert root_runs == ["useradd --create-home --uid 1000 user"]  # the only step run as root
    assert of("USER") == ["user"] and of("EXPOSE") == ["7860"]
    assert json.loads(of("ENTRYPOINT")[0]) == ["scripts/space_entrypoint.sh"]
    assert json.loads(of("CMD")[0]) == ["python", "app.py"]


def test_dockerfile_installs_cpu_torch_before_the_requirements():
    runs = after_user("RUN")
    torch_line = next(i for i, r in enumerate(runs) if r.startswith("pip install torch=="))
    requirements_line = runs.index("pip install -r requirements.txt")
    assert torch_line < requirements_line and runs[torch_line].endswith(CPU_INDEX)
    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)[1]
    assert runs[torch_line] == f"pip install torch=={pinned} {CPU_INDEX}"  # the same version


def test_dockerfile_copies_requirements_alone_before_installing_them():
    """Code edits must not invalidate the cached dependency layers."""
    steps = instructions()
    copies = [i for i, (w, _) in enumerate(steps) if w == "COPY"]
    install = steps.index(("RUN", "pip install -r requirements.txt"))
    assert steps[copies[0]] == ("COPY", "--chown=user requirements.txt .") and copies[0] < install
    assert steps[copies[-1]] == ("COPY", "--chown=user . .") and copies[-1] > install


# ---------------------------------------------------------------------------- smoke script in step


def test_smoke_replays_every_run_line_in_order():
    replayed = [args[0] for _, args in smoke_calls("dockerfile_run|dockerfile_run_offline")]
    assert replayed == after_user("RUN")


def test_smoke_replaces_only_the_cpu_index_line():
    ((_, (dockerfile_line, local_line)),) = smoke_calls("dockerfile_run_offline")
    assert dockerfile_line.endswith(CPU_INDEX)
    assert local_line == dockerfile_line.removesuffix(CPU_INDEX).strip()


def test_smoke_starts_entrypoint_and_cmd():
    ((_, started),) = smoke_calls("dockerfile_start")
    assert started == json.loads(of("ENTRYPOINT")[0]) + json.loads(of("CMD")[0])


def test_smoke_exports_the_dockerfile_environment():
    exported: dict[str, str] = {}
    for _, call in smoke_calls("export"):
        exported.update(item.split("=", 1) for item in call)
    for args in of("ENV"):
        for key, value in env_pairs(args).items():
            if key == "HOME":
                continue  # the host's HOME keeps pip's configuration (the local package index)
            assert key in exported, key
            if "/home/user" not in value:  # paths map into the smoke script's temp folder
                assert exported[key] == value, key


# ---------------------------------------------------------------------------- entrypoint


@pytest.fixture
def image(tmp_path) -> Path:
    """A fake image folder: the entrypoint plus runs/demo with one run."""
    app = tmp_path / "app"
    (app / "scripts").mkdir(parents=True)
    shutil.copy2(ENTRYPOINT, app / "scripts" / "space_entrypoint.sh")
    (app / "runs" / "demo" / "swiglu-s0").mkdir(parents=True)
    (app / "runs" / "demo" / "swiglu-s0" / "config.json").write_text("{}")
    return app


def start(image: Path, **env: str) -> dict:
    """Run the entrypoint with a command that prints the environment and working folder it gets."""
    settings = ("RUNS_DIR", "EXPLORER_DEMO", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT")
    base = {k: v for k, v in os.environ.items() if k not in settings}
    printer = "import json, os; print(json.dumps({**os.environ, 'cwd': os.getcwd()}))"
    result = subprocess.run([str(image / "scripts" / "space_entrypoint.sh"), "python", "-c", printer],
                            env={**base, **env}, capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_entrypoint_uses_persistent_storage_and_seeds_the_demo(image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = start(image, DATA_DIR=str(data))
    assert env["RUNS_DIR"] == str(data / "runs") and env["cwd"] == str(image)
    assert env["EXPLORER_DEMO"] == "1" and env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert env["GRADIO_SERVER_PORT"] == "7860"
    assert (data / "runs" / "demo" / "swiglu-s0" / "config.json").read_text() == "{}"
    assert sorted(p.name for p in (data / "runs").iterdir()) == ["demo"]  # no seeding leftovers


def test_entrypoint_keeps_an_existing_demo_on_storage(image, tmp_path):
    demo = tmp_path / "data" / "runs" / "demo"
    (demo / "mine-s0").mkdir(parents=True)
    start(image, DATA_DIR=str(tmp_path / "data"))
    assert [p.name for p in demo.iterdir()] == ["mine-s0"]  # visitors' runs are never replaced


def test_entrypoint_falls_back_to_the_image_runs(image, tmp_path):
    env = start(image, DATA_DIR=str(tmp_path / "missing"))
    assert env["RUNS_DIR"] == str(image / "runs") and not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_entrypoint_skips_read_only_storage(image, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o555)
    assert start(image, DATA_DIR=str(data))["RUNS_DIR"] == str(image / "runs")


def test_entrypoint_respects_explicit_settings(image, tmp_path):
    env = start(image, DATA_DIR=str(tmp_path), RUNS_DIR="/somewhere", EXPLORER_DEMO="0")
    assert env["RUNS_DIR"] == "/somewhere" and env["EXPLORER_DEMO"] == "0"


# ---------------------------------------------------------------------------- .dockerignore


def context_builder() -> str:
    """The smoke script's build-context copier (its first Python heredoc)."""
    return re.search(r"<<'PY'\n(.*?)\nPY\n", SMOKE.read_text(), re.S)[1]


def test_build_context_holds_the_app_and_only_the_demo_runs(tmp_path):
    repo = tmp_path / "repo"
    for rel in ("app.py", "requirements.txt", "core/hub.py", "ui/service.py", "scripts/space_entrypoint.sh",
                "runs/demo/swiglu-s0/config.json", "runs/demo/swiglu-s0/model.safetensors",
                "runs/demo/swiglu-s0/train.log", "runs/demo/swiglu-s0/run.lock",
                "runs/demo/swiglu-s0/checkpoint/trainer_state.pt", "runs/demo/.demo.tmp/x",
                "runs/mine/dual-s0/config.json", "runs/other.json", ".git/HEAD", ".venv/bin/python",
                "core/__pycache__/hub.cpython-311.pyc", "tests/test_hub.py", "bench/results/x.json",
                ".whl/torch.whl"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(rel)
    shutil.copy2(REPO / ".dockerignore", repo / ".dockerignore")
    (repo / "scripts" / "space_entrypoint.sh").chmod(0o755)
    subprocess.run([sys.executable, "-", str(repo), str(tmp_path / "context")], input=context_builder(),
                   text=True, check=True, capture_output=True, timeout=60)
    copied = sorted(p.relative_to(tmp_path / "context").as_posix()
                    for p in (tmp_path / "context").rglob("*") if p.is_file())
    assert copied == [".dockerignore", "app.py", "core/hub.py", "requirements.txt",
                      "runs/demo/swiglu-s0/config.json", "runs/demo/swiglu-s0/model.safetensors",
                      "scripts/space_entrypoint.sh", "ui/service.py"]
    assert os.access(tmp_path / "context" / "scripts" / "space_entrypoint.sh", os.X_OK)


def test_entrypoint_is_executable():
    assert os.access(ENTRYPOINT, os.X_OK) and os.access(SMOKE, os.X_OK)


@pytest.mark.skipif(not os.environ.get("SPACE_SMOKE"), reason="slow (builds a venv): set SPACE_SMOKE=1")
def test_space_smoke_script():
    result = subprocess.run([str(SMOKE)], capture_output=True, text=True, timeout=1800)
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0 and "SMOKE OK" in result.stdout, output
