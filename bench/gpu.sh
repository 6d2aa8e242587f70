#!/usr/bin/env bash
# The benchmark on a machine with an NVIDIA GPU: CUDA execution provider, fp16 among the variants.
#
#   bench/gpu.sh [python -m bench flags, e.g. --quick or --rounds 3]
#
# Works without network: when a `.whl/` folder sits at the repository root, onnxruntime-gpu (and whatever
# wheels it needs, e.g. the nvidia-* CUDA libraries) is installed from there only. The CPU build of onnxruntime
# is removed first, because both provide the same `onnxruntime` module. Not run in CI.
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

if compgen -G ".whl/onnxruntime_gpu-*.whl" > /dev/null; then
    echo "installing onnxruntime-gpu from .whl/ (no index)"
    "$PY" -m pip uninstall -y -q onnxruntime || true
    "$PY" -m pip install -q --no-index --find-links .whl onnxruntime-gpu
fi

if ! "$PY" -c 'import onnxruntime as ort, sys; sys.exit("CUDAExecutionProvider" not in ort.get_available_providers())'; then
    echo "error: ONNX Runtime has no CUDA execution provider here." >&2
    echo "       Put the onnxruntime-gpu wheel (and its nvidia-* dependencies) in .whl/, or pip install onnxruntime-gpu." >&2
    exit 2
fi
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

# fp16 is required: a model folder built for the CPU run (fp32, int8) is exported again with it.
exec "$PY" -m bench --provider cuda --export-dtype fp32 --export-dtype fp16 --export-dtype int8 "$@"
