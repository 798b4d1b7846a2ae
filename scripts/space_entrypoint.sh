#!/usr/bin/env bash
# Entrypoint of the Space image (see Dockerfile): pick the runs folder, then exec the command.
#
#   - DATA_DIR (default /data, where Spaces mount persistent storage) exists and is writable:
#     RUNS_DIR=$DATA_DIR/runs, seeded with the image's runs/demo the first time;
#   - otherwise the image's own runs/ (lost when the Space restarts).
# A RUNS_DIR already set is kept. EXPLORER_DEMO=1 (bounded launches) and GRADIO_SERVER_NAME=0.0.0.0
# are defaults that Space variables may override.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-/data}"

seed_demo() {  # $1: runs folder; copy under a temp name, then rename: never a half-copied demo
  local runs="$1" tmp
  [ -d "$APP_DIR/runs/demo" ] && [ ! -e "$runs/demo" ] || return 0
  rm -rf "$runs"/.demo.seeding-*
  tmp="$runs/.demo.seeding-$$"
  cp -R "$APP_DIR/runs/demo" "$tmp"
  mv -T "$tmp" "$runs/demo" || rm -rf "$tmp"
}

if [ -z "${RUNS_DIR:-}" ]; then
  if [ -d "$DATA_DIR" ] && [ -w "$DATA_DIR" ]; then
    export RUNS_DIR="$DATA_DIR/runs"
    mkdir -p "$RUNS_DIR"
    seed_demo "$RUNS_DIR"
  else
    export RUNS_DIR="$APP_DIR/runs"
  fi
fi

export EXPLORER_DEMO="${EXPLORER_DEMO:-1}"
export GRADIO_SERVER_NAME="${GRADIO_SERVER_NAME:-0.0.0.0}"
export GRADIO_SERVER_PORT="${GRADIO_SERVER_PORT:-7860}"
echo "space_entrypoint: RUNS_DIR=$RUNS_DIR EXPLORER_DEMO=$EXPLORER_DEMO" \
     "listening on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT" >&2
cd "$APP_DIR"
exec "$@"
