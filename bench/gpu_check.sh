#!/usr/bin/env bash
# GPU check of bioscan-clip (see bench/gpu_check.py): full-size bf16 training steps, embedding throughput of
# each full-size encoder, and exact search at the BIOSCAN-5M scale, within 7 minutes; prints one table.
# Fails loudly (exit 2 and a message on stderr) when no CUDA device is available; installs nothing.
#
#   bash bench/gpu_check.sh [--budget 420] [--batch 256] [--steps 5] [--scale 1]
#   PYTHON=/path/to/python bash bench/gpu_check.sh     # another interpreter than python3
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "gpu_check: FAILED: no Python interpreter '$python' (set PYTHON=...)" >&2
    exit 2
fi
export PYTHONUNBUFFERED=1
if command -v timeout >/dev/null 2>&1; then
    # the checks keep to their budget; this is the backstop (exit 124 when it fires)
    exec timeout --kill-after=15 450 "$python" "$here/gpu_check.py" "$@"
fi
exec "$python" "$here/gpu_check.py" "$@"
