#!/usr/bin/env bash
# Download wheels for the lent GPU machine (Python 3.12, x86-64, nothing downloadable there) into DEST.
#   bash bench/fetch_device_wheels.sh DEST NAME==VERSION ...
# Used by bench/gpu_check.sh and bench/gpu_study.sh; no dependencies are followed (--no-deps): name each one.
set -euo pipefail
dest="$1"; shift
mkdir -p "$dest"
for w in "$@"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dest" "$w"
done
du -sh "$dest"
