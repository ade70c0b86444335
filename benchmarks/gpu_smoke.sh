#!/usr/bin/env bash
# The first run on a GPU machine, as is: every CUDA path once (both training stages on one GPU and under
# torchrun on all of them, bf16 and fp32, a resume, stylize, evaluate), figures into one JSON file.
#   benchmarks/gpu_smoke.sh                         # GPU: under 10 minutes; writes gpu_smoke.json
#   benchmarks/gpu_smoke.sh --device cpu --out x.json   # the dry run CI runs (about a minute)
# Options are benchmarks/gpu_smoke.py's (--preset, --steps, --keep DIR). Nothing needs the network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
[ -x "$here/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && python="$here/../.venv/bin/python"
exec "$python" "$here/gpu_smoke.py" "$@"
