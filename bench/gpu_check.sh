#!/usr/bin/env bash
# The GPU check, as one command for a lent GPU machine (nothing downloadable there; see bench/gpu_check.py).
#
# Here, once:   bash bench/gpu_check.sh --fetch-wheels     # the packages the device image lacks, into .whl/ (~58 MB)
# There:        bash bench/gpu_check.sh                    # installs .whl/ into /tmp/site, runs the checks
#               (device run: carry [".whl"], OUT set by the tool; the JSON lands in $OUT/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."

# What the device image lacks or has at another version than trl_lab pins (its transformers is 5.17; we need 5.20+).
WHEELS=(trl==1.16.0 transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
        bitsandbytes==0.50.2 vaderSentiment==3.3.2)

if [ "${1:-}" = "--fetch-wheels" ]; then
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
  bash bench/fetch_device_wheels.sh .whl "${WHEELS[@]}"
  exit 0
fi

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
out="${OUT:-docs/results/gpu_check}"
mkdir -p "$out"
PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$out/gpu_check.json" "$@"
