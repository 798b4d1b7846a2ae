#!/usr/bin/env bash
# Smoke test of the Space image without a Docker engine (slow: builds a venv, ~2-4 min).
#
#   scripts/space_smoke.sh            # KEEP=1 keeps the work folder; PYTHON=python3.11 by default
#
# 1. builds the image's context (the repo minus .dockerignore) in a temp folder;
# 2. replays the Dockerfile there: its ENV, then its RUN lines into a fresh venv. The one line that
#    cannot run offline (torch from PyTorch's CPU index) is replayed as `pip install torch==2.13.0`,
#    which the local index serves as the same CPU wheel. tests/test_space.py checks that every
#    dockerfile_* line below matches the Dockerfile;
# 3. starts ENTRYPOINT + CMD with a temp folder as /data (DATA_DIR) and checks that the page
#    serves, the demo was seeded into /data/runs and answers /results /curves /inspect through
#    gradio_client, launches beyond the demo caps are refused, and a failing
#    EXPLORER_HUB_EXPERIMENT pull only warns.
set -eEuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/space-smoke.XXXXXX")"
APP="$WORK/app"          # /home/user/app
DATA="$WORK/data"        # /data (persistent storage)
LOG="$WORK/app.log"
APP_PID=""
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1   # no network here; the Space has it

cleanup() {
  if [ -n "$APP_PID" ] && kill -0 "$APP_PID" 2>/dev/null; then
    kill "$APP_PID" 2>/dev/null || true
    wait "$APP_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo "SMOKE FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
step() { printf '\n== %s\n' "$*"; }
fail() { echo "SMOKE FAILED: $*" >&2; [ -f "$LOG" ] && tail -n 40 "$LOG" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (the image runs Python 3.11)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || echo "warning: $PYTHON is not Python 3.11, the image's version"

step "build context: $REPO minus .dockerignore -> $APP"
"$PYTHON" - "$REPO" "$APP" <<'PY'
"""Copy the Docker build context: Docker's rules (last matching line wins, a line matching a
parent folder covers what is inside, '!' re-includes, '*' stays within one path component)."""
import os
import re
import shutil
import sys
from pathlib import Path

repo, dest = Path(sys.argv[1]), Path(sys.argv[2])


def regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] in "*?":
            out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


rules = []
for line in (repo / ".dockerignore").read_text().splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        negate = line.startswith("!")
        text = line.lstrip("!").strip("/")
        rules.append((negate, text, regex(text)))


def excluded(rel: str) -> bool:
    parts, result = rel.split("/"), False
    for negate, _, rx in rules:
        if any(rx.fullmatch("/".join(parts[:k])) for k in range(1, len(parts) + 1)):
            result = not negate
    return result


count = size = 0
for top, dirs, files in os.walk(repo):
    rel_top = Path(top).relative_to(repo).as_posix()
    rel = (lambda name: name if rel_top == "." else f"{rel_top}/{name}")
    # prune excluded folders that no '!' line could re-include
    dirs[:] = [d for d in dirs if not excluded(rel(d))
               or any(neg and text.startswith(rel(d) + "/") for neg, text, _ in rules)]
    for name in files:
        if not excluded(rel(name)):
            target = dest / rel(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(top) / name, target, follow_symlinks=False)
            count, size = count + 1, size + (Path(top) / name).stat().st_size
print(f"{count} files, {size / 1e6:.1f} MB in the context")
PY
[ -x "$APP/scripts/space_entrypoint.sh" ] || fail "entrypoint missing or not executable in the context"
[ -f "$APP/runs/demo/swiglu-s0/config.json" ] || ls "$APP"/runs/*/*/config.json >/dev/null 2>&1 \
  || fail "the context holds no runs/demo experiment"

step "replay the Dockerfile"
# `python` is the base interpreter until the venv exists, as in python:3.11-slim.
mkdir -p "$WORK/base-bin" && ln -s "$(command -v "$PYTHON")" "$WORK/base-bin/python"
# ENV (paths under /home/user map into $WORK)
export VIRTUAL_ENV="$WORK/venv"
export PATH="$VIRTUAL_ENV/bin:$WORK/base-bin:$PATH"
export PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1

BUILD_LOG="$WORK/build.log"
replay() {  # run $1 in WORKDIR; its output goes to build.log, the last line is shown
  (cd "$APP" && eval "$1") >>"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; fail "RUN $1"; }
  local last
  last="$(grep -v '^\s*$' "$BUILD_LOG" | tail -n 1 | cut -c1-160 || true)"
  [ -z "$last" ] || echo "  $last"
}
dockerfile_run() {  # RUN <command>
  echo "+ RUN $1"
  replay "$1"
}
dockerfile_run_offline() {  # RUN <command> that needs the network: run <local equivalent> instead
  echo "+ RUN $1"
  echo "  (needs PyTorch's CPU index, unreachable here; replayed as: $2)"
  replay "$2"
}
started=$SECONDS
dockerfile_run 'python -m venv $VIRTUAL_ENV'
dockerfile_run_offline 'pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu' \
  'pip install torch==2.13.0'
dockerfile_run 'pip install -r requirements.txt'
echo "venv built in $((SECONDS - started)) s: $(python -c 'import torch; print("torch", torch.__version__)')"
[ "$(command -v python)" = "$VIRTUAL_ENV/bin/python" ] || fail "python is not the venv's"

step "start ENTRYPOINT + CMD with DATA_DIR=$DATA"
mkdir -p "$DATA"
PORT="$(python -c '
import socket
s = socket.socket()
try:
    s.bind(("0.0.0.0", 7860))   # the Space port when free here; another one on a busy machine
except OSError:
    s.bind(("0.0.0.0", 0))
print(s.getsockname()[1])')"
dockerfile_start() {  # ENTRYPOINT + CMD, in WORKDIR, in the background
  echo "+ $*"
  (cd "$APP" && DATA_DIR="$DATA" GRADIO_SERVER_PORT="$PORT" \
     EXPLORER_HUB_EXPERIMENT=nobody/not-there exec "$@") >"$LOG" 2>&1 &
  APP_PID=$!
}
dockerfile_start scripts/space_entrypoint.sh python app.py
URL="http://127.0.0.1:$PORT/"
for _ in $(seq 240); do
  kill -0 "$APP_PID" 2>/dev/null || fail "the app exited"
  python -c "import urllib.request as u; u.urlopen('$URL', timeout=2)" 2>/dev/null && break
  sleep 1
done
python -c "import urllib.request as u; u.urlopen('$URL', timeout=5)" || fail "no answer on $URL"
echo "serving on port $PORT, $((SECONDS - started)) s after the venv build began"

step "checks"
grep -E "^space_entrypoint:|EXPLORER_HUB_EXPERIMENT|Running on" "$LOG" | sed 's/^/  log: /'
grep -q "RUNS_DIR=$DATA/runs" "$LOG" || fail "RUNS_DIR is not DATA_DIR/runs"
grep -Eq "0\.0\.0\.0:$PORT" "$LOG" || fail "the app does not bind 0.0.0.0"
grep -q "EXPLORER_HUB_EXPERIMENT=nobody/not-there was not pulled" "$LOG" \
  || fail "no warning for the failed EXPLORER_HUB_EXPERIMENT pull"
[ -f "$DATA/runs/demo/swiglu-s0/config.json" ] || fail "runs/demo was not seeded into DATA_DIR/runs"
python - "$URL" <<'PY' || fail "gradio_client checks"
import sys
import urllib.request

from gradio_client import Client

url = sys.argv[1]
page = urllib.request.urlopen(url, timeout=10).read().decode()
assert "FFN explorer" in page, "page title missing"
print("page: serves the FFN explorer")
client = Client(url, verbose=False)
rows = client.predict("demo", "", api_name="/results")
print("results demo:", [(r["variant"], r["seeds"], r["val_loss"]) for r in rows])
assert {"swiglu", "dual"} <= {r["variant"] for r in rows}
curves = client.predict("demo", "val/loss", "step", 0.0, api_name="/curves")
print("curves demo:", {v: f"{len(c['x'])} points, n={max(c['n'])}" for v, c in curves.items()})
assert curves and all(len(c["x"]) for c in curves.values())
views = client.predict(["demo/swiglu-s0", "demo/dual-s0"], "The Union is strong.", api_name="/inspect")
print("inspect demo:", [(v["run"], len(v["tokens"]), round(v["mean_loss"], 3)) for v in views])
over_caps = {
    "steps=10000": ("smoke", "tiny", ["swiglu"], [0], 10000, 0.0, "builtin", []),
    "--set train.steps=10000": ("smoke", "tiny", ["swiglu"], [0], 0, 0.0, "builtin", ["train.steps=10000"]),
    "preset small": ("smoke", "small", ["swiglu"], [0], 10, 0.0, "builtin", []),
    "4 seeds": ("smoke", "micro", ["swiglu"], [0, 1, 2, 3], 10, 0.0, "builtin", []),
}
for what, args in over_caps.items():
    try:
        client.predict(*args, api_name="/launch")
    except Exception as error:  # gradio_client raises AppError with the server's message
        print(f"launch {what}: refused: {str(error).strip().splitlines()[0][:100]}")
    else:
        raise AssertionError(f"launch {what} was accepted in demo mode")
try:
    client.predict(["demo/swiglu-s0"], "x" * 2001, api_name="/inspect")
    raise AssertionError("inspect of 2001 characters was accepted in demo mode")
except Exception as error:
    if isinstance(error, AssertionError):
        raise
    print(f"inspect 2001 characters: refused: {str(error).strip().splitlines()[0][:100]}")
assert client.predict("smoke", api_name="/status") == [], "a refused launch queued something"
print("nothing was queued")
PY

step "entrypoint without persistent storage"
got="$(cd "$APP" && DATA_DIR="$WORK/no-data" scripts/space_entrypoint.sh \
       python -c 'import os; print(os.environ["RUNS_DIR"])' 2>/dev/null)"
[ "$got" = "$APP/runs" ] || fail "RUNS_DIR=$got, expected the image's $APP/runs"
echo "RUNS_DIR=$got (the image's runs)"

echo
echo "SMOKE OK ($((SECONDS)) s)"
